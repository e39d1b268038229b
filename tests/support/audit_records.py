"""Hand-made audit records (no signing) for the promise checks' tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import lfr
from lfr.audit import Record
from lfr.audit.events import format_time

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SHA = "ab" * 32
OTHER_SHA = "cd" * 32


class Records:
    """Builds a list of :class:`Record` with consecutive seq and line numbers."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.add(
            T0,
            "log_created",
            log_id="00000000-0000-4000-8000-000000000000",
            public_key="A" * 43 + "=",
            lfr_version="test",
        )

    def add(self, time: datetime, event: str, /, **fields: Any) -> Record:
        """Appends a record; datetimes in fields become ``...Z`` strings."""
        stored = {
            name: format_time(value) if isinstance(value, datetime) else value
            for name, value in fields.items()
        }
        seq = len(self.records)
        record = Record(seq=seq, time=time, event=event, fields=stored, line=seq + 1)
        self.records.append(record)
        return record

    def start(
        self,
        time: datetime = T0,
        *,
        deployment: str = "dep-1",
        policy: lfr.RetentionPolicy | None = None,
        sha: str = SHA,
    ) -> Record:
        """A ``deployment_started`` record (default policy unless given)."""
        return self.add(
            time,
            "deployment_started",
            deployment_id=deployment,
            camera_ids=["cam-1", "cam-2"],
            location="Oxford Street, London",
            purpose="wanted for serious offences",
            authorised_by="Supt A. Example",
            watchlist_sha256=sha,
            watchlist_size=1200,
            model_id="dlib-resnet",
            threshold=0.6,
            policy=(policy or lfr.RetentionPolicy()).to_json(),
            lfr_version="test",
        )

    def stop(self, time: datetime, *, deployment: str = "dep-1") -> Record:
        """A ``deployment_stopped`` record."""
        return self.add(time, "deployment_stopped", deployment_id=deployment)

    def alert(
        self,
        time: datetime,
        alert_id: str,
        *,
        deployment: str = "dep-1",
        ttl: timedelta = timedelta(hours=24),
        expires: datetime | None = None,
        subject: str = "SUBJECT-0001",
        field_time: datetime | None = None,
    ) -> Record:
        """An ``alert_raised`` record expiring at ``time + ttl`` unless given.

        ``field_time`` is the alert's own ``time`` field (default: ``time``, the
        record's); ``expires`` then defaults to ``field_time + ttl``.
        """
        own = field_time if field_time is not None else time
        return self.add(
            time,
            "alert_raised",
            alert_id=alert_id,
            deployment_id=deployment,
            camera_id="cam-1",
            subject_id=subject,
            score=0.71,
            time=own,
            expires=expires if expires is not None else own + ttl,
        )

    def review(
        self, time: datetime, alert_id: str, reviewer: str, decision: str = "confirmed"
    ) -> Record:
        """An ``alert_reviewed`` record."""
        return self.add(
            time,
            "alert_reviewed",
            alert_id=alert_id,
            reviewer=reviewer,
            decision=decision,
        )

    def hold(
        self, time: datetime, alert_id: str, until: datetime, reason: Any = "case 17"
    ) -> Record:
        """An ``alert_held`` record (``reason=None`` leaves the field out)."""
        fields: dict[str, Any] = {"alert_id": alert_id, "until": until, "by": "sgt-4"}
        if reason is not None:
            fields["reason"] = reason
        return self.add(time, "alert_held", **fields)

    def release(self, time: datetime, alert_id: str) -> Record:
        """An ``alert_released`` record."""
        return self.add(time, "alert_released", alert_id=alert_id, by="sgt-4")

    def purge(self, time: datetime, alert_id: str) -> Record:
        """An ``alert_purged`` record."""
        return self.add(time, "alert_purged", alert_id=alert_id)

    def destroy(
        self, time: datetime, sha: str = SHA, *, deployment: str | None = "dep-1"
    ) -> Record:
        """A ``watchlist_destroyed`` record (``deployment=None`` leaves it out)."""
        fields: dict[str, Any] = {"watchlist_sha256": sha}
        if deployment is not None:
            fields["deployment_id"] = deployment
        return self.add(time, "watchlist_destroyed", **fields)

    def counters(
        self,
        time: datetime,
        *,
        detected: int,
        wiped: int,
        alerts: int,
        skipped: int,
        deployment: str = "dep-1",
    ) -> Record:
        """A ``counters`` record for ``cam-1``."""
        return self.add(
            time,
            "counters",
            deployment_id=deployment,
            camera_id="cam-1",
            frames_processed=100,
            frames_dropped=0,
            faces_detected=detected,
            faces_skipped=skipped,
            faces_wiped=wiped,
            alerts=alerts,
        )
