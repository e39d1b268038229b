"""lfr.audit: signing keys, events, the signed log, and how tampering shows."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import pickle
import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lfr
from lfr.audit import AuditLog, ChainProblem, PublicKey, Record, SigningKey, read_log
from lfr.audit.events import ANOMALY_KINDS, biometric_fields, check_event
from lfr.audit.log import canonical
from lfr.errors import AuditError, KeyFileError

T0 = datetime(2026, 11, 26, 22, 50, 48, 123456, tzinfo=timezone.utc)
SHA = "ab" * 32
KEY = SigningKey.generate()
OTHER = SigningKey.generate()


class Clock:
    """A clock that advances one second (and one microsecond) per reading."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self.readings: list[datetime] = []

    def __call__(self) -> datetime:
        self.readings.append(self.now)
        self.now += timedelta(seconds=1, microseconds=1)
        return self.readings[-1]


def events() -> list[tuple[str, dict[str, Any]]]:
    """A short deployment: every kind of record once or twice."""
    policy = lfr.RetentionPolicy()
    return [
        (
            "deployment_started",
            {
                "deployment_id": "d1",
                "camera_ids": ["cam-1", "cam-2"],
                "location": "Cardiff, Queen Street",
                "purpose": "wanted persons",
                "authorised_by": "Supt. Jones",
                "watchlist_sha256": SHA,
                "watchlist_size": 1200,
                "model_id": "dlib-resnet-v1",
                "threshold": 0.62,
                "policy": policy,
                "lfr_version": lfr.__version__,
            },
        ),
        (
            "watchlist_loaded",
            {
                "deployment_id": "d1",
                "watchlist_sha256": SHA,
                "watchlist_size": 1200,
                "model_id": "dlib-resnet-v1",
            },
        ),
        (
            "alert_raised",
            {
                "alert_id": "a1",
                "deployment_id": "d1",
                "camera_id": "cam-1",
                "subject_id": "s-17",
                "score": 0.71,
                "time": T0,
                "expires": T0 + timedelta(hours=24),
            },
        ),
        (
            "alert_reviewed",
            {"alert_id": "a1", "reviewer": "pc1", "decision": "confirmed"},
        ),
        (
            "alert_reviewed",
            {"alert_id": "a1", "reviewer": "pc2", "decision": "confirmed"},
        ),
        ("alert_actioned", {"alert_id": "a1", "action": "engaged", "by": "pc1"}),
        (
            "counters",
            {
                "deployment_id": "d1",
                "camera_id": "cam-1",
                "frames_processed": 9000,
                "frames_dropped": 3,
                "faces_detected": 420,
                "faces_skipped": 19,
                "faces_wiped": 400,
                "alerts": 1,
            },
        ),
        ("alert_purged", {"alert_id": "a1"}),
        ("deployment_stopped", {"deployment_id": "d1", "reason": "end of shift"}),
        ("watchlist_destroyed", {"watchlist_sha256": SHA, "deployment_id": "d1"}),
    ]


def write_log(path: Path, n: int | None = None, key: SigningKey = KEY) -> list[bytes]:
    """Writes log_created and the first ``n`` of :func:`events`; returns the lines."""
    with AuditLog.create(path, key, clock=Clock()) as log:
        for event, fields in events()[:n]:
            log.append(event, **fields)
    return path.read_bytes().splitlines(keepends=True)


def check(path: Path, key: SigningKey = KEY) -> tuple[list[Record], list[ChainProblem]]:
    return read_log(path, key.public_key())


def only_problem(
    path: Path, kind: str, line: int, key: SigningKey = KEY
) -> ChainProblem:
    """Asserts read_log stops at ``line`` with ``kind``, all before it verified."""
    records, problems = check(path, key)
    assert [(p.kind, p.line) for p in problems] == [(kind, line)], problems
    assert [r.line for r in records] == list(range(1, line))
    assert [r.seq for r in records] == list(range(line - 1))
    return problems[0]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


# -- round trip ----------------------------------------------------------------------


