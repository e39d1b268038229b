"""Governance: the rules a deployment must keep, as the auditor brings them.

:class:`Policy` is one versioned JSON document: the retention limits, two-person
review, the lowest match threshold and the oldest watchlist allowed.
:func:`lfr.audit.verify` judges a log against it.
"""

from __future__ import annotations

from lfr.governance.policy import (
    MAX_POLICY_BYTES,
    POLICY_VERSION,
    Policy,
    read_policy_file,
)

__all__ = ["MAX_POLICY_BYTES", "POLICY_VERSION", "Policy", "read_policy_file"]
