"""The records invariant, checked by reading a store and its audit log directly.

Every alert id in the store or its tombstones has its ``alert_raised`` record,
every purged one its ``alert_purged``, and every review, hold, release and better
view its own record. Independent of :class:`lfr.alerts.Records`: it reads the
SQLite file and the log as an auditor with the keys would.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import lfr
from lfr.audit import PublicKey, read_log


def invariant_breaks(
    store: Path, key: lfr.Key, log: Path, public: PublicKey
) -> list[str]:
    """What breaks the invariant (empty when it holds)."""
    records, problems = read_log(log, public)
    out = [f"log: {p.kind}" for p in problems if p.kind != "truncated"]
    raised = {r.fields["alert_id"] for r in records if r.event == "alert_raised"}
    purged = {r.fields["alert_id"] for r in records if r.event == "alert_purged"}
    per_alert: Counter[tuple[str, str]] = Counter(
        (str(r.fields.get("alert_id")), r.event) for r in records
    )
    with lfr.AlertStore(store, key) as opened:
        state = opened._trail_state()
    for alert in state.alerts:
        if alert.alert_id not in raised:
            out.append(f"{alert.alert_id}: stored, never raised in the log")
        counts = {
            "alert_reviewed": len(alert.reviews),
            "alert_improved": alert.views - 1,
            "alert_held": sum(
                h.action == "hold" for h in state.holds.get(alert.alert_id, ())
            ),
            "alert_released": sum(
                h.action == "release" for h in state.holds.get(alert.alert_id, ())
            ),
        }
        for event, n in counts.items():
            if per_alert[(alert.alert_id, event)] != n:
                out.append(
                    f"{alert.alert_id}: {n} {event} in the store, "
                    f"{per_alert[(alert.alert_id, event)]} in the log"
                )
    for alert_id in state.buried:
        if alert_id not in raised:
            out.append(f"{alert_id}: purged, never raised in the log")
        if alert_id not in purged:
            out.append(f"{alert_id}: purged without alert_purged")
    out += [f"{a}: unreadable" for a in state.unreadable]
    return out
