"""AlertWriter.stored: the preview's notion of an alert that may be shown sharp.

A ``(track, subject)`` pair is reported stored only once its alert was written,
until its track ends, and never when the write failed (the alert was lost).
The records are a stand-in that stores nothing or fails on purpose; every wait
has a time limit.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from lfr.pipeline.frame_step import Handover
from lfr.pipeline.writer import AlertWriter
from lfr.secure import SecureBuffer

WAIT_S = 30.0  # a limit on waits that must end
TRACK = (0, "S-0001")


class FakeRecords:
    """Records that store an alert in a dict, or fail with ``OSError``."""

    def __init__(self, fail: bool, hold: bool = False) -> None:
        self.fail = fail
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.rows: dict[str, Any] = {}
        self.expired: list[str] = []
        self.store = SimpleNamespace(get=self.rows.__getitem__)

    def raise_alert(self, **fields: Any) -> Any:
        self.entered.set()
        assert self.release.wait(WAIT_S), "the test did not release the write"
        if self.fail:
            raise OSError("no space left on device")
        alert = SimpleNamespace(**fields)
        self.rows[fields["alert_id"]] = alert
        return alert

    def purge(self) -> list[str]:
        """Destroys the alerts marked expired; returns their ids."""
        purged = [i for i in self.expired if i in self.rows]
        for alert_id in purged:
            del self.rows[alert_id]
        return purged


def alert(kind: str = "alert") -> Handover:
    crop = SecureBuffer(4 * 4 * 3)
    return Handover(
        kind, TRACK, "a-1" if kind == "alert" else "", 0.97, (0, 0, 4, 4), crop,
        (4, 4, 3), datetime.now(timezone.utc), 0.0,
    )  # fmt: skip


def writer_for(records: FakeRecords, announced: list[Any]) -> AlertWriter:
    writer = AlertWriter(
        records,  # type: ignore[arg-type]
        camera_id="cam-1",
        deployment_id="d-1",
        announce=lambda a, captured: announced.append(a),
        failed=lambda exc: None,
    )
    writer.start()
    return writer


def test_stored_after_the_write_until_the_track_ends() -> None:
    announced: list[Any] = []
    writer = writer_for(FakeRecords(fail=False), announced)
    assert not writer.stored(TRACK)  # handed over is not stored
    writer.put(alert())
    writer.put(Handover("ended", TRACK))
    assert writer.close(WAIT_S)
    assert len(announced) == 1
    assert not writer.stored(TRACK)  # the track ended


def test_stored_while_the_track_lasts() -> None:
    announced: list[Any] = []
    records = FakeRecords(fail=False)
    writer = writer_for(records, announced)
    writer.put(alert())
    assert writer.close(WAIT_S)
    # Positive control: the pair is stored and reported so.
    assert "a-1" in records.rows
    assert writer.stored(TRACK)
    assert not writer.stored((1, "S-0001"))
    assert not writer.stored((0, "S-0002"))


def test_not_stored_while_the_write_is_in_progress() -> None:
    announced: list[Any] = []
    records = FakeRecords(fail=False, hold=True)
    writer = writer_for(records, announced)
    writer.put(alert())
    assert records.entered.wait(WAIT_S), "the writer did not start the write"
    # Handed over and being written, not yet stored: not shown.
    assert not writer.stored(TRACK)
    records.release.set()
    assert writer.close(WAIT_S)
    assert writer.stored(TRACK)  # positive control


def test_an_alert_whose_write_failed_is_never_stored() -> None:
    announced: list[Any] = []
    writer = writer_for(FakeRecords(fail=True), announced)
    writer.put(alert())
    assert writer.close(WAIT_S)
    assert isinstance(writer.error, OSError)
    assert [x.alert_id for x in writer.lost()] == ["a-1"]
    assert announced == []
    assert not writer.stored(TRACK)


def test_nothing_is_shown_stored_after_the_writer_failed() -> None:
    announced: list[Any] = []
    records = FakeRecords(fail=False)
    writer = writer_for(records, announced)
    writer.put(alert())
    deadline = time.monotonic() + WAIT_S
    while not writer.stored(TRACK):
        assert time.monotonic() < deadline, "the alert was not stored in time"
        time.sleep(0.01)
    records.fail = True  # the next write fails: the deployment stops
    second = alert()
    second.track, second.alert_id = (1, "S-0002"), "a-2"
    writer.put(second)
    assert writer.close(WAIT_S)
    assert isinstance(writer.error, OSError)
    assert not writer.stored(TRACK)
    assert not writer.stored((1, "S-0002"))


def test_a_purged_alert_is_no_longer_stored() -> None:
    announced: list[Any] = []
    records = FakeRecords(fail=False)
    writer = writer_for(records, announced)
    writer.put(alert())
    deadline = time.monotonic() + WAIT_S
    while not writer.stored(TRACK):
        assert time.monotonic() < deadline, "the alert was not stored in time"
        time.sleep(0.01)
    # Negative control: a purge of other alerts leaves it stored.
    records.expired = ["a-other"]
    writer.request_purge()
    second = alert()
    second.track, second.alert_id = (1, "S-0002"), "a-2"
    writer.put(second)  # processed after the purge: the purge has run
    deadline = time.monotonic() + WAIT_S
    while not writer.stored((1, "S-0002")):
        assert time.monotonic() < deadline, "the second alert was not stored in time"
        time.sleep(0.01)
    assert writer.stored(TRACK)
    # Its own alert expired and purged: the face is no longer shown sharp.
    records.expired = ["a-1"]
    writer.request_purge()
    assert writer.close(WAIT_S)
    assert "a-1" not in records.rows
    assert not writer.stored(TRACK)
    assert writer.stored((1, "S-0002"))
