"""Several writers, one audit log: a lock per append, and the head re-read under it."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from lfr.audit import AuditLog, SigningKey, read_log
from lfr.audit.log import canonical
from lfr.errors import AuditError

KEY = SigningKey.generate()
OTHER = SigningKey.generate()
PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"
WAIT_S = 120  # for a child process: startup (imports) plus its appends
APPENDS = 200
T = TypeVar("T")

# A writer process: opens the log, says it is ready, waits for the go file, then
# appends APPENDS records named after itself. "unlocked" sets the private test hook
# that skips the per-append file lock and sleeps between reading the head and
# writing, as a writer without the lock would race. Between appends it pauses
# briefly, as a real writer does: the lock is not fair, and a writer appending
# without pause would keep it until it is done.
WRITER = """
import sys, time
from pathlib import Path
import lfr.audit.log as audit_log
from lfr.audit import AuditLog, SigningKey

log_path, key_path, name, count, mode, folder = sys.argv[1:7]
folder = Path(folder)
if mode == "unlocked":
    audit_log._unlocked_append_hook = lambda: time.sleep(0.002)
with AuditLog.open(log_path, SigningKey.load(key_path)) as log:
    (folder / f"ready-{name}").touch()
    deadline = time.monotonic() + 60
    while not (folder / "go").exists():
        assert time.monotonic() < deadline, "no go file"
        time.sleep(0.001)
    for i in range(int(count)):
        log.append("alert_purged", alert_id=f"{name}-{i}")
        time.sleep(0.0005)  # the writer's own work between appends
print("done", flush=True)
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PYTHON_DIR), env.get("PYTHONPATH", "")) if p
    )
    return env


def run_writers(tmp_path: Path, names: list[str], mode: str) -> list[int]:
    """Runs one writer process per name on one log at once; their exit codes."""
    log_path = tmp_path / "audit.jsonl"
    key_path = tmp_path / "audit.key"
    KEY.save(key_path)
    AuditLog.create(log_path, KEY).close()
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(log_path),
                str(key_path),
                name,
                str(APPENDS),
                mode,
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for name in names
    ]
    try:
        deadline = time.monotonic() + WAIT_S
        while not all((tmp_path / f"ready-{n}").exists() for n in names):
            failed = [c for c in children if c.poll() is not None]
            assert not failed, failed[0].communicate()[1]
            assert time.monotonic() < deadline, "the writers did not start"
            time.sleep(0.01)
        (tmp_path / "go").touch()
        codes = []
        for child in children:
            out, err = child.communicate(timeout=WAIT_S)
            if mode == "locked":
                assert child.returncode == 0, err
                assert out.strip() == "done"
            codes.append(child.returncode)
        return codes
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)


def test_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    names = ["w1", "w2", "w3"]
    run_writers(tmp_path, names, "locked")
    records, problems = read_log(tmp_path / "audit.jsonl", KEY.public_key())
    assert problems == []
    assert [r.seq for r in records] == list(range(1 + len(names) * APPENDS))
    assert [r.line for r in records] == [r.seq + 1 for r in records]
    ids = [str(r.fields["alert_id"]) for r in records[1:]]
    for name in names:  # every record of each writer, in its order
        assert [i for i in ids if i.startswith(f"{name}-")] == [
            f"{name}-{i}" for i in range(APPENDS)
        ]
    # They did interleave: otherwise this test would show nothing.
    switches = sum(a.split("-")[0] != b.split("-")[0] for a, b in zip(ids, ids[1:]))
    assert switches >= 10


def test_without_the_lock_the_chain_breaks(tmp_path: Path) -> None:
    # Negative control: the same writers with the per-append lock disabled.
    run_writers(tmp_path, ["w1", "w2"], "unlocked")
    records, problems = read_log(tmp_path / "audit.jsonl", KEY.public_key())
    assert problems, "two unlocked writers kept one chain: the test shows nothing"
    assert problems[0].kind in ("bad_sequence", "broken_chain", "malformed")
    assert len(records) < 1 + 2 * APPENDS