def test_round_trip_across_open(log_path: Path) -> None:
    clock = Clock()
    written: list[Record] = []
    with AuditLog.create(log_path, KEY, clock=clock) as log:
        assert log.last_seq == 0
        for event, fields in events()[:4]:
            written.append(log.append(event, **fields))
        assert log.last_seq == 4
    with AuditLog.open(log_path, KEY, clock=clock) as log:
        assert log.last_seq == 4
        for event, fields in events()[4:]:
            written.append(log.append(event, **fields))
    records, problems = check(log_path)
    assert problems == []
    assert [r.seq for r in records] == list(range(len(events()) + 1))
    assert [r.line for r in records] == [r.seq + 1 for r in records]
    assert [r.time for r in records] == clock.readings
    assert records[1:] == written
    assert [(r.event, dict(r.fields)) for r in records[1:]] == [
        (event, check_event(event, fields)) for event, fields in events()
    ]
    header = records[0]
    assert header.event == "log_created"
    assert (
        header.fields["public_key"] == base64.b64encode(KEY.public_key().raw).decode()
    )
    assert header.fields["lfr_version"] == lfr.__version__
    alert = records[3].fields
    assert alert["time"] == "2026-11-26T22:50:48.123456Z"
    assert alert["expires"] == "2026-11-27T22:50:48.123456Z"
    assert records[1].fields["policy"] == lfr.RetentionPolicy().to_json()


def test_record_format_is_canonical_and_chained(log_path: Path) -> None:
    lines = write_log(log_path, 3)
    prev = "0" * 64
    for seq, raw in enumerate(lines):
        assert raw.endswith(b"\n")
        obj = json.loads(raw)
        assert set(obj) == {"seq", "time", "event", "fields", "prev", "sig"}
        assert canonical(obj) == raw[:-1]
        assert obj["seq"] == seq
        assert obj["prev"] == prev
        body = canonical({k: v for k, v in obj.items() if k != "sig"})
        assert KEY.public_key().verify(base64.b64decode(obj["sig"]), body)
        prev = hashlib.sha256(raw[:-1]).hexdigest()


def test_files_and_modes(log_path: Path) -> None:
    write_log(log_path, 1)
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o640
    pub = log_path.with_name("audit.jsonl.pub")
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert PublicKey.load(pub) == KEY.public_key()
    assert sorted(p.name for p in log_path.parent.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.pub",
    ]


def test_create_refuses_an_existing_file(log_path: Path) -> None:
    log_path.write_bytes(b"keep me\n")
    with pytest.raises(FileExistsError, match=r"AuditLog\.open"):
        AuditLog.create(log_path, KEY)
    assert log_path.read_bytes() == b"keep me\n"
    assert not log_path.with_name("audit.jsonl.pub").exists()


def test_fsync_after_every_append(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    log = AuditLog.create(log_path, KEY, clock=Clock())
    try:
        monkeypatch.setattr(os, "fsync", counting_fsync)
        sizes: list[int] = []
        for event, fields in events():
            log.append(event, **fields)
            sizes.append(log_path.stat().st_size)
    finally:
        log.close()
    assert synced == sizes  # one fsync per append, once its line is written


def test_threads_append_one_chain(log_path: Path) -> None:
    with AuditLog.create(log_path, KEY) as log:

        def work(n: int) -> None:
            for i in range(25):
                log.append("alert_purged", alert_id=f"t{n}-{i}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    records, problems = check(log_path)
    assert problems == []
    assert [r.seq for r in records] == list(range(201))
    ids = {r.fields["alert_id"] for r in records[1:]}
    assert len(ids) == 200


def test_closed_log_refuses_appends(log_path: Path) -> None:
    log = AuditLog.create(log_path, KEY)
    log.close()
    log.close()
    assert log.closed
    with pytest.raises(ValueError, match="closed"):
        log.append("alert_purged", alert_id="a1")


def test_repr_and_pickle(log_path: Path) -> None:
    with AuditLog.create(log_path, KEY) as log:
        record = log.append(*events()[2][:1], **events()[2][1])
        assert KEY.key_id in repr(log)
        with pytest.raises(TypeError):
            pickle.dumps(log)
    assert "s-17" not in repr(record)  # no identities in reprs


# -- what append refuses ---------------------------------------------------------------


ALERT = dict(events()[2][1])


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        ("alert_exported", {"alert_id": "a1", "by": "dc-9"}),
        ("deployment_stopped", {"deployment_id": "d1", "reason": "crashed"}),
        ("deployment_stopped", {"deployment_id": "d1", "last_record": 12}),
        ("watchlist_destroyed", {"watchlist_sha256": SHA, "cause": "process_ended"}),
        ("watchlist_destroyed", {"watchlist_sha256": SHA, "cause": "destroyed"}),
        *(("anomaly", {"kind": kind}) for kind in ANOMALY_KINDS),
    ],
)
def test_new_events_and_fields_are_accepted(
    log_path: Path, event: str, fields: dict[str, Any]
) -> None:
    with AuditLog.create(log_path, KEY) as log:
        log.append(event, **fields)
    records, problems = check(log_path)
    assert problems == []
    assert records[1].fields == fields


