"""The evaluation run: embed a dataset as live operation would, then analyse it.

Runs the same detector, quality gate, alignment, embedder and :class:`lfr.Matcher`
as live operation over a dataset laid out as ``identities/<name>/*.jpg`` (plus
optional ``unknowns/*.jpg``), and reports rank-1, TPIR at fixed FPIR, FNIR/FPIR
against threshold (DET), the threshold that meets a target FPIR for a given
watchlist size, and per-group FNIR/FPIR with Wilson intervals. The protocol is
:data:`PROTOCOL`; docs/accuracy.md explains it.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lfr.detect import FaceDetector
from lfr.embed import FaceEmbedder
from lfr.evaluation.dataset import (
    Embedded,
    EmbeddingCache,
    embed_dataset,
    fingerprint,
    pipeline_id,
    scan,
    stderr_progress,
)
from lfr.evaluation.error_rates import (
    det_curve,
    extrapolated_fpir,
    rate_at,
    sampled_best_scores,
    threshold_for_size,
    wilson,
)
from lfr.evaluation.metrics import open_set_metrics, threshold_at_fpir
from lfr.matcher import Matcher
from lfr.quality import QualityGate

__all__ = ["PROTOCOL", "EvalReport", "analyse", "embeddings", "evaluate", "read_groups"]

F64 = npt.NDArray[np.float64]

#: FPIR operating points, each reported where the non-mated searches allow it.
FPIRS = (0.01, 0.001, 0.0001)

PROTOCOL = """\
- Layout: `identities/<name>/*.jpg` (one folder per person) and optionally
  `unknowns/*.jpg` (people not on the watchlist, seen once).
- In every photo the labelled face is the detected face whose box centre is nearest
  the image centre. It goes through the live pipeline: YuNet detector, quality gate,
  alignment and embedder. A photo without a usable face is a miss if mated and no
  alert if non-mated.
- Watchlist: the first K photos (by file name) of each identity (`--enrol K`).
  Mated searches: every other photo of the identities. Non-mated searches: the
  unknowns; without unknowns, every mated photo searched against the watchlist
  without its own identity.
- Score: cosine similarity of L2-normalised embeddings (`lfr.Matcher`, exact); an
  identity's score is its best enrolled photo's.
- Rank-1: the best identity is the right one. FPIR(T): share of non-mated searches
  whose best score reaches T. FNIR(T): share of mated searches where the right
  identity is not first with a score of at least T. TPIR at FPIR x = 1 - FNIR at the
  threshold set on the non-mated scores so that at most x of them alert.
- Watchlist size M (`--watchlist-size`): with N identities in the data, M < N
  samples M identities at random for each non-mated search; M > N extrapolates
  FPIR(M, T) = 1 - (1 - FMR(T))^M from the per-comparison false-match rate FMR of
  every non-mated probe against every identity, assuming independent comparisons.
- Groups (`--groups CSV` of identity,group): per group, FNIR over its mated searches
  and FPIR over its photos searched against the watchlist without their own
  identity, at the operating threshold, with 95% Wilson intervals; groups whose
  intervals do not overlap are flagged."""


@dataclass(frozen=True)
class EvalReport:
    """Every number of one evaluation (see :data:`PROTOCOL`).

    ``to_json`` gives all fields except the raw score arrays (``arrays``) used for
    plots.
    """

    dataset: str
    pipeline: str
    model_id: str
    enrol: int
    identities: int
    watchlist_size: int
    size_method: str
    mated: int
    nonmated: int
    nonmated_source: str
    no_face: dict[str, int]
    rank1: float
    tpir: dict[float, float]
    threshold_observed: dict[float, float]
    threshold_at_fpir: dict[float, float]
    threshold_supported: dict[float, bool]
    threshold: float
    fnir_at_threshold: float
    fpir_at_threshold: float
    fpir_at_threshold_for_size: float
    det: dict[str, list[float]]
    groups: list[dict[str, Any]]
    group_flags: list[str]
    cached: bool
    protocol: str = PROTOCOL
    arrays: dict[str, F64] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: FPIR keys become strings (``"0.01"``)."""
        out = {k: v for k, v in asdict(self).items() if k != "arrays"}
        for name in ("tpir", "threshold_observed", "threshold_at_fpir"):
            out[name] = {repr(k): v for k, v in out[name].items()}
        out["threshold_supported"] = {
            repr(k): v for k, v in self.threshold_supported.items()
        }
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=float)


