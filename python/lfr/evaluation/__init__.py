"""``lfr.evaluation``: 1:N open-set accuracy and fairness of the live pipeline.

The tooling behind ``lfr eval`` (docs/accuracy.md explains the protocol):

* :mod:`lfr.evaluation.run`: :func:`evaluate`, :func:`analyse` and
  :class:`EvalReport` (re-exported here).
* :mod:`lfr.evaluation.dataset`: the dataset layout, embedding every photo through
  the live pipeline, and the encrypted embedding cache.
* :mod:`lfr.evaluation.metrics`: rank-1, TPIR and FPIR of open-set searches.
* :mod:`lfr.evaluation.error_rates`: DET curves, Wilson intervals, and FPIR
  extrapolated to other watchlist sizes.
* :mod:`lfr.evaluation.outputs`: report.json, the plots and report.md
  (matplotlib, the optional extra ``lfr[eval]``; imported only when a report is
  written).
"""

from __future__ import annotations

from lfr.evaluation.run import (
    PROTOCOL,
    EvalReport,
    analyse,
    embeddings,
    evaluate,
    read_groups,
)

__all__ = ["PROTOCOL", "EvalReport", "analyse", "embeddings", "evaluate", "read_groups"]