def test_the_new_anomaly_kinds_are_known() -> None:
    assert {"purge_incomplete", "alert_lost", "trail_reconciled"} <= set(ANOMALY_KINDS)


@pytest.mark.parametrize(
    ("event", "fields", "match"),
    [
        ("face_seen", {"alert_id": "a1"}, "unknown audit event"),
        ("log_created", {}, "only by AuditLog.create"),
        ("alert_purged", {}, "missing fields alert_id"),
        ("alert_purged", {"alert_id": ""}, "must not be empty"),
        ("alert_purged", {"alert_id": 7}, "must be a string"),
        ("alert_purged", {"alert_id": "a1", "note": "x"}, "unknown fields note"),
        ("alert_raised", {**ALERT, "score": "high"}, "score must be a number"),
        ("alert_raised", {**ALERT, "score": float("nan")}, "must be finite"),
        ("alert_raised", {**ALERT, "time": T0.replace(tzinfo=None)}, "timezone-aware"),
        ("alert_raised", {**ALERT, "expires": "tomorrow"}, "not an ISO 8601 time"),
        (
            "alert_reviewed",
            {"alert_id": "a", "reviewer": "r", "decision": "ok"},
            "one of",
        ),
        (
            "alert_held",
            {"alert_id": "a", "reason": " ", "until": T0, "by": "x"},
            "empty",
        ),
        ("watchlist_destroyed", {"watchlist_sha256": "AB" * 32}, "64 lowercase hex"),
        ("counters", {**events()[6][1], "faces_wiped": -1}, "must not be negative"),
        ("counters", {**events()[6][1], "alerts": True}, "must be an int"),
        ("counters", {**events()[6][1], "alerts": 1.0}, "must be an int"),
        ("anomaly", {"kind": "other", "detail": "x" * 501}, "longer than 500"),
        ("anomaly", {"kind": "alert_leaked"}, "one of"),
        ("alert_exported", {"alert_id": "a1"}, "missing fields by"),
        (
            "watchlist_destroyed",
            {"watchlist_sha256": "ab" * 32, "cause": "wiped"},
            "one of destroyed, process_ended",
        ),
        (
            "deployment_stopped",
            {"deployment_id": "d1", "last_record": -1},
            "must not be negative",
        ),
        (
            "deployment_started",
            {**events()[0][1], "policy": {"alert_ttl_seconds": -1}},
            "not a retention policy",
        ),
        ("deployment_started", {**events()[0][1], "camera_ids": []}, "non-empty list"),
    ],
)
def test_append_refuses_bad_fields(
    log_path: Path, event: str, fields: dict[str, Any], match: str
) -> None:
    with AuditLog.create(log_path, KEY) as log:
        before = log_path.read_bytes()
        with pytest.raises(ValueError, match=match):
            log.append(event, **fields)
        assert log_path.read_bytes() == before
        assert log.last_seq == 0


EMBEDDING = np.linspace(-1, 1, 128, dtype=np.float32)


@pytest.mark.parametrize(
    ("event", "fields", "offender"),
    [
        ("alert_purged", {"alert_id": "a1", "embedding": [0.1, 0.2]}, "embedding"),
        ("alert_purged", {"alert_id": "a1", "face_Template": "x"}, "face_Template"),
        ("alert_purged", {"alert_id": "a1", "crop_png": "x"}, "crop_png"),
        ("alert_purged", {"alert_id": EMBEDDING}, "alert_id"),
        ("alert_purged", {"alert_id": EMBEDDING.tobytes()}, "alert_id"),
        ("alert_purged", {"alert_id": bytearray(b"abc")}, "alert_id"),
        ("alert_purged", {"alert_id": "x" * 1001}, "alert_id"),
        (
            "deployment_started",
            {**events()[0][1], "camera_ids": [float(v) for v in EMBEDDING]},
            "camera_ids",
        ),
        (
            "deployment_started",
            {**events()[0][1], "camera_ids": [[0.5, 0.5]] * 5},
            "camera_ids",
        ),
        (
            "deployment_started",
            {**events()[0][1], "policy": {"landmarks": [1, 2]}},
            "policy.landmarks",
        ),
    ],
)
def test_append_refuses_biometric_content(
    log_path: Path, event: str, fields: dict[str, Any], offender: str
) -> None:
    with AuditLog.create(log_path, KEY) as log:
        before = log_path.read_bytes()
        with pytest.raises(ValueError, match="biometric") as info:
            log.append(event, **fields)
        assert offender in str(info.value)
        assert "0.1" not in str(info.value)  # names, never values
        assert log_path.read_bytes() == before
        assert log.last_seq == 0


