"""lfr.AlertStore: encrypted alerts, enforced expiry, holds, reviews, tampering."""

from __future__ import annotations

import doctest
import hashlib
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lfr
import lfr.alerts
import lfr.retention
from lfr.alerts import Review
from lfr.errors import AlertStoreError, RetentionError, WrongKeyError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
TTL = timedelta(hours=24)


class Clock:
    """A clock the tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def key() -> Iterator[lfr.Key]:
    k = lfr.Key.generate()
    yield k
    k.destroy()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "alerts.db"


@pytest.fixture
def store(db: Path, key: lfr.Key, clock: Clock) -> Iterator[lfr.AlertStore]:
    with lfr.AlertStore(db, key, clock=clock) as s:
        yield s


def random_crop(seed: int, h: int = 40, w: int = 32) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def add(store: lfr.AlertStore, seed: int = 0, **overrides: Any) -> lfr.Alert:
    fields: dict[str, Any] = {
        "subject_id": f"subject-{seed}",
        "score": 0.5 + seed / 1000,
        "box": (1.0, 2.0, 30.0, 41.5),
        "crop": random_crop(seed),
        "camera_id": "cam-1",
        "deployment_id": "dep-1",
    }
    fields.update(overrides)
    return store._add(**fields)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def digest(directory: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256(b).hexdigest() for name, b in files_of(directory).items()
    }


def edit(db: Path, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute(sql, args)
    finally:
        conn.close()


def column(db: Path, name: str, alert_id: str) -> bytes:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            f"SELECT {name} FROM alerts WHERE alert_id = ?", (alert_id,)
        ).fetchone()
    finally:
        conn.close()
    assert row is not None
    return bytes(row[0])


# -- round trip --------------------------------------------------------------------


def test_round_trip(store: lfr.AlertStore, clock: Clock) -> None:
    crop = random_crop(7)
    add(store, 8, time=T0 + timedelta(seconds=59))  # camera clock skew is allowed
    added = add(store, 7, crop=crop, time=T0 - timedelta(minutes=5))
    assert uuid.UUID(added.alert_id).version == 4
    got = store.get(added.alert_id)
    assert got == added
    assert got.subject_id == "subject-7"
    assert got.score == pytest.approx(0.507)
    assert got.box == (1.0, 2.0, 30.0, 41.5)
    assert got.time == T0 - timedelta(minutes=5)
    assert got.expires == got.time + TTL
    assert got.held_until is None
    assert got.reviews == ()
    png = store._crop(added.alert_id)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(store._crop_image(added.alert_id), crop)
    assert store.alerts()[0] == added
    assert len(store) == 2


def test_encoded_bytes_and_jpeg(store: lfr.AlertStore) -> None:
    crop = random_crop(3)
    ok, jpeg = cv2.imencode(".jpg", crop)
    assert ok
    given_bytes = jpeg.tobytes()
    a = add(store, 1, crop=given_bytes)
    assert store._crop(a.alert_id) == given_bytes
    b = add(store, 2, crop=crop, image_format="jpeg")
    assert store._crop(b.alert_id).startswith(b"\xff\xd8\xff")
    assert store._crop_image(b.alert_id).shape == crop.shape


def test_alerts_are_oldest_first_and_persist(
    db: Path, key: lfr.Key, clock: Clock
) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        late = add(store, 1, time=T0 - timedelta(minutes=1))
        early = add(store, 2, time=T0 - timedelta(hours=2))
        same = add(store, 3, time=T0 - timedelta(minutes=1))
    with lfr.AlertStore(db, key, clock=clock) as store:
        assert [a.alert_id for a in store.alerts()] == [
            early.alert_id,
            late.alert_id,
            same.alert_id,
        ]


def test_alert_to_json(store: lfr.AlertStore) -> None:
    a = store._review(add(store, 4).alert_id, "officer-1", "confirmed", "ok")
    data = a.to_json()
    for name in ("alert_id", "subject_id", "score", "time", "camera_id"):
        assert name in data
    assert datetime.fromisoformat(data["time"]) == a.time
    assert data["reviews"][0]["decision"] == "confirmed"
    assert "crop" not in repr(a)
    assert "crop" not in data


# -- opening -----------------------------------------------------------------------


def test_wrong_key_names_both_ids_and_leaves_the_file(
    db: Path, key: lfr.Key, clock: Clock
) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        add(store)
    before = digest(db.parent)
    other = lfr.Key.generate()
    with pytest.raises(WrongKeyError) as info:
        lfr.AlertStore(db, other, clock=clock)
    assert key.key_id in str(info.value)
    assert other.key_id in str(info.value)
    assert digest(db.parent) == before
    other.destroy()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, not a database\n" * 20,
        bytes(range(256)) * 16,
        b"SQLite format 3\x00" + bytes(50),
    ],
    ids=["empty", "text", "garbage", "short-header"],
)
def test_not_a_store_is_refused_untouched(
    db: Path, key: lfr.Key, content: bytes
) -> None:
    db.write_bytes(content)
    before = digest(db.parent)
    with pytest.raises(AlertStoreError, match="not an lfr alert store"):
        lfr.AlertStore(db, key)
    assert digest(db.parent) == before


def test_other_sqlite_database_is_refused_untouched(db: Path, key: lfr.Key) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = digest(db.parent)
    with pytest.raises(AlertStoreError, match="not an lfr alert store"):
        lfr.AlertStore(db, key)
    assert digest(db.parent) == before


def test_truncated_store_is_refused_untouched(
    db: Path, key: lfr.Key, clock: Clock
) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        for seed in range(10):
            add(store, seed, crop=random_crop(seed, 64, 64))
    data = db.read_bytes()
    assert len(data) > 8192
    db.write_bytes(data[: len(data) // 2])
    before = digest(db.parent)
    with pytest.raises(AlertStoreError, match="damaged"):
        lfr.AlertStore(db, key, clock=clock)
    assert digest(db.parent) == before


def test_damaged_pages_are_refused_untouched(
    db: Path, key: lfr.Key, clock: Clock
) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        for seed in range(10):
            add(store, seed, crop=random_crop(seed, 64, 64))
    data = bytearray(db.read_bytes())
    page = 4096
    data[page : 3 * page] = bytes(range(256)) * (2 * page // 256)  # schema/meta pages
    db.write_bytes(bytes(data))
    before = digest(db.parent)
    with pytest.raises(AlertStoreError):
        lfr.AlertStore(db, key, clock=clock)
    assert digest(db.parent) == before


def test_unknown_format_version_is_refused_untouched(
    db: Path, key: lfr.Key, clock: Clock
) -> None:
    lfr.AlertStore(db, key, clock=clock).close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    before = digest(db.parent)
    with pytest.raises(AlertStoreError, match="format version 2"):
        lfr.AlertStore(db, key, clock=clock)
    assert digest(db.parent) == before


def test_altered_meta_is_refused(db: Path, key: lfr.Key, clock: Clock) -> None:
    lfr.AlertStore(db, key, clock=clock).close()
    edit(db, "UPDATE meta SET value = ? WHERE name = 'store_id'", str(uuid.uuid4()))
    with pytest.raises(AlertStoreError, match="metadata was altered"):
        lfr.AlertStore(db, key, clock=clock)


def test_store_files_and_repr(store: lfr.AlertStore, db: Path, key: lfr.Key) -> None:
    add(store, 1, subject_id="SUBJECT-in-repr?")
    text = repr(store)
    assert text == f"AlertStore(path={str(db)!r}, key_id={key.key_id!r}, alerts=1)"
    assert "SUBJECT" not in text
    assert db.stat().st_mode & 0o777 == 0o600
    store.close()
    assert "closed" in repr(store)
    with pytest.raises(ValueError, match="closed"):
        store.alerts()
    store.close()  # idempotent
    assert not [p for p in db.parent.iterdir() if p.name.startswith(".")]


def test_arguments_are_checked(db: Path, key: lfr.Key) -> None:
    with pytest.raises(TypeError, match="KeyProvider"):
        lfr.AlertStore(db, "secret")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RetentionPolicy"):
        lfr.AlertStore(db, key, policy={"alert_ttl": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        lfr.AlertStore(db, key, clock=lambda: datetime(2024, 1, 1))
    assert not db.exists()


# -- expiry, purge, holds, reviews -------------------------------------------------


def test_expired_is_refused_before_and_after_purge(
    store: lfr.AlertStore, clock: Clock
) -> None:
    old = add(store, 1)
    clock.advance(TTL - timedelta(microseconds=1))
    store.get(old.alert_id)
    young = add(store, 2)
    clock.advance(timedelta(microseconds=1))
    for read in (store.get, store._crop, store._crop_image, store.holds):
        with pytest.raises(RetentionError, match="expired"):
            read(old.alert_id)
    assert [a.alert_id for a in store.alerts()] == [young.alert_id]
    assert len(store) == 1
    assert store._purge() == [old.alert_id]
    for read in (store.get, store._crop, store._crop_image, store.holds):
        with pytest.raises(RetentionError, match="purged"):
            read(old.alert_id)
    with pytest.raises(KeyError):
        store.get(str(uuid.uuid4()))
    assert store.get(young.alert_id) == young


def test_purge_is_idempotent_and_opening_alone_never_purges(
    db: Path, key: lfr.Key, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        a, b = add(store, 1), add(store, 2)
        clock.advance(TTL)
        c = add(store, 3)
        assert store._purge() == [a.alert_id, b.alert_id]
        assert store._purge() == []
        assert store.alerts() == [c]
        clock.advance(TTL)
    with lfr.AlertStore(db, key, clock=clock) as store:  # opening alone: no purge
        assert not store.purging
        with pytest.raises(RetentionError, match="expired"):
            store.get(c.alert_id)
        assert store.alerts() == []
        assert "does not purge its 1 expired alert" in caplog.text
        assert store._purge() == [c.alert_id]
        with pytest.raises(RetentionError, match="purged"):
            store.get(c.alert_id)
    conn = sqlite3.connect(db)
    counts = [
        conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in (
            "alerts",
            "holds",
            "reviews",
            "tombstones",
        )
    ]
    conn.close()
    assert counts == [0, 0, 0, 3]


def test_an_interrupted_purge_is_finished(db: Path, key: lfr.Key, clock: Clock) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        a, b = add(store, 1), add(store, 2)
    # A purge killed between destroying the key and deleting the row.
    edit(db, "UPDATE alerts SET wrapped_key = NULL WHERE alert_id = ?", a.alert_id)
    with lfr.AlertStore(db, key, clock=clock) as store:
        with pytest.raises(RetentionError, match="purged"):
            store.get(a.alert_id)
        assert store.alerts() == [b]
        assert store._purge() == [a.alert_id]  # the purge finishes it


def test_hold_keeps_an_alert_and_is_recorded(
    store: lfr.AlertStore, clock: Clock, db: Path
) -> None:
    a = add(store, 1)
    kept = add(store, 2)
    until = T0 + timedelta(days=10)
    held = store._hold(kept.alert_id, "case 2024/17", until, by="sgt-4")
    assert (held.held_until, held.hold_reason) == (until, "case 2024/17")
    clock.advance(timedelta(days=2))
    assert store._purge() == [a.alert_id]
    assert store.get(kept.alert_id).held_until == until
    np.testing.assert_array_equal(store._crop_image(kept.alert_id), random_crop(2))
    (entry,) = store.holds(kept.alert_id)
    assert (entry.action, entry.reason, entry.until, entry.by) == (
        "hold",
        "case 2024/17",
        until,
        "sgt-4",
    )
    assert entry.time == T0
    # Renewed from day 2 by a new hold, then the hold ends.
    store._hold(kept.alert_id, "case 2024/17 (renewed)", until + timedelta(days=5))
    assert len(store.holds(kept.alert_id)) == 2
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM holds").fetchone()[0] == 2
    conn.close()
    clock.now = until + timedelta(days=5)
    with pytest.raises(RetentionError, match="expired"):
        store.get(kept.alert_id)
    assert store._purge() == [kept.alert_id]


def test_hold_is_validated(store: lfr.AlertStore, clock: Clock) -> None:
    policy = store.policy
    a = add(store, 1)
    with pytest.raises(ValueError, match="reason must not be empty"):
        store._hold(a.alert_id, "  ", T0 + timedelta(days=1))
    with pytest.raises(TypeError, match="reason must be a str"):
        store._hold(a.alert_id, None, T0 + timedelta(days=1))  # type: ignore[arg-type]
    for blank in (".", "-", " - ", "…"):
        with pytest.raises(ValueError, match="reason in words"):
            store._hold(a.alert_id, blank, T0 + timedelta(days=1))
    with pytest.raises(ValueError, match="in the future"):
        store._hold(a.alert_id, "case", T0)
    with pytest.raises(ValueError, match="at most"):
        store._hold(a.alert_id, "case", T0 + policy.max_hold + timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        store._hold(a.alert_id, "case", datetime(2030, 1, 1))
    with pytest.raises(KeyError):
        store._hold(str(uuid.uuid4()), "case", T0 + timedelta(days=1))
    assert store.holds(a.alert_id) == ()
    store._hold(a.alert_id, "case", T0 + policy.max_hold)  # the limit is allowed
    clock.advance(policy.max_hold)
    with pytest.raises(RetentionError, match="expired"):  # too late to hold again
        store._hold(a.alert_id, "case", clock.now + timedelta(days=1))


def test_release(store: lfr.AlertStore, clock: Clock) -> None:
    a = add(store, 1)
    with pytest.raises(ValueError, match="not on hold"):
        store._release(a.alert_id)
    store._hold(a.alert_id, "case", T0 + timedelta(days=3))
    clock.advance(timedelta(days=2))  # past its expiry, kept by the hold
    store.get(a.alert_id)
    store._release(a.alert_id, by="sgt-4")
    with pytest.raises(RetentionError, match="expired"):
        store.get(a.alert_id)
    assert store._purge() == [a.alert_id]


def test_release_before_expiry_returns_to_normal_expiry(
    store: lfr.AlertStore, clock: Clock
) -> None:
    a = add(store, 1)
    store._hold(a.alert_id, "case", T0 + timedelta(days=3))
    store._release(a.alert_id)
    got = store.get(a.alert_id)
    assert got.held_until is None
    assert got.hold_reason is None
    assert [h.action for h in store.holds(a.alert_id)] == ["hold", "release"]
    clock.advance(TTL)
    assert store._purge() == [a.alert_id]


def test_reviews_are_recorded_and_counted_once(store: lfr.AlertStore) -> None:
    a = add(store, 1)
    store._review(a.alert_id, "officer-1", "inconclusive")
    store._review(a.alert_id, "officer-1", "confirmed", note="second look")
    got = store._review(a.alert_id, "officer-2", "confirmed")
    assert [(r.reviewer, r.decision) for r in got.reviews] == [
        ("officer-1", "inconclusive"),
        ("officer-1", "confirmed"),
        ("officer-2", "confirmed"),
    ]
    assert got.reviews[1].note == "second look"
    assert got.decisions == {"officer-1": "confirmed", "officer-2": "confirmed"}
    assert store.get(a.alert_id) == got
    with pytest.raises(ValueError, match="decision"):
        store._review(a.alert_id, "officer-3", "maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reviewer"):
        store._review(a.alert_id, "", "confirmed")
    with pytest.raises(ValueError, match="timezone-aware"):
        Review("officer", "confirmed", datetime(2024, 1, 1))


# -- input validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"score": float("nan")}, ValueError, "finite"),
        ({"score": True}, TypeError, "number"),
        ({"score": "0.9"}, TypeError, "number"),
        ({"box": (0, 0, 10)}, ValueError, "4 values"),
        ({"box": (10, 0, 5, 5)}, ValueError, "x1 <= x2"),
        ({"box": (0, 0, float("inf"), 5)}, ValueError, "finite"),
        ({"box": "0 0 1 1"}, TypeError, "box"),
        ({"crop": np.zeros((0, 4, 3), np.uint8)}, ValueError, "empty"),
        ({"crop": np.zeros((4, 4), np.uint8)}, ValueError, "shape"),
        ({"crop": np.zeros((4, 4, 3), np.float32)}, TypeError, "uint8"),
        ({"crop": b""}, ValueError, "empty"),
        ({"crop": b"GIF89a...."}, ValueError, "neither PNG nor JPEG"),
        ({"crop": [[1, 2, 3]]}, TypeError, "crop"),
        ({"subject_id": ""}, ValueError, "subject_id"),
        ({"camera_id": 3}, TypeError, "camera_id"),
        ({"time": datetime(2024, 5, 1)}, ValueError, "timezone-aware"),
        ({"time": T0 - TTL}, ValueError, "would have expired"),
        ({"time": T0 + timedelta(minutes=2)}, ValueError, "ahead of the store"),
        ({"image_format": "gif"}, ValueError, "image_format"),
    ],
)
def test_add_rejects_bad_input(
    store: lfr.AlertStore, overrides: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        add(store, 1, **overrides)
    assert "subject-1" not in str(info.value)
    assert len(store) == 0


# -- privacy of messages -------------------------------------------------------------


def test_no_subject_id_in_messages_reprs_or_logs(
    store: lfr.AlertStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "SUBJECT-7f3a-name"
    caplog.set_level(logging.DEBUG, logger="lfr")
    a = add(store, 1, subject_id=secret)
    store._hold(a.alert_id, "case", T0 + timedelta(days=2))
    store._review(a.alert_id, "officer", "confirmed")
    store._release(a.alert_id)
    messages = [repr(store)]
    clock.advance(TTL)
    calls: list[Callable[[], object]] = [
        lambda: store.get(a.alert_id),
        lambda: store._hold(a.alert_id, "case", clock.now + timedelta(hours=1)),
        lambda: store._review(a.alert_id, "officer", "confirmed"),
    ]
    for call in calls:
        with pytest.raises(RetentionError) as info:
            call()
        messages.append(str(info.value))
    store._purge()
    with pytest.raises(RetentionError) as purged:
        store._crop(a.alert_id)
    messages.append(str(purged.value))
    messages.extend(r.getMessage() for r in caplog.records)
    assert any("purge" in m for m in messages)
    for message in messages:
        assert secret not in message


# -- tampering -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["record", "crop", "wrapped_key"])
def test_a_flipped_ciphertext_byte_is_detected(
    db: Path, key: lfr.Key, clock: Clock, name: str
) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        a, b = add(store, 1), add(store, 2)
    blob = bytearray(column(db, name, a.alert_id))
    blob[len(blob) // 2] ^= 0x01
    edit(
        db, f"UPDATE alerts SET {name} = ? WHERE alert_id = ?", bytes(blob), a.alert_id
    )
    with lfr.AlertStore(db, key, clock=clock) as store:
        read = store._crop if name == "crop" else store.get
        with pytest.raises(AlertStoreError, match="altered"):
            read(a.alert_id)
        assert store.get(b.alert_id) == b


def test_a_wrapped_key_moved_to_another_alert_is_detected(
    db: Path, key: lfr.Key, clock: Clock
) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        a, b = add(store, 1), add(store, 2)
    wrapped = column(db, "wrapped_key", a.alert_id)
    edit(
        db, "UPDATE alerts SET wrapped_key = ? WHERE alert_id = ?", wrapped, b.alert_id
    )
    with lfr.AlertStore(db, key, clock=clock) as store:
        with pytest.raises(AlertStoreError, match="altered"):
            store.get(b.alert_id)
        with pytest.raises(AlertStoreError):
            store.alerts()
        store.get(a.alert_id)


def test_a_whole_row_moved_to_another_id_is_detected(
    db: Path, key: lfr.Key, clock: Clock
) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        a = add(store, 1)
    edit(db, "UPDATE alerts SET alert_id = ? WHERE alert_id = ?", "forged", a.alert_id)
    store = lfr.AlertStore(db, key, clock=clock)
    with store, pytest.raises(AlertStoreError, match="altered"):
        store.get("forged")


def test_an_extended_expiry_is_detected(db: Path, key: lfr.Key, clock: Clock) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        a = add(store, 1)
    edit(
        db,
        "UPDATE alerts SET expires = expires + 3600000000 WHERE alert_id = ?",
        a.alert_id,
    )
    clock.advance(TTL)
    store = lfr.AlertStore(db, key, clock=clock)
    with store, pytest.raises(AlertStoreError, match="altered"):
        store.get(a.alert_id)


def test_a_forged_hold_is_detected_and_keeps_nothing(
    db: Path, key: lfr.Key, clock: Clock
) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        a = add(store, 1)
        store._hold(a.alert_id, "case", T0 + timedelta(days=2))
    far = int(
        (T0 + timedelta(days=30) - datetime(1970, 1, 1, tzinfo=timezone.utc))
        / timedelta(microseconds=1)
    )
    edit(db, "UPDATE holds SET until = ?", far)
    with lfr.AlertStore(db, key, clock=clock) as store:
        with pytest.raises(AlertStoreError, match="hold history"):
            store.get(a.alert_id)
        clock.advance(timedelta(days=3))  # past expiry and the real hold
        assert store._purge() == [a.alert_id]


def test_a_tampered_review_is_detected(db: Path, key: lfr.Key, clock: Clock) -> None:
    with lfr.AlertStore(db, key, clock=clock) as store:
        a, b = add(store, 1), add(store, 2)
        store._review(a.alert_id, "officer", "false_alert")
    edit(db, "UPDATE reviews SET alert_id = ?", b.alert_id)
    store = lfr.AlertStore(db, key, clock=clock)
    with store, pytest.raises(AlertStoreError, match="reviews"):
        store.get(b.alert_id)


# -- what is on disk -----------------------------------------------------------------


def runs(data: bytes, width: int, count: int) -> list[bytes]:
    step = max(1, (len(data) - width) // count)
    return [data[i : i + width] for i in range(0, len(data) - width + 1, step)][:count]


def test_no_plaintext_on_disk_and_purged_ciphertext_leaves_the_file(
    db: Path, key: lfr.Key, clock: Clock
) -> None:
    store = lfr.AlertStore(db, key, clock=clock)
    secrets: list[bytes] = []
    old = []
    for seed in range(6):
        crop = random_crop(seed, 48, 48)
        ok, png = cv2.imencode(".png", crop)
        assert ok
        subject = f"subject-{uuid.uuid4()}"
        old.append(add(store, seed, crop=crop, subject_id=subject))
        secrets += runs(crop.tobytes(), 64, 8) + runs(png.tobytes(), 64, 8)
        secrets += [subject.encode(), png.tobytes()[:16]]
    clock.advance(timedelta(hours=1))
    young = add(store, 99)
    shredded = [
        run
        for a in old
        for name in ("record", "crop", "wrapped_key")
        for run in runs(column(db, name, a.alert_id), 32, 3)
    ]
    live = runs(column(db, "crop", young.alert_id), 32, 3)

    def disk() -> bytes:
        return b"".join(files_of(db.parent).values())

    def check_no_plaintext() -> None:
        raw = disk()
        assert b"\x89PNG" not in raw
        for secret in secrets:
            assert secret not in raw

    check_no_plaintext()  # while open: main file, -wal and -shm
    raw = disk()
    assert all(run in raw for run in shredded + live)  # the scan can see them
    clock.advance(TTL - timedelta(minutes=30))
    assert store._purge() == [a.alert_id for a in old]
    check_no_plaintext()
    raw = disk()
    for run in shredded:
        assert run not in raw
    assert all(run in raw for run in live)
    store.close()
    raw = disk()
    assert not any(run in raw for run in shredded)


# -- threads -------------------------------------------------------------------------


def test_a_reader_thread_and_a_writer_thread(store: lfr.AlertStore) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for seed in range(30):
                add(store, seed, crop=random_crop(seed, 8, 8))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                for a in store.alerts():
                    store._crop(a.alert_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store) == 30


# -- the policy ----------------------------------------------------------------------


def test_policy_defaults_and_validation() -> None:
    policy = lfr.RetentionPolicy()
    assert policy.alert_ttl == timedelta(hours=24)
    assert policy.max_hold == timedelta(days=31)
    assert policy.purge_interval == timedelta(minutes=5)
    assert policy.watchlist_ttl_after_stop == timedelta(hours=24)
    assert policy.two_person_review is True
    with pytest.raises(ValueError, match="alert_ttl must be positive"):
        lfr.RetentionPolicy(alert_ttl=timedelta(0))
    with pytest.raises(ValueError, match="max_hold must be positive"):
        lfr.RetentionPolicy(max_hold=timedelta(seconds=-1))
    with pytest.raises(TypeError, match="timedelta"):
        lfr.RetentionPolicy(purge_interval=300)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be negative"):
        lfr.RetentionPolicy(watchlist_ttl_after_stop=timedelta(seconds=-1))
    lfr.RetentionPolicy(watchlist_ttl_after_stop=timedelta(0))
    with pytest.raises(TypeError, match="bool"):
        lfr.RetentionPolicy(two_person_review=1)  # type: ignore[arg-type]


durations = st.timedeltas(
    min_value=timedelta(microseconds=1), max_value=timedelta(days=3650)
)


@given(
    ttl=durations,
    hold=durations,
    interval=durations,
    stop=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)),
    two=st.booleans(),
)
def test_policy_json_round_trip(
    ttl: timedelta, hold: timedelta, interval: timedelta, stop: timedelta, two: bool
) -> None:
    policy = lfr.RetentionPolicy(ttl, hold, interval, stop, two)
    assert lfr.RetentionPolicy.from_json(policy.to_json()) == policy


def test_policy_from_json_is_strict() -> None:
    assert lfr.RetentionPolicy.from_json({}) == lfr.RetentionPolicy()
    with pytest.raises(ValueError, match="unknown"):
        lfr.RetentionPolicy.from_json({"alert_tll_seconds": 60})
    with pytest.raises(ValueError, match="finite"):
        lfr.RetentionPolicy.from_json({"alert_ttl_seconds": "60"})
    with pytest.raises(ValueError, match="positive"):
        lfr.RetentionPolicy.from_json({"alert_ttl_seconds": 0})
    with pytest.raises(ValueError, match="bool"):
        lfr.RetentionPolicy.from_json({"two_person_review": "yes"})
    with pytest.raises(ValueError, match="JSON object"):
        lfr.RetentionPolicy.from_json([])


@pytest.mark.parametrize(
    "module", [lfr.alerts.store, lfr.retention], ids=lambda m: m.__name__
)
def test_examples_run(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_improve_keeps_the_best_view(store: lfr.AlertStore, clock: Clock) -> None:
    a = add(store, 1)
    store._review(a.alert_id, "officer-1", "confirmed")
    better = random_crop(99, 50, 40)
    got = store._improve(
        a.alert_id, score=a.score + 0.1, box=(5, 6, 45, 56), crop=better
    )
    assert got.score == pytest.approx(a.score + 0.1)
    assert got.box == (5.0, 6.0, 45.0, 56.0)
    assert (got.alert_id, got.time, got.expires, got.subject_id) == (
        a.alert_id,
        a.time,
        a.expires,
        a.subject_id,
    )
    assert [r.reviewer for r in got.reviews] == ["officer-1"]
    np.testing.assert_array_equal(store._crop_image(a.alert_id), better)
    worse = store._improve(
        a.alert_id, score=a.score, box=(0, 0, 9, 9), crop=random_crop(5)
    )
    assert worse == got  # a lower score changes nothing
    np.testing.assert_array_equal(store._crop_image(a.alert_id), better)
    clock.now = a.expires + timedelta(seconds=1)
    with pytest.raises(RetentionError):
        store._improve(a.alert_id, score=0.99, box=(0, 0, 9, 9), crop=better)
    with pytest.raises(KeyError):
        store._improve("no-such-alert", score=0.99, box=(0, 0, 9, 9), crop=better)
