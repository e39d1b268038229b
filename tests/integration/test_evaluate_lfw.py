"""``lfr eval`` on lfw-dev with the default models, checked against plain numpy."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lfr
from lfr.evaluation import EvalReport, analyse, embeddings, evaluate
from lfr.evaluation.dataset import EmbeddingCache, fingerprint, pipeline_id, scan


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-cache")


@pytest.fixture(scope="module")
def report(
    lfw_dir: Path, yunet_path: Path, embedder_path: Path, cache_dir: Path
) -> EvalReport:
    """The first run: embeds every photo (about 20 s to 2 min) and fills the cache."""
    return evaluate(lfw_dir, cache=cache_dir, progress=False)


def test_numbers_match_numpy(
    report: EvalReport, lfw_dir: Path, cache_dir: Path
) -> None:
    names, photos = scan(lfw_dir)
    embedder = lfr.FaceEmbedder()
    pipeline = pipeline_id(lfr.FaceDetector(), embedder, lfr.QualityGate())
    loaded = EmbeddingCache(cache_dir).load(
        pipeline, fingerprint(lfw_dir, photos), len(photos), embedder.dim
    )
    assert loaded is not None
    vectors, present = loaded
    labels = np.array([p.identity for p in photos])
    first = np.array(
        [i == 0 or labels[i - 1] != labels[i] for i in range(len(labels))]
    ) & (labels >= 0)
    gallery = first & present
    g_ids = labels[gallery]
    sims = vectors.astype(np.float64) @ vectors[gallery].astype(np.float64).T
    sims[~present] = -np.inf
    top = g_ids[sims.argmax(axis=1)]
    best = sims.max(axis=1)
    mated = (labels >= 0) & ~first
    hit = (top == labels)[mated]
    nonmated = np.sort(best[labels < 0])[::-1]
    assert report.mated == mated.sum()
    assert report.nonmated == (labels < 0).sum()
    assert report.identities == len(set(g_ids.tolist()))
    assert report.rank1 == pytest.approx(hit.mean(), abs=1e-12)
    for fpir in (0.01, 0.001):
        t = nonmated[math.floor(fpir * nonmated.size)]
        assert report.threshold_observed[fpir] == pytest.approx(t, abs=1e-5)
        tpir = np.mean(hit & (best[mated] > t + 1e-5))
        assert report.tpir[fpir] == pytest.approx(tpir, abs=2 / int(mated.sum()))
    assert report.rank1 > 0.95
    assert report.tpir[0.01] > 0.75
    assert len(names) == 208


def test_shuffled_labels_give_chance(
    lfw_dir: Path, report: EvalReport, cache_dir: Path
) -> None:
    data, cached = embeddings(lfw_dir, cache=cache_dir, progress=False)
    assert cached
    control = analyse(data, shuffle_seed=1)
    assert control.rank1 < 0.05


class _NoEmbedder(lfr.FaceEmbedder):
    def embed(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the cache should have been used")


def test_second_run_uses_the_cache(
    lfw_dir: Path, report: EvalReport, cache_dir: Path, tmp_path: Path
) -> None:
    again = evaluate(
        lfw_dir,
        embedder=_NoEmbedder(),
        cache=cache_dir,
        threshold=0.95,
        watchlist_size=10_000,
        progress=False,
        out=tmp_path,
    )
    assert again.cached
    assert again.rank1 == report.rank1
    assert again.threshold == 0.95
    assert again.watchlist_size == 10_000
    key = cache_dir / EmbeddingCache.KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    # The cache is encrypted: no embedding appears in plain text.
    blob = b"".join(p.read_bytes() for p in cache_dir.glob("*.lfrc"))
    data, _ = embeddings(lfw_dir, cache=cache_dir, progress=False)
    assert data.vectors[0].tobytes()[:16] not in blob


def test_cli_writes_the_report(
    lfw_dir: Path, report: EvalReport, cache_dir: Path, tmp_path: Path
) -> None:
    groups = tmp_path / "groups.csv"
    names, _ = scan(lfw_dir)
    groups.write_text(
        "identity,group\n"
        + "".join(f"{n},{'AB'[i % 2]}\n" for i, n in enumerate(names))
    )
    out = tmp_path / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lfr",
            "eval",
            str(lfw_dir),
            "--out",
            str(out),
            "--cache",
            str(cache_dir),
            "--groups",
            str(groups),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "report.json").read_text())
    for key in ("rank1", "tpir", "threshold_at_fpir", "mated", "nonmated", "groups"):
        assert key in data
    assert data["rank1"] == report.rank1
    assert set(data["tpir"]) == {"0.01", "0.001"}
    assert [g["group"] for g in data["groups"]] == ["A", "B"]
    for name in ("det.png", "scores.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "TPIR" in (out / "report.md").read_text()