def test_biometric_fields_names_the_offenders() -> None:
    fields = {
        "alert_id": "a1",
        "vector": "x",
        "scores": [0.1] * 8,  # eight numbers are allowed
        "many": list(range(9)),
        "nested": {"ok": 1, "pixels": [1]},
        "items": ["ok", np.zeros(3)],
        "flag": True,
    }
    assert biometric_fields(fields) == ["vector", "many", "nested.pixels", "items[1]"]
    assert biometric_fields({"camera_ids": ["a"] * 50}) == []


def test_check_event_converts_times_to_utc_z() -> None:
    plus2 = timezone(timedelta(hours=2))
    out = check_event(
        "alert_held",
        {
            "alert_id": "a1",
            "reason": "case 42",
            "until": datetime(2026, 1, 1, 12, 0, tzinfo=plus2),
            "by": "sgt",
        },
    )
    assert out["until"] == "2026-01-01T10:00:00.000000Z"
    out = check_event(
        "alert_held",
        {"alert_id": "a1", "reason": "r", "until": "2026-01-01T12:00+02:00", "by": "s"},
    )
    assert out["until"] == "2026-01-01T10:00:00.000000Z"
    out = check_event("alert_raised", {**ALERT, "score": np.float32(0.5)})
    assert out["score"] == 0.5
    assert type(out["score"]) is float


