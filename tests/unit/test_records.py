"""lfr.alerts.Records: every change with its audit record, reconciled on open."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.alerts import LostAlert, Records
from lfr.audit import SigningKey, read_log
from tests.support.trail import invariant_breaks

U8 = npt.NDArray[np.uint8]


def crop(seed: int) -> U8:
    return np.random.default_rng(seed).integers(0, 256, (40, 32, 3), dtype=np.uint8)


class Site:
    def __init__(self, folder: Path, **policy: object) -> None:
        self.store = folder / "alerts.db"
        self.log = folder / "audit.log"
        self.key = lfr.Key.generate()
        self.signing = SigningKey.generate()
        self.policy = lfr.RetentionPolicy(**policy)  # type: ignore[arg-type]

    def open(self, lock_timeout: float = 10.0, compact_wait: float = 2.0) -> Records:
        return Records.open(
            self.store,
            self.key,
            self.log,
            self.signing,
            policy=self.policy,
            lock_timeout=lock_timeout,
            compact_wait=compact_wait,
        )

    def events(self) -> list[tuple[str, dict[str, object]]]:
        records, problems = read_log(self.log, self.signing.public_key())
        assert problems == []
        return [(r.event, dict(r.fields)) for r in records]

    def breaks(self) -> list[str]:
        return invariant_breaks(
            self.store, self.key, self.log, self.signing.public_key()
        )


def raise_one(records: Records, seed: int = 0) -> lfr.Alert:
    return records.raise_alert(
        subject_id=f"S-{seed}",
        score=0.9,
        box=(1, 2, 30, 40),
        crop=crop(seed),
        camera_id="cam-1",
        deployment_id="dep-1",
    )


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def test_every_change_writes_its_record(site: Site) -> None:
    with site.open() as records:
        a = raise_one(records)
        records.improve(a.alert_id, score=0.95, box=(1, 2, 31, 41), crop=crop(1))
        records.improve(a.alert_id, score=0.5, box=(1, 2, 31, 41), crop=crop(2))
        records.review(a.alert_id, "officer-1", "confirmed", note="CCTV")
        until = datetime.now(timezone.utc) + timedelta(days=2)
        records.hold(a.alert_id, "case 9", until, by="officer-2")
        records.release(a.alert_id, by="officer-2")
        records.action(a.alert_id, "no_action", by="officer-3")
        data = records.export_crop(a.alert_id, by="officer-4")
        assert data.startswith(b"\x89PNG")
        assert records.store.purging
    events = [e for e, _ in site.events()]
    assert events == [
        "log_created",
        "alert_raised",
        "alert_improved",  # the worse view changed nothing: no record
        "alert_reviewed",
        "alert_held",
        "alert_released",
        "alert_actioned",
        "alert_exported",
    ]
    assert site.breaks() == []
    raised = site.events()[1][1]
    assert raised["alert_id"] == a.alert_id
    assert "note" not in str(site.events())  # the note stays in the store


def test_bad_changes_write_nothing(site: Site) -> None:
    with site.open() as records:
        a = raise_one(records)
        before = site.log.read_bytes()
        with pytest.raises(ValueError, match="not on hold"):
            records.release(a.alert_id, by="o")
        with pytest.raises(ValueError, match="action must be"):
            records.action(a.alert_id, "arrest", by="o")  # type: ignore[arg-type]
        with pytest.raises(KeyError):
            records.review("0b5d4a8e-3f7e-4b59-9d59-6d0e4a1b2c3d", "o", "confirmed")
        with pytest.raises(ValueError, match="UUID"):
            records.raise_alert(
                subject_id="S",
                score=0.9,
                box=(0, 0, 1, 1),
                crop=crop(0),
                camera_id="c",
                deployment_id="d",
                alert_id="not-a-uuid",
            )
        assert site.log.read_bytes() == before
        assert len(records.store) == 1


def test_opening_reconciles_what_the_store_did_alone(site: Site) -> None:
    with site.open():
        pass
    # Changes made to the store without the log (as a crash between the store's
    # commit and the audit record leaves them).
    with lfr.AlertStore(site.store, site.key, policy=site.policy) as store:
        a = store._add(
            subject_id="S-1",
            score=0.9,
            box=(0, 0, 20, 20),
            crop=crop(1),
            camera_id="cam-2",
            deployment_id="dep-2",
        )
        store._improve(a.alert_id, score=0.97, box=(0, 0, 21, 21), crop=crop(2))
        store._review(a.alert_id, "officer-1", "confirmed")
        store._review(a.alert_id, "officer-1", "confirmed")
        until = datetime.now(timezone.utc) + timedelta(days=1)
        store._hold(a.alert_id, "case", until, by="officer-2")
    assert site.breaks() != []  # the negative control: the invariant is broken
    with site.open() as records:
        done = records.reconciled
    assert (done.raised, done.improved, done.reviewed, done.held) == (1, 1, 2, 1)
    assert site.breaks() == []
    events = site.events()
    assert events[1][0] == "anomaly"
    assert events[1][1]["kind"] == "trail_reconciled"
    assert "S-1" not in str(events[1][1])
    raised = next(f for e, f in events if e == "alert_raised")
    assert raised["alert_id"] == a.alert_id
    assert raised["camera_id"] == "cam-2"
    with site.open() as records:  # nothing more to do
        assert records.reconciled.total == 0


def test_an_expired_unaudited_alert_is_still_reconciled(tmp_path: Path) -> None:
    site = Site(tmp_path, alert_ttl=timedelta(seconds=1))
    with lfr.AlertStore(site.store, site.key, policy=site.policy) as store:
        a = store._add(
            subject_id="S-1",
            score=0.9,
            box=(0, 0, 20, 20),
            crop=crop(1),
            camera_id="cam-2",
            deployment_id="dep-2",
        )
    time.sleep(1.2)
    with site.open() as records:
        assert records.reconciled.raised == 1
        assert records.purge() == [a.alert_id]
    assert [e for e, _ in site.events()][-2:] == ["alert_raised", "alert_purged"]
    assert site.breaks() == []


def test_a_purge_blocked_by_a_reader_audits_an_anomaly(tmp_path: Path) -> None:
    site = Site(tmp_path, alert_ttl=timedelta(seconds=1))
    with site.open() as records:
        raise_one(records, 1)
        raise_one(records, 2)
    time.sleep(1.2)
    reader = sqlite3.connect(site.store)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM alerts").fetchone()  # holds a snapshot
        began = time.monotonic()
        with site.open(compact_wait=0.3) as records:
            assert len(records.purge()) == 2
        assert time.monotonic() - began < 30  # bounded, never a hang
    finally:
        reader.close()
    anomalies = [f for e, f in site.events() if e == "anomaly"]
    assert [a["kind"] for a in anomalies] == ["purge_incomplete"]
    assert "2 purged alert(s)" in str(anomalies[0]["detail"])
    # Negative control: without the reader the same purge leaves no anomaly.
    other = Site(tmp_path / "b", alert_ttl=timedelta(seconds=1))
    other.store.parent.mkdir()
    with other.open() as records:
        raise_one(records, 1)
    time.sleep(1.2)
    with other.open(compact_wait=0.3) as records:
        assert len(records.purge()) == 1
    assert not [f for e, f in other.events() if e == "anomaly"]


def test_lost_alerts_are_audited_now_or_at_the_next_open(site: Site) -> None:
    lost = [
        LostAlert(
            "6f1f3c52-2c8e-4a55-9d0e-0d6f3c1c7f10",
            "cam-1",
            datetime(2026, 12, 1, tzinfo=timezone.utc),
        )
    ]
    with site.open() as records:
        records.note_lost(lost, "dep-1", audit=False)  # as a blocked writer does
        assert Path(f"{site.log}.lost").exists()
        assert not [f for e, f in site.events() if e == "anomaly"]
    with site.open() as records:
        assert records.reconciled.lost == 1
        records.note_lost(lost, "dep-1")
    assert not Path(f"{site.log}.lost").exists()
    kinds = [f["kind"] for e, f in site.events() if e == "anomaly"]
    assert kinds == ["trail_reconciled", "alert_lost", "alert_lost"]
    details = [f["detail"] for e, f in site.events() if e == "anomaly"]
    assert lost[0].alert_id in str(details[1])


def test_a_store_opened_alone_never_purges(tmp_path: Path) -> None:
    site = Site(tmp_path, alert_ttl=timedelta(seconds=1))
    with site.open() as records:
        raise_one(records)
    time.sleep(1.2)
    with lfr.AlertStore(site.store, site.key, policy=site.policy) as store:
        assert not store.purging
        assert not hasattr(store, "purge")
        assert len(store) == 0
    conn = sqlite3.connect(site.store)
    try:
        assert conn.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM alerts").fetchone()[0] == 1
    finally:
        conn.close()


def test_the_store_lock_bounds_the_wait(site: Site) -> None:
    import fcntl
    import os

    with site.open(lock_timeout=0.3) as records:
        fd = os.open(f"{site.store}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            began = time.monotonic()
            with pytest.raises(lfr.AlertStoreError, match="busy"):
                raise_one(records)
            assert time.monotonic() - began < 10
        finally:
            os.close(fd)
        raise_one(records)  # free again
        assert len(records.store) == 1


def test_a_failed_audit_is_reconciled_before_the_next_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same Records goes on after an audit failed: nothing builds on the gap."""
    import lfr.alerts.records as records_module

    site = Site(tmp_path, alert_ttl=timedelta(seconds=1))

    def fail(step: str) -> None:
        if step == "raise:stored":
            raise lfr.AuditError("injected: the log cannot be written")

    with site.open() as records:
        monkeypatch.setattr(records_module, "_fault", fail)
        with pytest.raises(lfr.AuditError, match="injected"):
            raise_one(records)
        monkeypatch.setattr(records_module, "_fault", None)
        assert site.breaks() != []  # stored, never raised in the log
        time.sleep(1.2)
        purged = records.purge()  # reconciles first, then purges
    assert len(purged) == 1
    events = site.events()
    assert [e for e, _ in events] == [
        "log_created",
        "anomaly",  # trail_reconciled, before the purge
        "alert_raised",
        "alert_purged",
    ]
    assert events[1][1]["kind"] == "trail_reconciled"
    assert site.breaks() == []


