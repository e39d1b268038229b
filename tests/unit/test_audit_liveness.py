"""Running marks, and closing deployments whose process was killed."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import lfr
from lfr.audit import AuditLog, SigningKey, checks, liveness, read_log, verify
from lfr.audit.liveness import RunningMark, close_crashed, live_dir, mark_path
from lfr.errors import AuditError

KEY = SigningKey.generate()
SHA = "ab" * 32
OTHER_SHA = "cd" * 32
PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"
WAIT_S = 60

# A deployment process: takes its mark, logs its start (watchlist SHA) and one
# counters record, says it is ready, then runs until it is killed.
DEPLOYMENT = """
import sys, time
from pathlib import Path
import lfr
from lfr.audit import AuditLog, SigningKey
from lfr.audit.liveness import RunningMark

log_path, key_path, sha, folder = sys.argv[1:5]
mark = RunningMark.hold(log_path, "dep-1")
with AuditLog.open(log_path, SigningKey.load(key_path)) as log:
    log.append(
        "deployment_started", deployment_id="dep-1", camera_ids=["cam-1"],
        location="Test Street", purpose="a test", authorised_by="Supt Test",
        watchlist_sha256=sha, watchlist_size=3, model_id="test-model",
        threshold=0.6, policy=lfr.RetentionPolicy(), lfr_version=lfr.__version__,
    )
    log.append(
        "counters", deployment_id="dep-1", camera_id="cam-1", frames_processed=10,
        frames_dropped=0, faces_detected=2, faces_skipped=0, faces_wiped=2, alerts=0,
    )