def test_clock_must_be_aware(log_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        AuditLog.create(log_path, KEY, clock=lambda: datetime(2026, 1, 1))
    assert not log_path.exists()  # nothing left behind


# -- tampering ----------------------------------------------------------------------


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def replace_in_line(line: bytes, old: bytes, new: bytes) -> bytes:
    assert line.count(old) == 1
    return line.replace(old, new)


@pytest.mark.parametrize(
    ("line", "old", "new"),
    [
        (4, b'"subject_id":"s-17"', b'"subject_id":"s-18"'),  # a field value
        (4, b'"score":0.71', b'"score":0.91'),
        (2, b'"watchlist_size":1200', b'"watchlist_size":1201'),
        (2, b'"two_person_review":true', b'"two_person_review":fals'),  # no JSON
        (3, b'"seq":2', b'"seq":9'),
        (5, b'"event":"alert_reviewed"', b'"event":"alert_reviewer"'),
        (1, b'"lfr_version":"', b'"lfr_version":"x'),  # record 0, same key
    ],
)
def test_changed_field_is_caught(
    log_path: Path, line: int, old: bytes, new: bytes
) -> None:
    lines = write_log(log_path)
    lines[line - 1] = replace_in_line(lines[line - 1], old, new)
    rewrite(log_path, lines)
    kind = "malformed" if new.endswith(b"fals") else "bad_signature"
    problem = only_problem(log_path, kind, line)
    assert f"line {line}" in problem.message


@pytest.mark.parametrize("line", [1, 3, 11])
def test_changed_time_is_caught(log_path: Path, line: int) -> None:
    lines = write_log(log_path)
    obj = json.loads(lines[line - 1])
    time = obj["time"]
    changed = time[:18] + str((int(time[18]) + 1) % 10) + time[19:]  # one second
    lines[line - 1] = replace_in_line(
        lines[line - 1], f'"time":"{time}"'.encode(), f'"time":"{changed}"'.encode()
    )
    rewrite(log_path, lines)
    problem = only_problem(log_path, "bad_signature", line)
    assert "modified" in problem.message


@pytest.mark.parametrize(("line", "index"), [(2, 0), (6, 40), (11, 84)])
def test_changed_signature_is_caught(log_path: Path, line: int, index: int) -> None:
    lines = write_log(log_path)
    sig = json.loads(lines[line - 1])["sig"]
    flipped = sig[:index] + ("A" if sig[index] != "A" else "B") + sig[index + 1 :]
    lines[line - 1] = replace_in_line(lines[line - 1], sig.encode(), flipped.encode())
    rewrite(log_path, lines)
    only_problem(log_path, "bad_signature", line)


def test_same_signature_written_differently_is_caught(log_path: Path) -> None:
    # The last base64 digit before "==" carries 4 unused bits: changing them keeps
    # the decoded signature, so only the canonical-form check can see it.
    lines = write_log(log_path)
    sig = json.loads(lines[4])["sig"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(sig[-3]) ^ 1]
    flipped = sig[:-3] + last + "=="
    assert base64.b64decode(flipped) == base64.b64decode(sig)
    lines[4] = replace_in_line(lines[4], sig.encode(), flipped.encode())
    rewrite(log_path, lines)
    only_problem(log_path, "malformed", 5)


def test_same_value_written_differently_is_caught(log_path: Path) -> None:
    with AuditLog.create(log_path, KEY) as log:
        log.append(*events()[2][:1], **{**events()[2][1], "score": 1e-05})
        log.append("alert_purged", alert_id="a1")
    lines = log_path.read_bytes().splitlines(keepends=True)
    lines[1] = replace_in_line(lines[1], b'"score":1e-05', b'"score":1E-05')
    rewrite(log_path, lines)
    assert json.loads(lines[1])["fields"]["score"] == 1e-05
    problem = only_problem(log_path, "malformed", 2)
    assert "canonical" in problem.message


@pytest.mark.parametrize(
    ("removed", "kind", "line"),
    [
        (1, "bad_sequence", 1),  # the first record (log_created)
        (5, "bad_sequence", 5),  # a middle one
        (10, "bad_sequence", 10),  # the last but one
    ],
)
def test_removed_record_is_caught(
    log_path: Path, removed: int, kind: str, line: int
) -> None:
    lines = write_log(log_path)
    assert len(lines) == 11
    del lines[removed - 1]
    rewrite(log_path, lines)
    problem = only_problem(log_path, kind, line)
    assert "removed" in problem.message


def test_removed_record_with_chain_kept_in_sequence_is_a_broken_chain(
    tmp_path: Path,
) -> None:
    # Two logs by the same key: record 4 of the second follows record 3 of the
    # first in sequence and verifies, but not in the chain.
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    lines_a = write_log(a)
    lines_b = write_log(b)
    lines_a[4] = lines_b[4]
    rewrite(a, lines_a)
    problem = only_problem(a, "broken_chain", 5)
    assert "previous record" in problem.message


def test_inserted_copy_is_caught(log_path: Path) -> None:
    lines = write_log(log_path)
    lines.insert(4, lines[1])
    rewrite(log_path, lines)
    only_problem(log_path, "bad_sequence", 5)


def test_inserted_forgery_is_caught(log_path: Path) -> None:
    lines = write_log(log_path)
    # Right place in the sequence and the chain, but signed by another key.
    body = {
        "seq": 4,
        "time": "2026-11-26T22:50:52.123460Z",
        "event": "alert_purged",
        "fields": {"alert_id": "a1"},
        "prev": hashlib.sha256(lines[3][:-1]).hexdigest(),
    }
    sig = base64.b64encode(OTHER.sign(canonical(body))).decode()
    lines.insert(4, canonical({**body, "sig": sig}) + b"\n")
    rewrite(log_path, lines)
    only_problem(log_path, "bad_signature", 5)


@pytest.mark.parametrize("first", [1, 4, 9])
def test_swapped_records_are_caught(log_path: Path, first: int) -> None:
    lines = write_log(log_path)
    lines[first], lines[first + 1] = lines[first + 1], lines[first]
    rewrite(log_path, lines)
    only_problem(log_path, "bad_sequence", first + 1)


@pytest.mark.parametrize("keep", [1, 30, -2])
def test_torn_last_line_is_truncated(log_path: Path, keep: int) -> None:
    lines = write_log(log_path)
    lines[-1] = lines[-1][:keep]
    rewrite(log_path, lines)
    problem = only_problem(log_path, "truncated", 11)
    assert "line 11" in problem.message
    assert "incomplete" in problem.message


def test_file_cut_inside_an_earlier_line_is_truncated(log_path: Path) -> None:
    lines = write_log(log_path)
    rewrite(log_path, [*lines[:6], lines[6][:50]])
    only_problem(log_path, "truncated", 7)


def test_part_of_a_middle_line_cut_out_is_malformed(log_path: Path) -> None:
    lines = write_log(log_path)
    lines[6] = lines[6][:50] + b"\n"
    rewrite(log_path, lines)
    only_problem(log_path, "malformed", 7)


def test_missing_final_newline_is_truncated(log_path: Path) -> None:
    # The writer puts a record and its newline in one write: a line without its
    # newline was never acknowledged, however complete it looks.
    lines = write_log(log_path)
    lines[-1] = lines[-1][:-1]
    rewrite(log_path, lines)
    only_problem(log_path, "truncated", 11)


def test_wrong_public_key(log_path: Path) -> None:
    write_log(log_path)
    problem = only_problem(log_path, "wrong_key", 1, key=OTHER)
    assert KEY.key_id in problem.message
    assert OTHER.key_id in problem.message


def test_changed_key_in_record_0_is_a_bad_signature(log_path: Path) -> None:
    lines = write_log(log_path, 2)
    named = base64.b64encode(KEY.public_key().raw).decode()
    changed = base64.b64encode(OTHER.public_key().raw).decode()
    lines[0] = replace_in_line(lines[0], named.encode(), changed.encode())
    rewrite(log_path, lines)
    only_problem(log_path, "bad_signature", 1)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello\n", b"hello", b'{"a":1}\n', b"\n\n", b"[1,2]\n"],
)
def test_not_a_log(log_path: Path, content: bytes) -> None:
    log_path.write_bytes(content)
    only_problem(log_path, "not_a_log", 1)


