"""lfr: privacy-first live facial recognition.

Faces that do not match the watchlist are wiped at once; only alerts are kept,
encrypted and for a bounded time; a signed audit log lets an auditor check it.
"""

from __future__ import annotations

from lfr import audit as audit
from lfr._core import __version__
from lfr.alerts import Alert, AlertStore
from lfr.audit import AuditLog, SigningKey
from lfr.deployment import Deployment, DeploymentStats
from lfr.detect import Detections, FaceDetector
from lfr.embed import FaceEmbedder
from lfr.errors import LfrError
from lfr.evaluation import EvalReport, evaluate
from lfr.keys import Key, KeyProvider, Passphrase
from lfr.matcher import Matcher, available_kernels
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
    "AuditLog",
    "Backoff",
    "Deployment",
    "DeploymentStats",
    "Detections",
    "EvalReport",
    "FaceDecision",
    "FaceDetector",
    "FaceEmbedder",
    "Frame",
    "FrameSource",
    "Key",
    "KeyProvider",
    "LfrError",
    "Matcher",
    "Passphrase",
    "Preview",
    "QualityGate",
    "RetentionPolicy",
    "SecureBuffer",
    "SecurePool",
    "SigningKey",
    "TrackSummary",
    "Tracker",
    "TrackerConfig",
    "Watchlist",
    "__version__",
    "available_kernels",
    "evaluate",
    "harden_process",
    "open_source",
]
