"""Alerts: the encrypted store, and the records layer that changes it with its audit.

- :mod:`lfr.alerts.store`: :class:`AlertStore`, encrypted alerts in one SQLite
  file, readable until they expire (on its own it only reads; it never purges).
- :mod:`lfr.alerts.records`: :class:`Records`, the one path by which lfr changes
  or exports an alert, each change with its audit record.
- :mod:`lfr.alerts.repository`: :class:`~lfr.alerts.repository.SqliteRepository`,
  the store's rows and every SQL statement (no key, no plaintext, no rule), with
  :mod:`lfr.alerts.schema` (the SQLite layout) and :mod:`lfr.alerts.rows` (the
  opaque rows any :class:`lfr.protocols.AlertRepository` stores).
- :mod:`lfr.alerts.sealing`: :class:`~lfr.alerts.sealing.Sealer`, the envelope
  encryption and the associated data.
- :mod:`lfr.alerts.rules`: the retention rules, as pure functions.
- :mod:`lfr.alerts.values`: value checks and conversions.
"""

from __future__ import annotations

from lfr.alerts.records import Action, LostAlert, Reconciled, Records
from lfr.alerts.schema import FORMAT_VERSION
from lfr.alerts.store import Alert, AlertStore, Decision, Hold, Review

__all__ = [
    "FORMAT_VERSION",
    "Action",
    "Alert",
    "AlertStore",
    "Decision",
    "Hold",
    "LostAlert",
    "Reconciled",
    "Records",
    "Review",
]