def test_log_without_log_created_is_not_a_log(log_path: Path) -> None:
    body = {
        "seq": 0,
        "time": "2026-11-26T22:50:52.123460Z",
        "event": "alert_purged",
        "fields": {"alert_id": "a1"},
        "prev": "0" * 64,
    }
    sig = base64.b64encode(KEY.sign(canonical(body))).decode()
    log_path.write_bytes(canonical({**body, "sig": sig}) + b"\n")
    only_problem(log_path, "not_a_log", 1)


def test_read_log_needs_a_public_key(log_path: Path) -> None:
    write_log(log_path, 1)
    with pytest.raises(TypeError, match="PublicKey"):
        read_log(log_path, KEY)  # type: ignore[arg-type]


# -- continuing a log -----------------------------------------------------------------


def test_open_recovers_a_torn_tail(log_path: Path) -> None:
    lines = write_log(log_path, 5)
    partial = lines[3][:40]
    with log_path.open("ab") as f:
        f.write(partial)
    with AuditLog.open(log_path, KEY, clock=Clock(T0 + timedelta(days=1))) as log:
        assert log.last_seq == 6
        log.append("alert_purged", alert_id="a1")
    records, problems = check(log_path)
    assert problems == []
    assert [r.seq for r in records] == list(range(8))
    assert log_path.read_bytes().startswith(b"".join(lines))
    recovered = records[6]
    assert recovered.event == "anomaly"
    assert recovered.fields["kind"] == "log_recovered"
    assert f"discarded {len(partial)} bytes" in recovered.fields["detail"]
    assert "line 7" in recovered.fields["detail"]
    rest = log_path.read_bytes()[len(b"".join(lines)) :]
    assert rest.startswith(b'{"event":"anomaly"')  # the partial line is gone
    assert rest.count(b"\n") == 2


def test_open_without_recovery_writes_nothing(log_path: Path) -> None:
    write_log(log_path, 2)
    before = log_path.read_bytes()
    with AuditLog.open(log_path, KEY) as log:
        assert log.last_seq == 2
        assert log.public_key == KEY.public_key()
        assert log.path == log_path
    assert log_path.read_bytes() == before


@pytest.mark.parametrize("damage", ["flip", "remove", "wrong_key", "torn_first"])
def test_open_refuses_a_damaged_log(log_path: Path, damage: str) -> None:
    lines = write_log(log_path)
    key = KEY
    if damage == "flip":
        lines[3] = lines[3].replace(b"s-17", b"s-71")
    elif damage == "remove":
        del lines[5]
    elif damage == "wrong_key":
        key = OTHER
    else:
        lines = [lines[0][:30]]
    rewrite(log_path, lines)
    before = log_path.read_bytes()
    with pytest.raises(AuditError, match="cannot continue"):
        AuditLog.open(log_path, key)
    assert log_path.read_bytes() == before