Path(folder, "ready").touch()
time.sleep(120)
"""


def start_fields(deployment: str = "dep-1", sha: str = SHA) -> dict[str, Any]:
    return {
        "deployment_id": deployment,
        "camera_ids": ["cam-1"],
        "location": "Test Street",
        "purpose": "a test",
        "authorised_by": "Supt Test",
        "watchlist_sha256": sha,
        "watchlist_size": 3,
        "model_id": "test-model",
        "threshold": 0.6,
        "policy": lfr.RetentionPolicy(),
        "lfr_version": lfr.__version__,
    }


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PYTHON_DIR), env.get("PYTHONPATH", "")) if p
    )
    return env


def events(log_path: Path) -> list[tuple[str, dict[str, Any]]]:
    records, problems = read_log(log_path, KEY.public_key())
    assert problems == []
    return [(r.event, dict(r.fields)) for r in records]


def test_a_killed_deployment_is_closed_by_the_next_start(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.jsonl"
    key_path = KEY.save(tmp_path / "audit.key")
    with AuditLog.create(log_path, KEY) as log:
        child = subprocess.Popen(
            [sys.executable, "-c", DEPLOYMENT, str(log_path), str(key_path), SHA,
             str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + WAIT_S
            while not (tmp_path / "ready").exists():
                assert child.poll() is None, child.communicate(timeout=WAIT_S)[1]
                assert time.monotonic() < deadline, "the deployment did not start"
                time.sleep(0.01)
            # Negative control: while the process lives, nothing is closed.
            before = log_path.read_bytes()
            assert close_crashed(log) == []
            assert log_path.read_bytes() == before
            assert mark_path(log_path, "dep-1").exists()

            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=WAIT_S)
            assert child.returncode == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        unclosed = tmp_path / "unclosed.jsonl"
        shutil.copyfile(log_path, unclosed)

        assert close_crashed(log) == ["dep-1"]
        assert close_crashed(log) == []  # once only
    assert not mark_path(log_path, "dep-1").exists()
    logged = events(log_path)
    assert [e for e, _ in logged] == [
        "log_created",
        "deployment_started",
        "counters",
        "deployment_stopped",
        "watchlist_destroyed",
    ]
    assert logged[3][1] == {
        "deployment_id": "dep-1",
        "reason": "crashed",
        "last_record": 2,
    }
    assert logged[4][1] == {
        "watchlist_sha256": SHA,
        "deployment_id": "dep-1",
        "cause": "process_ended",
    }

    records, _ = read_log(log_path, KEY.public_key())
    closed_at = records[3].time
    past = closed_at + timedelta(days=2)  # past the 24 h watchlist deadline
    # Closed: the deadline is checked and kept.
    report = verify(log_path, KEY.public_key(), now=past)
    assert report.ok, report.violations
    assert any("dep-1 was killed" in n for n in report.notices)
    assert report.deployments[0].crashed
    # The same log with the close but without the destruction: a violation.
    cut = tmp_path / "no-destruction.jsonl"
    lines = log_path.read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(lines[:4]))
    report = verify(cut, KEY.public_key(), now=past)
    assert [(v.kind, v.record) for v in report.violations] == [
        ("watchlist_not_destroyed", 1)
    ]
    # Not closed: the deadline can never be checked.
    report = verify(unclosed, KEY.public_key(), now=past)
    assert report.ok
    assert any("still running" in n for n in report.notices)


def test_running_mark_is_held_and_removed(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.jsonl"
    mark = RunningMark.hold(log_path, "dep-1")
    try:
        assert mark.path == live_dir(log_path) / "dep-1.lock"
        assert stat.S_IMODE(live_dir(log_path).stat().st_mode) == 0o700
        assert stat.S_IMODE(mark.path.stat().st_mode) == 0o600
        with pytest.raises(AuditError, match="dep-1 is running already"):
            RunningMark.hold(log_path, "dep-1")
        assert "held" in repr(mark)
    finally:
        mark.close()
    mark.close()
    assert mark.closed
    assert not mark.path.exists()
    # Control: once released, the mark can be taken again.
    RunningMark.hold(log_path, "dep-1").close()


@pytest.mark.parametrize("deployment_id", ["../x", ".hidden", "a/b", "é", "x" * 200])
def test_ids_that_are_not_file_names_are_hashed(
    tmp_path: Path, deployment_id: str
) -> None:
    path = mark_path(tmp_path / "audit.jsonl", deployment_id)
    assert path.parent == live_dir(tmp_path / "audit.jsonl")
    assert path.name.startswith("%")
    assert len(path.name) == 1 + 64 + len(".lock")


@pytest.mark.parametrize(("value", "error"), [("", ValueError), (7, TypeError)])
def test_mark_needs_a_deployment_id(
    tmp_path: Path, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="deployment_id"):
        RunningMark.hold(tmp_path / "audit.jsonl", value)  # type: ignore[arg-type]


def test_a_missing_mark_means_not_running(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.jsonl"
    with AuditLog.create(log_path, KEY) as log:
        log.append("deployment_started", **start_fields("dep-1"))
        log.append("deployment_started", **start_fields("dep-2"))
        with RunningMark.hold(log_path, "dep-2"):  # control: dep-2 is running
            assert close_crashed(log) == ["dep-1"]
        assert close_crashed(log) == ["dep-2"]
    stops = [f for e, f in events(log_path) if e == "deployment_stopped"]
    assert [(f["deployment_id"], f["last_record"]) for f in stops] == [
        ("dep-1", 1),
        ("dep-2", 2),
    ]


def test_only_what_is_not_stopped_or_destroyed_is_closed(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.jsonl"
    with AuditLog.create(log_path, KEY) as log:
        log.append("deployment_started", **start_fields("dep-1"))
        log.append("deployment_stopped", deployment_id="dep-1")
        log.append("deployment_started", **start_fields("dep-2"))
        log.append(
            "watchlist_loaded",
            deployment_id="dep-2",
            watchlist_sha256=OTHER_SHA,
            watchlist_size=4,
            model_id="test-model",
        )
        log.append("watchlist_destroyed", watchlist_sha256=SHA, deployment_id="dep-2")
        log.append(
            "anomaly", kind="stream_lost", camera_id="cam-1", deployment_id="dep-2"
        )
        assert close_crashed(log) == ["dep-2"]
    logged = events(log_path)[7:]
    assert logged == [
        (
            "deployment_stopped",
            {"deployment_id": "dep-2", "reason": "crashed", "last_record": 6},
        ),
        (
            "watchlist_destroyed",
            {
                "watchlist_sha256": OTHER_SHA,
                "deployment_id": "dep-2",
                "cause": "process_ended",
            },
        ),
    ]
    records, _ = read_log(log_path, KEY.public_key())
    assert checks.watchlists_destroyed(records, datetime.now(timezone.utc)) == []


class NoLocks:
    """Stands in for the fcntl module in liveness: marks that lock nothing."""

    LOCK_EX = LOCK_NB = LOCK_UN = 0

    @staticmethod
    def flock(fd: int, operation: int) -> None:
        del fd, operation


@pytest.mark.parametrize("locked", [True, False])
def test_two_starters_racing_close_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, locked: bool
) -> None:
    # Each closer pauses between reading the log and appending, so that without
    # the mark (the negative control) they all decide to close the deployment.
    plan = liveness._closing_records

    def slow_plan(*args: Any) -> Any:
        out = plan(*args)
        time.sleep(0.05)
        return out

    monkeypatch.setattr(liveness, "_closing_records", slow_plan)
    if not locked:
        monkeypatch.setattr(liveness, "fcntl", NoLocks)
    log_path = tmp_path / "audit.jsonl"
    with AuditLog.create(log_path, KEY) as log:
        log.append("deployment_started", **start_fields("dep-1"))
    logs = [AuditLog.open(log_path, KEY) for _ in range(3)]
    barrier = threading.Barrier(len(logs))
    results: dict[int, list[str]] = {}

    def start(n: int, log: AuditLog) -> None:
        barrier.wait(10)
        results[n] = close_crashed(log)

    threads = [
        threading.Thread(target=start, args=(n, log), daemon=True)
        for n, log in enumerate(logs)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
            assert not thread.is_alive()
    finally:
        for log in logs:
            log.close()
    stops = [e for e, _ in events(log_path)].count("deployment_stopped")
    if locked:
        assert sorted(results.values()) == [[], [], ["dep-1"]]
        assert stops == 1
    else:
        assert stops == len(logs), "unlocked closers did not collide"