def test_a_clock_set_back_reads_no_expired_alert_and_is_audited(tmp_path: Path) -> None:
    now = [datetime(2026, 12, 1, tzinfo=timezone.utc)]
    site = Site(tmp_path, alert_ttl=timedelta(hours=24))

    def clock() -> datetime:
        return now[0]

    with Records.open(
        site.store, site.key, site.log, site.signing, policy=site.policy, clock=clock
    ) as records:
        old = raise_one(records, 1)
        now[0] += timedelta(hours=30)  # old has expired
        young = raise_one(records, 2)  # a write: the high-water mark moves up
    now[0] -= timedelta(days=10)  # the clock is set back
    with lfr.AlertStore(site.store, site.key, policy=site.policy, clock=clock) as store:
        with pytest.raises(lfr.RetentionError, match="expired"):
            store.get(old.alert_id)
        assert [a.alert_id for a in store.alerts()] == [young.alert_id]
        assert store.clock_behind is not None
    with Records.open(
        site.store, site.key, site.log, site.signing, policy=site.policy, clock=clock
    ) as records:
        assert records.purge() == [old.alert_id]  # the mark's time, not the clock's
    anomalies = [f for e, f in site.events() if e == "anomaly"]
    assert [a["kind"] for a in anomalies] == ["clock_went_back"]
    # Negative control: without the mark (a store never written since), the
    # same clock would have read the alert: the mark is what refuses it.
    assert old.expires > now[0]
