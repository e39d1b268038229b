"""Metric code of ``lfr eval`` on hand-made score sets with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lfr.evaluation import analyse
from lfr.evaluation.dataset import Embedded, Photo
from lfr.evaluation.error_rates import (
    comparison_fmr_for,
    det_curve,
    extrapolated_fpir,
    sampled_best_scores,
    threshold_for_size,
    wilson,
)


def test_det_curve_known_points() -> None:
    hit = np.array([True, True, True, False])
    mated = np.array([0.9, 0.8, 0.6, 0.95])
    nonmated = np.array([0.7, 0.5, -np.inf, 0.85])
    t, fnir, fpir = det_curve(hit, mated, nonmated)
    assert len(t) == len(fnir) == len(fpir)  # zip(strict=True) needs Python 3.10
    got = dict(zip(t.tolist(), zip(fnir.tolist(), fpir.tolist())))
    # At 0.7: hits 0.9, 0.8 -> FNIR 2/4; non-mated 0.7, 0.85 alert -> FPIR 2/4.
    assert got[0.7] == (0.5, 0.5)
    assert got[0.9] == (0.75, 0.0)
    assert got[0.5] == (0.25, 0.75)
    assert np.all(np.diff(fnir) >= 0)
    assert np.all(np.diff(fpir) <= 0)


def test_wilson_known_values() -> None:
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 100)
    assert lo == 0.0
    assert hi == pytest.approx(0.0370, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_extrapolation_formula() -> None:
    assert extrapolated_fpir(0.001, 1) == pytest.approx(0.001)
    assert extrapolated_fpir(0.001, 1000) == pytest.approx(1 - 0.999**1000)
    fmr = comparison_fmr_for(0.01, 500)
    assert extrapolated_fpir(fmr, 500) == pytest.approx(0.01)
    assert fmr == pytest.approx(1 - 0.99 ** (1 / 500))


def test_threshold_for_size() -> None:
    scores = np.arange(1, 100_001) / 100_000  # 100,000 comparisons
    t, ok = threshold_for_size(scores, 0.01, 10)
    allowed = math.floor(comparison_fmr_for(0.01, 10) * scores.size)  # 100
    assert ok
    assert np.count_nonzero(scores >= t) == allowed
    _, ok = threshold_for_size(scores, 0.01, 10**6)
    assert not ok


def test_sampled_best_scores() -> None:
    comparisons = np.array([[0.1, 0.2, 0.9], [0.3, 0.1, 0.2]])
    assert sampled_best_scores(comparisons, 3).tolist() == [0.9, 0.3]
    sample = sampled_best_scores(comparisons, 1)
    assert len(sample) == len(comparisons)
    assert all(s in row for s, row in zip(sample, comparisons))


def _embedded() -> Embedded:
    """Three identities of two photos, two unknowns, in 3-D."""
    e = np.eye(3, dtype=np.float32)
    near = np.array([0.8, 0.6, 0.0], np.float32)  # cos 0.8 to identity 0
    vectors = np.vstack([e[0], near, e[1], e[1], e[2], e[0] * 0, [0.6, 0, 0.8], e[2]])
    present = np.ones(len(vectors), bool)
    present[5] = False  # identity 2's probe has no face
    photos = [Photo(f"identities/{k}/{i}.jpg", k) for k in range(3) for i in range(2)]
    photos += [Photo("unknowns/a.jpg", -1), Photo("unknowns/b.jpg", -1)]
    return Embedded(
        ("a", "b", "c"), tuple(photos), vectors.astype(np.float32), present, "m|d|g"
    )


def test_analyse_known_answers() -> None:
    r = analyse(_embedded(), groups={"a": "x", "b": "x", "c": "y"})
    assert (r.mated, r.nonmated, r.identities) == (3, 2, 3)
    assert r.rank1 == pytest.approx(2 / 3)  # the probe without a face misses
    # Non-mated best scores 0.8 and 1.0: at FPIR 1% (allowed 0) T is above 1.0.
    assert r.threshold_observed[0.01] > 1.0
    assert r.tpir[0.01] == 0.0
    assert r.no_face == {"enrolment": 0, "mated": 1, "nonmated": 0}
    assert [g["mated"] for g in r.groups] == [2, 1]
    assert r.groups[1]["fnir"] == 1.0


def test_analyse_operating_threshold_and_sizes() -> None:
    data = _embedded()
    r = analyse(data, threshold=0.9)
    assert r.fnir_at_threshold == pytest.approx(2 / 3)  # 0.8 < 0.9, and no face
    assert r.fpir_at_threshold == pytest.approx(0.5)  # unknown b scores 1.0
    big = analyse(data, threshold=0.9, watchlist_size=30)
    # FMR: 1 of 6 comparisons reaches 0.9.
    assert big.fpir_at_threshold_for_size == pytest.approx(1 - (5 / 6) ** 30)
    assert "independent" in big.size_method
    small = analyse(data, watchlist_size=1)
    assert small.watchlist_size == 1
    assert "sampled" in small.size_method
    json_keys = set(r.to_dict())
    assert {"rank1", "tpir", "threshold_at_fpir", "mated", "nonmated"} <= json_keys
