"""lfr: privacy-first live facial recognition.

Faces that do not match the watchlist are wiped at once; only alerts are kept,
encrypted and for a bounded time; a signed audit log lets an auditor check it.
"""

from __future__ import annotations

from lfr._core import __version__
from lfr.detect import Detections, FaceDetector
from lfr.embed import FaceEmbedder
from lfr.errors import LfrError
from lfr.matcher import Matcher, available_kernels
from lfr.quality import QualityGate
from lfr.secure import SecureBuffer, SecurePool, harden_process

__all__ = [
    "Detections",
    "FaceDetector",
    "FaceEmbedder",
    "LfrError",
    "Matcher",
    "QualityGate",
    "SecureBuffer",
    "SecurePool",
    "__version__",
    "available_kernels",
    "harden_process",
]
