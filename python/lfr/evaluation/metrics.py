"""Open-set 1:N identification metrics (NIST FRVT style) for a watchlist.

A *mated* search is a probe of someone on the watchlist; a *non-mated* search is a
probe of someone who is not. At a threshold ``T``:

- FPIR(T): the fraction of non-mated searches whose best score is at least ``T``
  (false alerts on passers-by);
- TPIR(T): the fraction of mated searches whose best candidate is the right person
  with a score of at least ``T`` (a probe whose face was not found counts as a miss);
- rank-1: the fraction of mated searches whose best candidate is the right person,
  whatever the score.

TPIR at a fixed FPIR sets ``T`` from the non-mated scores alone, as a deployment
would calibrate its threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["OpenSetResult", "open_set_metrics", "threshold_at_fpir"]


@dataclass(frozen=True)
class OpenSetResult:
    """Results of one open-set evaluation.

    Attributes:
        mated: Number of mated searches (including probes without a face).
        nonmated: Number of non-mated searches.
        rank1: Fraction of mated searches with the right person first.
        tpir: TPIR at each requested FPIR.
        thresholds: The score threshold that gives each requested FPIR.
    """

    mated: int
    nonmated: int
    rank1: float
    tpir: dict[float, float]
    thresholds: dict[float, float]


def threshold_at_fpir(nonmated_scores: npt.ArrayLike, fpir: float) -> float:
    """The least threshold whose FPIR is at most ``fpir``.

    Args:
        nonmated_scores: The best score of every non-mated search (``-inf`` where
            the probe had no face).
        fpir: Target false-positive identification rate in ``(0, 1)``.

    Returns:
        ``T`` such that at most ``floor(fpir * n)`` non-mated scores are ``>= T``.

    Raises:
        ValueError: No scores, or ``fpir`` outside ``(0, 1)``.
    """
    scores = np.sort(np.asarray(nonmated_scores, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise ValueError("no non-mated scores")
    if not 0 < fpir < 1:
        raise ValueError(f"fpir must be in (0, 1), got {fpir}")
    allowed = math.floor(fpir * scores.size)
    # Strictly above the (allowed + 1)-th highest score: at most `allowed` reach it.
    return float(np.nextafter(scores[allowed], np.inf))


def open_set_metrics(
    mated_top_ids: npt.ArrayLike,
    mated_top_scores: npt.ArrayLike,
    mated_true_ids: npt.ArrayLike,
    nonmated_top_scores: npt.ArrayLike,
    fpirs: Sequence[float] = (0.01, 0.001),
) -> OpenSetResult:
    """Rank-1 and TPIR at the given FPIRs from top-1 search results.

    Args:
        mated_top_ids: Best candidate of each mated search (-1 where no face).
        mated_top_scores: Its score (``-inf`` where no face).
        mated_true_ids: The right identity of each mated search.
        nonmated_top_scores: Best score of each non-mated search.
        fpirs: FPIR operating points.

    Returns:
        The :class:`OpenSetResult`.

    Raises:
        ValueError: Arrays disagree in length or are empty.
    """
    top = np.asarray(mated_top_ids)
    scores = np.asarray(mated_top_scores, dtype=np.float64)
    truth = np.asarray(mated_true_ids)
    nonmated = np.asarray(nonmated_top_scores, dtype=np.float64)
    if not top.shape == scores.shape == truth.shape or top.ndim != 1 or top.size == 0:
        raise ValueError("mated arrays must be 1-D, non-empty and of equal length")
    hit = top == truth
    thresholds = {f: threshold_at_fpir(nonmated, f) for f in fpirs}
    tpir = {f: float(np.mean(hit & (scores >= t))) for f, t in thresholds.items()}
    return OpenSetResult(
        mated=int(top.size),
        nonmated=int(nonmated.size),
        rank1=float(hit.mean()),
        tpir=tpir,
        thresholds=thresholds,
    )
