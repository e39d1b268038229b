"""The live pipeline: frames in, alerts out, every non-match wiped, all audited.

- :mod:`lfr.pipeline.frame_step`: :class:`FrameStep`, one frame through detection,
  quality gate, embedding, one watchlist search and tracking.
- :mod:`lfr.pipeline.writer`: the alert writer (stores and audits alerts through
  :class:`lfr.alerts.Records`) and the announcer (``on_alert``).
- :mod:`lfr.pipeline.deployment`: :class:`Deployment`, the lifecycle: start,
  run, stop, and the audit of each.
- :mod:`lfr.pipeline.stats`: :class:`DeploymentStats`.
"""

from __future__ import annotations

from lfr.errors import DeploymentError
from lfr.pipeline.deployment import DEFAULT_THRESHOLD, Deployment
from lfr.pipeline.frame_step import FrameStep
from lfr.pipeline.stats import DeploymentStats

__all__ = [
    "DEFAULT_THRESHOLD",
    "Deployment",
    "DeploymentError",
    "DeploymentStats",
    "FrameStep",
]