def read_groups(path: str | os.PathLike[str]) -> dict[str, str]:
    """``identity,group`` rows (a header row naming ``identity`` is skipped)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() == "identity":
        rows = rows[1:]
    return {r[0].strip(): r[1].strip() for r in rows if len(r) >= 2}


def embeddings(
    dataset: str | os.PathLike[str],
    *,
    detector: FaceDetector | None = None,
    embedder: FaceEmbedder | None = None,
    gate: QualityGate | Literal[False] | None = None,
    cache: bool | str | os.PathLike[str] = True,
    progress: bool = True,
) -> tuple[Embedded, bool]:
    """Every photo's embedding, from the cache when it has them.

    Args:
        dataset: Folder with ``identities/`` (and optionally ``unknowns/``).
        detector: Default ``FaceDetector()``.
        embedder: Default ``FaceEmbedder()``.
        gate: Quality gate (default ``QualityGate()``, as live; False: none).
        cache: True: the default cache directory; a path: that directory; False:
            no cache.
        progress: Show a counter on stderr while embedding.

    Returns:
        ``(embedded, cached)``.
    """
    detector = detector or FaceDetector()
    embedder = embedder or FaceEmbedder()
    gate_ = None if gate is False else (gate or QualityGate())
    names, photos = scan(dataset)
    pipeline = pipeline_id(detector, embedder, gate_)
    store = None
    if cache is not False:
        store = EmbeddingCache(None if cache is True else cache)
        prints = fingerprint(dataset, photos)
        hit = store.load(pipeline, prints, len(photos), embedder.dim)
        if hit is not None:
            return Embedded(names, photos, hit[0], hit[1], pipeline), True
    show = stderr_progress("lfr eval: embedding") if progress else None
    try:
        vectors, present = embed_dataset(
            dataset, photos, detector, embedder, gate_, show
        )
    finally:
        if show is not None:
            show.close()
    if store is not None:
        store.store(pipeline, prints, vectors, present)
    return Embedded(names, photos, vectors, present, pipeline), False


def evaluate(
    dataset: str | os.PathLike[str],
    *,
    enrol: int = 1,
    watchlist_size: int | None = None,
    groups_csv: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    out: str | os.PathLike[str] | None = None,
    detector: FaceDetector | None = None,
    embedder: FaceEmbedder | None = None,
    gate: QualityGate | Literal[False] | None = None,
    cache: bool | str | os.PathLike[str] = True,
    progress: bool = True,
) -> EvalReport:
    """Evaluates the live pipeline on ``dataset`` (see :data:`PROTOCOL`).

    Args:
        dataset: Folder with ``identities/`` (and optionally ``unknowns/``).
        enrol: Photos per identity on the watchlist.
        watchlist_size: Size to compute thresholds for (default: the identities
            in the data).
        groups_csv: ``identity,group`` CSV for per-group FNIR/FPIR.
        threshold: Operating threshold for FNIR/FPIR and groups (default: the
            threshold at FPIR 1% for ``watchlist_size``).
        out: Folder for ``report.json``, ``det.png``, ``scores.png``, ``report.md``.
        detector: Default ``FaceDetector()``.
        embedder: Default ``FaceEmbedder()``.
        gate: Quality gate (default ``QualityGate()``, as live; False: none).
        cache: Encrypted embedding cache: True (default directory), a directory,
            or False.
        progress: Show a counter on stderr while embedding.

    Raises:
        MissingExtraError: ``out`` is given and matplotlib, which draws the
            plots, is not installed (``pip install 'lfr[eval]'``); raised before
            any photo is read.
    """
    if out is not None:
        from lfr.evaluation.outputs import pyplot

        pyplot()  # fails now, not after the embedding, without lfr[eval]
    data, cached = embeddings(
        dataset,
        detector=detector,
        embedder=embedder,
        gate=gate,
        cache=cache,
        progress=progress,
    )
    report = analyse(
        data,
        enrol=enrol,
        watchlist_size=watchlist_size,
        groups=read_groups(groups_csv) if groups_csv else None,
        threshold=threshold,
        dataset=str(dataset),
        cached=cached,
    )
    if out is not None:
        from lfr.evaluation.outputs import write_outputs

        write_outputs(report, Path(out))
    return report


def _identity_scores(
    data: Embedded, labels: npt.NDArray[np.int64], enrolled: npt.NDArray[np.bool_]
) -> tuple[F64, npt.NDArray[np.int64]]:
    """Each photo's best score per watchlist identity (``-inf`` without a face)."""
    gallery = np.flatnonzero(enrolled & data.present)
    owners = labels[gallery]
    watch = np.unique(owners)
    matcher = Matcher(data.vectors.shape[1])
    matcher.add(np.arange(gallery.size), np.ascontiguousarray(data.vectors[gallery]))
    scores = np.full((len(data.photos), watch.size), -np.inf)
    rows = np.flatnonzero(data.present)
    if rows.size:
        ids, sims = matcher.search(
            np.ascontiguousarray(data.vectors[rows]), k=gallery.size
        )
        column = np.searchsorted(watch, owners[ids])
        block = np.full((rows.size, watch.size), -np.inf)
        np.maximum.at(block, (np.arange(rows.size)[:, None], column), sims)
        scores[rows] = block
    return scores, watch


