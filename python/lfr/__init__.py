"""lfr: privacy-first live facial recognition.

Faces that do not match the watchlist are wiped at once; only alerts are kept,
encrypted and for a bounded time; a signed audit log lets an auditor check it.
"""

from __future__ import annotations

import os as _os

# Before anything imports onnxruntime: its import otherwise writes a device id and
# a telemetry queue under ~/.cache/Microsoft/ (an operator may set it to 0).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# Before anything imports OpenCV, which reads it once, when it loads: no image
# decodes to more pixels than this (lfr.sources._stills.DEFAULT_MAX_STILL_PIXELS),
# whoever calls the decoder; an operator may set another bound.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 25))

from lfr import audit as audit
from lfr._core import __version__
from lfr.alerts import Alert, AlertStore, Records
from lfr.audit import AuditLog, SigningKey
from lfr.detect import Detections, FaceDetector
from lfr.embed import FaceEmbedder
from lfr.errors import (
    AlertStoreError,
    AuditError,
    DeploymentError,
    EnrolmentError,
    KeyFileError,
    LfrError,
    ModelError,
    PolicyError,
    RetentionError,
    SecureMemoryError,
    SharedKeyError,
    SourceError,
    WatchlistError,
    WrongKeyError,
    WrongStoreKeyError,
    WrongWatchlistKeyError,
)
from lfr.evaluation import EvalReport, evaluate
from lfr.governance import Policy
from lfr.keys import Key, KeyProvider, Passphrase
from lfr.matcher import Matcher, available_kernels
from lfr.pipeline import Deployment, DeploymentStats
from lfr.preview import Preview
from lfr.quality import QualityGate
from lfr.retention import RetentionPolicy
from lfr.secure import SecureBuffer, SecurePool, harden_process
from lfr.sources import Backoff, Frame, FrameSource, open_source
from lfr.tracking import FaceDecision, Tracker, TrackerConfig, TrackSummary
from lfr.watchlist import Watchlist

__all__ = [
    "Alert",
    "AlertStore",
    "AlertStoreError",
    "AuditError",
    "AuditLog",
    "Backoff",
    "Deployment",
    "DeploymentError",
    "DeploymentStats",
    "Detections",
    "EnrolmentError",
    "EvalReport",
    "FaceDecision",
    "FaceDetector",
    "FaceEmbedder",
    "Frame",
    "FrameSource",
    "Key",
    "KeyFileError",
    "KeyProvider",
    "LfrError",
    "Matcher",
    "ModelError",
    "Passphrase",
    "Policy",
    "PolicyError",
    "Preview",
    "QualityGate",
    "Records",
    "RetentionError",
    "RetentionPolicy",
    "SecureBuffer",
    "SecureMemoryError",
    "SecurePool",
    "SharedKeyError",
    "SigningKey",
    "SourceError",
    "TrackSummary",
    "Tracker",
    "TrackerConfig",
    "Watchlist",
    "WatchlistError",
    "WrongKeyError",
    "WrongStoreKeyError",
    "WrongWatchlistKeyError",
    "__version__",
    "available_kernels",
    "evaluate",
    "harden_process",
    "open_source",
]