def within(seconds: float, work: Callable[[], T]) -> T:
    """Runs ``work`` in a thread; fails if it takes longer than ``seconds``."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if error:
        raise error[0]
    return result[0]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def test_append_follows_what_another_writer_appended_meanwhile(
    log_path: Path,
) -> None:
    with AuditLog.create(log_path, KEY) as first:
        first.append("alert_purged", alert_id="a1")
        with AuditLog.open(log_path, KEY) as second:  # while the first is idle
            second.append("alert_purged", alert_id="b1")
            second.append("alert_purged", alert_id="b2")
        record = within(10, lambda: first.append("alert_purged", alert_id="a2"))
        assert first.last_seq == 4
    assert record.seq == 4
    assert record.line == 5
    records, problems = read_log(log_path, KEY.public_key())
    assert problems == []
    assert [r.fields.get("alert_id") for r in records] == [None, "a1", "b1", "b2", "a2"]


def test_a_stale_head_would_break_the_chain(log_path: Path) -> None:
    # Negative control for the test above: writing from the head the first writer
    # had before the other appended (no re-read) is caught by verification.
    with AuditLog.create(log_path, KEY) as first:
        with AuditLog.open(log_path, KEY) as second:
            second.append("alert_purged", alert_id="b1")
        first._append("alert_purged", {"alert_id": "a2"})  # skips the re-read
    _, problems = read_log(log_path, KEY.public_key())
    assert [(p.kind, p.line) for p in problems] == [("bad_sequence", 3)]


def test_records_returns_every_writers_records(log_path: Path) -> None:
    with (
        AuditLog.create(log_path, KEY) as first,
        AuditLog.open(log_path, KEY) as second,
    ):
        first.append("alert_purged", alert_id="a1")
        second.append("alert_purged", alert_id="b1")
        records = within(10, first.records)
    assert [r.fields.get("alert_id") for r in records] == [
        None,
        "a1",
        "b1",
    ]
    assert records == read_log(log_path, KEY.public_key())[0]


def test_append_waits_for_the_lock_then_gives_up(log_path: Path) -> None:
    with AuditLog.create(log_path, KEY, lock_timeout=0.3) as log:
        size = log_path.stat().st_size
        holder = os.open(log_path, os.O_RDONLY)
        try:
            fcntl.flock(holder, fcntl.LOCK_EX)
            started = time.monotonic()
            with pytest.raises(AuditError, match="stayed locked by another writer"):
                within(10, lambda: log.append("alert_purged", alert_id="a1"))
            assert 0.3 <= time.monotonic() - started < 5
            with pytest.raises(AuditError, match=str(log_path.name)):
                within(10, log.records)
            assert log_path.stat().st_size == size
            fcntl.flock(holder, fcntl.LOCK_UN)
            # Control: with the lock free the same append goes through.
            within(10, lambda: log.append("alert_purged", alert_id="a1"))
        finally:
            os.close(holder)
    assert len(read_log(log_path, KEY.public_key())[0]) == 2


def test_append_waits_for_a_short_lock(log_path: Path) -> None:
    with AuditLog.create(log_path, KEY, lock_timeout=10) as log:
        holder = os.open(log_path, os.O_RDONLY)
        try:
            fcntl.flock(holder, fcntl.LOCK_EX)
            timer = threading.Timer(0.2, fcntl.flock, (holder, fcntl.LOCK_UN))
            timer.start()
            started = time.monotonic()
            within(10, lambda: log.append("alert_purged", alert_id="a1"))
            assert time.monotonic() - started >= 0.15
            timer.join(5)
        finally:
            os.close(holder)


def forged_line(log_path: Path, key: SigningKey, seq: int) -> bytes:
    """A well-formed next record signed by ``key``."""
    last = log_path.read_bytes().splitlines()[-1]
    body = {
        "seq": seq,
        "time": "2026-11-26T22:50:52.123460Z",
        "event": "alert_purged",
        "fields": {"alert_id": "x1"},
        "prev": hashlib.sha256(last).hexdigest(),
    }
    sig = base64.b64encode(key.sign(canonical(body))).decode()
    return canonical({**body, "sig": sig}) + b"\n"


def test_records_another_key_appended_stop_the_next_append(log_path: Path) -> None:
    with AuditLog.create(log_path, KEY) as log:
        log.append("alert_purged", alert_id="a1")
        with log_path.open("ab") as f:
            f.write(forged_line(log_path, OTHER, 2))
        before = log_path.read_bytes()
        with pytest.raises(AuditError, match=r"by another writer.*does not verify"):
            log.append("alert_purged", alert_id="a2")
        with pytest.raises(AuditError, match=r"no longer verifies|does not verify"):
            log.records()
    assert log_path.read_bytes() == before


def test_records_the_same_key_appended_are_accepted(log_path: Path) -> None:
    # Control for the test above: the same line signed with the log's key.
    with AuditLog.create(log_path, KEY) as log:
        log.append("alert_purged", alert_id="a1")
        with log_path.open("ab") as f:
            f.write(forged_line(log_path, KEY, 2))
        assert log.append("alert_purged", alert_id="a2").seq == 3
    assert read_log(log_path, KEY.public_key())[1] == []


def test_torn_line_of_a_crashed_writer_is_recovered_on_append(
    log_path: Path,
) -> None:
    with AuditLog.create(log_path, KEY) as log:
        log.append("alert_purged", alert_id="a1")
        partial = forged_line(log_path, KEY, 2)[:60]
        with log_path.open("ab") as f:  # another writer died mid-line
            f.write(partial)
        record = log.append("alert_purged", alert_id="a2")
    assert record.seq == 3
    records, problems = read_log(log_path, KEY.public_key())
    assert problems == []
    assert [r.event for r in records] == [
        "log_created",
        "alert_purged",
        "anomaly",
        "alert_purged",
    ]
    assert records[2].fields["kind"] == "log_recovered"
    assert f"discarded {len(partial)} bytes" in records[2].fields["detail"]
    assert "line 3" in records[2].fields["detail"]


def test_records_cut_from_the_end_stop_the_next_append(log_path: Path) -> None:
    with AuditLog.create(log_path, KEY) as log:
        log.append("alert_purged", alert_id="a1")
        lines = log_path.read_bytes().splitlines(keepends=True)
        log_path.write_bytes(lines[0])
        with pytest.raises(AuditError, match="shorter than when"):
            log.append("alert_purged", alert_id="a2")
    assert log_path.read_bytes() == lines[0]


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf")])
def test_lock_timeout_is_checked(log_path: Path, value: float) -> None:
    with pytest.raises(ValueError, match="lock_timeout"):
        AuditLog.create(log_path, KEY, lock_timeout=value)
    assert not log_path.exists()
