"""Metric helpers of ``lfr eval``: DET curves, Wilson intervals, watchlist size.

Pure numpy on score arrays; :mod:`lfr.evaluation.metrics` holds rank-1, TPIR and
:func:`~lfr.evaluation.metrics.threshold_at_fpir`. Terms as in ISO/IEC 19795-1 and
NIST FRTE:

- FNIR(T): share of mated searches whose right identity is not returned first with
  a score of at least ``T`` (1 - TPIR);
- FPIR(T): share of non-mated searches whose best score is at least ``T``;
- FMR(T): share of single non-mated *comparisons* (a probe against one watchlist
  identity) scoring at least ``T``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from lfr.evaluation.metrics import threshold_at_fpir

__all__ = [
    "comparison_fmr_for",
    "det_curve",
    "extrapolated_fpir",
    "rate_at",
    "sampled_best_scores",
    "threshold_for_size",
    "wilson",
]

F64 = npt.NDArray[np.float64]


def rate_at(scores: npt.ArrayLike, threshold: float) -> float:
    """Share of ``scores`` at least ``threshold`` (0 when there are none)."""
    arr = np.asarray(scores, dtype=np.float64)
    return float(np.mean(arr >= threshold)) if arr.size else 0.0


def det_curve(
    mated_hit: npt.ArrayLike,
    mated_scores: npt.ArrayLike,
    nonmated_scores: npt.ArrayLike,
) -> tuple[F64, F64, F64]:
    """FNIR and FPIR at every distinct finite score.

    Args:
        mated_hit: Whether each mated search returned the right identity first.
        mated_scores: Its best score (``-inf`` where no face was found).
        nonmated_scores: Best score of each non-mated search.

    Returns:
        ``(thresholds, fnir, fpir)``, thresholds ascending (FNIR rises, FPIR falls).
    """
    hit = np.asarray(mated_hit, dtype=bool)
    mated = np.asarray(mated_scores, dtype=np.float64)
    nonmated = np.asarray(nonmated_scores, dtype=np.float64)
    found = np.sort(mated[hit & np.isfinite(mated)])
    alerts = np.sort(nonmated[np.isfinite(nonmated)])
    thresholds = np.unique(np.concatenate([found, alerts]))
    # Searches at or above t = total - those strictly below t.
    hits_at = found.size - np.searchsorted(found, thresholds, side="left")
    alerts_at = alerts.size - np.searchsorted(alerts, thresholds, side="left")
    fnir = 1.0 - hits_at / max(mated.size, 1)
    fpir = alerts_at / max(nonmated.size, 1)
    return thresholds, fnir.astype(np.float64), fpir.astype(np.float64)


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default).

    Returns ``(0.0, 1.0)`` when there are no trials.
    """
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def extrapolated_fpir(fmr: float, size: int) -> float:
    """FPIR of a watchlist of ``size`` identities from the per-comparison FMR.

    ``1 - (1 - FMR)^size``: a non-mated search alerts if any of ``size``
    comparisons reaches the threshold, *assuming the comparisons are independent*.
    They are not quite (one probe's scores against many identities are
    correlated: an unusual face scores high against everyone), so this tends to
    overstate FPIR, erring on the side of fewer false alerts.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    return float(-math.expm1(size * math.log1p(-fmr))) if fmr < 1 else 1.0


def comparison_fmr_for(fpir: float, size: int) -> float:
    """The per-comparison FMR at which :func:`extrapolated_fpir` equals ``fpir``."""
    if not 0 < fpir < 1 or size < 1:
        raise ValueError("need 0 < fpir < 1 and size >= 1")
    return float(-math.expm1(math.log1p(-fpir) / size))


def threshold_for_size(
    comparison_scores: npt.ArrayLike, fpir: float, size: int
) -> tuple[float, bool]:
    """Threshold whose extrapolated FPIR for ``size`` identities is at most ``fpir``.

    Args:
        comparison_scores: Every non-mated comparison score (probe x identity).
        fpir: Target FPIR for the whole watchlist.
        size: Watchlist size.

    Returns:
        ``(threshold, supported)``: ``supported`` is False where the target FMR
        asks for finer resolution than the comparisons give (fewer than one
        comparison may pass), so the threshold is only an upper bound.
    """
    scores = np.asarray(comparison_scores, dtype=np.float64).ravel()
    fmr = comparison_fmr_for(fpir, size)
    return threshold_at_fpir(scores, fmr), fmr * scores.size >= 1


def sampled_best_scores(comparisons: npt.ArrayLike, size: int, seed: int = 0) -> F64:
    """Best score of each non-mated probe against a random ``size`` identities.

    Args:
        comparisons: ``(probes, identities)`` non-mated comparison scores.
        size: Identities per simulated watchlist (at most the number of columns).
        seed: Random seed (each probe draws its own subset).
    """
    scores = np.asarray(comparisons, dtype=np.float64)
    if scores.ndim != 2 or not 1 <= size <= scores.shape[1]:
        raise ValueError("need a 2-D score matrix and 1 <= size <= its columns")
    if size == scores.shape[1]:
        return np.asarray(scores.max(axis=1), np.float64)
    rng = np.random.default_rng(seed)
    pick = np.argsort(rng.random(scores.shape), axis=1)[:, :size]
    return np.asarray(np.take_along_axis(scores, pick, axis=1).max(axis=1), np.float64)
