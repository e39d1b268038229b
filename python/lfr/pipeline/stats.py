"""What a deployment counts: frames, faces, wipes, alerts, rates and latencies."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

__all__ = ["Counts", "DeploymentStats", "Latencies", "percentile"]

_LATENCIES = 2048


@dataclass(frozen=True)
class DeploymentStats:
    """Counts and rates since the deployment started (no biometric data).

    Attributes:
        frames: Frames processed.
        drops: Frames the source dropped because processing was slower (live).
        faces: Faces detected.
        skipped: Faces the quality gate skipped (wiped).
        wiped: Faces that did not lead to an alert (wiped at once), skipped ones
            not included.
        alerts: Alerts raised.
        fps: Frames processed per second of running time.
        latency_p50_ms: Median capture-to-decision time per frame, in ms.
        latency_p95_ms: Its 95th percentile.
        alert_latency_p95_ms: 95th percentile capture-to-alert time (stored and
            audited), or None without alerts.
        running: Whether the processing thread is still running.
        unreadable: Frames the source skipped because they could not be used: a
            damaged, unknown or oversized image in a folder (each logged by file
            name), or a grabbed video frame that failed to decode.
        stream_lost_at: When the live stream (camera or network stream) was lost,
            while it is being reconnected (UTC); None while frames come, and for
            files, folders and iterables.
    """

    frames: int
    drops: int
    faces: int
    skipped: int
    wiped: int
    alerts: int
    fps: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    alert_latency_p95_ms: float | None
    running: bool
    unreadable: int = 0
    stream_lost_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``stream_lost_at`` in ISO 8601)."""
        data = dict(self.__dict__)
        if self.stream_lost_at is not None:
            data["stream_lost_at"] = self.stream_lost_at.isoformat()
        return data


@dataclass
class Counts:
    """Running totals (the processing thread adds, the lifecycle reads)."""

    frames: int = 0
    faces: int = 0
    skipped: int = 0
    wiped: int = 0
    alerts: int = 0
    drops: int = 0

    def minus(self, other: Counts) -> Counts:
        """The counts since ``other``."""
        return Counts(**{k: v - getattr(other, k) for k, v in self.__dict__.items()})

    def copy(self) -> Counts:
        """A snapshot."""
        return Counts(**self.__dict__)


@dataclass
class Latencies:
    """The most recent capture-to-decision and capture-to-alert times, in ms."""

    frame: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCIES))
    alert: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCIES))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values``, or None if there are none."""
    return float(np.percentile(np.fromiter(values, float), q)) if values else None
