"""Open-set metrics on hand-made score sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lfr.evaluation.metrics import open_set_metrics, threshold_at_fpir


def test_known_answers() -> None:
    # 10 non-mated searches: scores 0.0 .. 0.9. FPIR 10% allows one false alert.
    nonmated = np.arange(10) / 10
    threshold = threshold_at_fpir(nonmated, 0.1)
    assert 0.8 < threshold <= 0.9 + 1e-12
    assert (nonmated >= threshold).sum() == 1
    # 4 mated searches: right at 0.95, right at 0.85, wrong at 0.99, no face.
    result = open_set_metrics(
        mated_top_ids=[1, 2, 7, -1],
        mated_top_scores=[0.95, 0.85, 0.99, -np.inf],
        mated_true_ids=[1, 2, 3, 4],
        nonmated_top_scores=nonmated,
        fpirs=(0.05, 0.1),
    )
    assert result.rank1 == 0.5
    assert result.tpir[0.05] == 0.25  # no false alert allowed: only 0.95 clears ~0.9
    assert result.tpir[0.1] == 0.5  # one allowed: the threshold drops to ~0.8
    assert (result.mated, result.nonmated) == (4, 10)


@given(
    scores=st.lists(st.floats(-1, 1), min_size=1, max_size=200),
    fpir=st.floats(0.001, 0.999),
)
def test_threshold_never_exceeds_the_fpir(scores: list[float], fpir: float) -> None:
    t = threshold_at_fpir(scores, fpir)
    alerts = sum(s >= t for s in scores)
    assert alerts <= int(fpir * len(scores))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no non-mated"):
        threshold_at_fpir([], 0.01)
    with pytest.raises(ValueError, match="fpir"):
        threshold_at_fpir([0.5], 1.5)
    with pytest.raises(ValueError, match="equal length"):
        open_set_metrics([1], [0.5, 0.6], [1], [0.1])