def test_several_writers_share_one_chain(log_path: Path) -> None:
    # Each append locks the file for that append only (see test_audit_writers).
    with (
        AuditLog.create(log_path, KEY) as first,
        AuditLog.open(log_path, KEY) as second,
    ):
        assert second.append("alert_purged", alert_id="a1").seq == 1
        assert first.append("alert_purged", alert_id="a2").seq == 2
    records, problems = check(log_path)
    assert problems == []
    assert [r.fields.get("alert_id") for r in records] == [None, "a1", "a2"]


def test_open_and_create_check_the_key_type(log_path: Path) -> None:
    with pytest.raises(TypeError, match="SigningKey"):
        AuditLog.create(log_path, KEY.public_key())  # type: ignore[arg-type]
    assert not log_path.exists()


# -- keys ---------------------------------------------------------------------------


def test_signing_key_round_trip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = key.save(tmp_path / "audit.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = SigningKey.load(path)
    assert again.key_id == key.key_id
    assert again.public_key() == key.public_key()
    assert key.public_key().verify(again.sign(b"data"), b"data")
    assert not key.public_key().verify(again.sign(b"data"), b"date")
    assert not OTHER.public_key().verify(again.sign(b"data"), b"data")
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in tmp_path.iterdir()] == ["audit.key"]  # no temp left


def test_signing_key_refuses_overwrite(tmp_path: Path) -> None:
    path = KEY.save(tmp_path / "audit.key")
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        OTHER.save(path)
    assert path.read_bytes() == before
    OTHER.save(path, overwrite=True)
    assert SigningKey.load(path).key_id == OTHER.key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_signing_key_refuses_a_readable_file(tmp_path: Path) -> None:
    path = KEY.save(tmp_path / "audit.key")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        SigningKey.load(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
)
def test_signing_key_refuses_bad_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "audit.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        SigningKey.load(path)
    with pytest.raises(KeyFileError, match="cannot read"):
        SigningKey.load(tmp_path / "missing.key")


def test_public_key_file_is_not_a_signing_key(tmp_path: Path) -> None:
    path = KEY.public_key().save(tmp_path / "audit.pub")
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        SigningKey.load(path)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        PublicKey.load(KEY.save(tmp_path / "audit.key"))


def test_signing_key_shows_no_material(tmp_path: Path) -> None:
    key = SigningKey.generate()
    pem = key.save(tmp_path / "k").read_bytes()
    body = b"".join(pem.splitlines()[1:-1]).decode()
    raw_private = base64.b64decode(body)[-32:]
    for text in (repr(key), str(key), repr(key.public_key())):
        assert key.key_id in text
        assert body[:16] not in text
        assert raw_private.hex()[:16] not in text
        assert base64.b64encode(raw_private).decode()[:16] not in text
    assert key.key_id == hashlib.sha256(key.public_key().raw).hexdigest()[:16]
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.copy(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)


def test_public_key_round_trip(tmp_path: Path) -> None:
    public = KEY.public_key()
    path = public.save(tmp_path / "audit.pub")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert PublicKey.load(path) == public
    assert len(public.raw) == 32
    assert PublicKey.from_raw(public.raw) == public
    assert public != OTHER.public_key()
    assert hash(PublicKey.from_raw(public.raw)) == hash(public)
    assert pickle.loads(pickle.dumps(public)) == public
    with pytest.raises(FileExistsError):
        OTHER.public_key().save(path)
    with pytest.raises(ValueError, match="32 raw bytes"):
        PublicKey.from_raw(b"x" * 31)


def test_top_level_names() -> None:
    assert lfr.AuditLog is AuditLog
    assert lfr.SigningKey is SigningKey
    assert {"AuditLog", "SigningKey"} <= set(lfr.__all__)
    assert lfr.audit.read_log is read_log
    assert issubclass(AuditError, lfr.LfrError)


def test_the_issues_minimal_alert_record_is_accepted(tmp_path: Path) -> None:
    key = SigningKey.generate()
    with AuditLog.create(tmp_path / "a.log", key) as log:
        log.append("alert_raised", alert_id="a-1", subject_id="S-1", score=0.91)
        with pytest.raises(ValueError, match="score"):
            log.append("alert_raised", alert_id="a-2", subject_id="S-1")
    records, problems = read_log(tmp_path / "a.log", key.public_key())
    assert problems == []
    assert records[-1].fields == {"alert_id": "a-1", "subject_id": "S-1", "score": 0.91}