def analyse(
    data: Embedded,
    *,
    enrol: int = 1,
    watchlist_size: int | None = None,
    groups: dict[str, str] | None = None,
    threshold: float | None = None,
    shuffle_seed: int | None = None,
    dataset: str = "",
    cached: bool = False,
) -> EvalReport:
    """The metrics of :data:`PROTOCOL` from embeddings (no images read).

    Args:
        data: From :func:`embeddings`.
        enrol: Photos per identity on the watchlist.
        watchlist_size: Size to compute thresholds for (default: the data's).
        groups: Identity name to group.
        threshold: Operating threshold (default: FPIR 1% for the size).
        shuffle_seed: Shuffle the identity labels first (a control: rank-1 should
            fall to chance).
        dataset: Shown in the report.
        cached: Whether the embeddings came from the cache (shown).
    """
    if enrol < 1:
        raise ValueError(f"enrol must be at least 1, got {enrol}")
    labels = np.array([p.identity for p in data.photos], np.int64)
    known = labels >= 0
    if shuffle_seed is not None:
        labels[known] = np.random.default_rng(shuffle_seed).permutation(labels[known])
    rank = np.zeros(labels.size, np.int64)
    for k in np.unique(labels[known]):
        rank[labels == k] = np.arange(np.count_nonzero(labels == k))
    enrolled = known & (rank < enrol)
    if not np.any(enrolled & data.present):
        raise ValueError("no enrolment photo has a usable face")
    scores, watch = _identity_scores(data, labels, enrolled)
    n = int(watch.size)
    size = int(watchlist_size or n)
    if size < 1:
        raise ValueError(f"watchlist_size must be at least 1, got {size}")

    mated = np.flatnonzero(known & ~enrolled)
    if mated.size == 0:
        raise ValueError("no mated searches: every identity needs more than K photos")
    ms = scores[mated]
    best = ms.argmax(axis=1)
    top_scores = ms[np.arange(mated.size), best]
    top_ids = np.where(np.isfinite(top_scores), watch[best], -1)
    own_col = np.searchsorted(watch, labels[mated]).clip(0, n - 1)
    on_list = watch[own_col] == labels[mated]
    # Other identities only: leave-own-identity-out non-mated searches.
    others = ms.copy()
    others[np.arange(mated.size)[on_list], own_col[on_list]] = -np.inf

    unknown = np.flatnonzero(~known)
    if unknown.size:
        comparisons, source = scores[unknown], "unknowns"
        valid = np.ones(comparisons.shape, bool)
    else:
        comparisons, source = others, "other identities (no unknowns/)"
        valid = np.ones(comparisons.shape, bool)
        valid[np.arange(mated.size)[on_list], own_col[on_list]] = False
    flat = comparisons[valid]  # every non-mated comparison: probe x identity
    nonmated = comparisons.max(axis=1)
    fpirs = [f for f in FPIRS if f * nonmated.size >= 1] or [FPIRS[0]]
    result = open_set_metrics(top_ids, top_scores, labels[mated], nonmated, fpirs)
    hit = top_ids == labels[mated]

    supported = dict.fromkeys(fpirs, True)
    if size == n:
        method = "observed: the identities in the data"
        sized = dict(result.thresholds)
    elif size < n:
        method = f"sampled: {size} of {n} identities at random per non-mated search"
        sample = sampled_best_scores(comparisons, size)
        sized = {f: threshold_at_fpir(sample, f) for f in fpirs}
    else:
        method = (
            f"extrapolated from {n} identities: FPIR = 1 - (1 - FMR)^{size}, "
            "assuming independent comparisons"
        )
        sized, supported = {}, {}
        for f in fpirs:
            sized[f], supported[f] = threshold_for_size(flat, f, size)
    operating = float(threshold if threshold is not None else sized[fpirs[0]])
    if size > n:
        fpir_for_size = extrapolated_fpir(rate_at(flat, operating), size)
    else:
        sample = sampled_best_scores(comparisons, size) if size < n else nonmated
        fpir_for_size = rate_at(sample, operating)

    thresholds, fnir, fpir = det_curve(hit, top_scores, nonmated)
    step = max(1, thresholds.size // 400)
    det = {
        "threshold": thresholds[::step].tolist(),
        "fnir": fnir[::step].tolist(),
        "fpir": fpir[::step].tolist(),
    }
    genuine = ms[np.arange(mated.size)[on_list], own_col[on_list]]
    group_rows, flags = _groups(
        groups or {},
        data,
        labels[mated],
        hit & (top_scores >= operating),
        others.max(axis=1),
        operating,
    )
    return EvalReport(
        dataset=dataset,
        pipeline=data.pipeline,
        model_id=data.pipeline.split("|")[0],
        enrol=enrol,
        identities=n,
        watchlist_size=size,
        size_method=method,
        mated=result.mated,
        nonmated=result.nonmated,
        nonmated_source=source,
        no_face={
            "enrolment": int(np.count_nonzero(enrolled & ~data.present)),
            "mated": int(np.count_nonzero(~data.present[mated])),
            "nonmated": int(np.count_nonzero(np.isneginf(nonmated))),
        },
        rank1=result.rank1,
        tpir=result.tpir,
        threshold_observed=result.thresholds,
        threshold_at_fpir=sized,
        threshold_supported=supported,
        threshold=operating,
        fnir_at_threshold=1.0 - float(np.mean(hit & (top_scores >= operating))),
        fpir_at_threshold=rate_at(nonmated, operating),
        fpir_at_threshold_for_size=fpir_for_size,
        det=det,
        groups=group_rows,
        group_flags=flags,
        cached=cached,
        arrays={
            "genuine": genuine[np.isfinite(genuine)],
            "nonmated": nonmated[np.isfinite(nonmated)],
            "det_fnir": fnir,
            "det_fpir": fpir,
        },
    )


def _groups(
    groups: dict[str, str],
    data: Embedded,
    mated_labels: npt.NDArray[np.int64],
    accepted: npt.NDArray[np.bool_],
    others_best: F64,
    threshold: float,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-group FNIR and FPIR with Wilson intervals, and flagged differences."""
    if not groups:
        return [], []
    of_label = np.array(
        [groups.get(data.identities[k], "") for k in mated_labels], dtype=object
    )
    rows: list[dict[str, Any]] = []
    for g in sorted({v for v in groups.values() if v}):
        mine = of_label == g
        n = int(mine.sum())
        misses = int(np.count_nonzero(~accepted[mine]))
        alerts = int(np.count_nonzero(others_best[mine] >= threshold))
        rows.append(
            {
                "group": g,
                "identities": len(set(mated_labels[mine].tolist())),
                "mated": n,
                "fnir": misses / n if n else None,
                "fnir_ci": list(wilson(misses, n)),
                "nonmated": n,
                "fpir": alerts / n if n else None,
                "fpir_ci": list(wilson(alerts, n)),
            }
        )
    flags = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            for metric in ("fnir", "fpir"):
                alo, ahi = a[f"{metric}_ci"]
                blo, bhi = b[f"{metric}_ci"]
                if a["mated"] and b["mated"] and (ahi < blo or bhi < alo):
                    flags.append(
                        f"{metric.upper()} differs significantly between "
                        f"{a['group']} ({a[metric]:.4f}) and {b['group']} "
                        f"({b[metric]:.4f}): 95% Wilson intervals do not overlap"
                    )
    return rows, flags
