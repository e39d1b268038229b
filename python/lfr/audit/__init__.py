"""The signed, tamper-evident audit log and its verification.

A deployment writes every event that matters to an auditor (start and stop, the
watchlist's identity, counts of frames, faces and wipes, alerts, reviews, holds and
purges) to an :class:`AuditLog`: JSON Lines, each record signed with a
:class:`SigningKey` and chained to the one before it by its hash. Nothing biometric
may enter it (:func:`lfr.audit.events.biometric_fields`). :func:`read_log` verifies
the chain with a :class:`PublicKey` obtained independently of the log.
"""

from __future__ import annotations

from lfr.audit.checkpoint import (
    Checkpoint,
    check_against,
    load_checkpoints,
    make_checkpoint,
)
from lfr.audit.log import AuditLog, ChainProblem, Record, read_log
from lfr.audit.report import AuditReport, DeploymentSummary, Violation, verify
from lfr.audit.signing import PublicKey, SigningKey

__all__ = [
    "AuditLog",
    "AuditReport",
    "ChainProblem",
    "Checkpoint",
    "DeploymentSummary",
    "PublicKey",
    "Record",
    "SigningKey",
    "Violation",
    "check_against",
    "load_checkpoints",
    "make_checkpoint",
    "read_log",
    "verify",
]
