"""``lfr run`` under faults and beside a second process, end to end on real faces.

A looping HTTP stream (ffmpeg, real-time pace, on 127.0.0.1) of a composed video of
enrolled LFW people feeds ``lfr run`` until it is stopped, so alerts keep coming.
Each test ends by reading the store and the log directly
(:func:`tests.support.trail.invariant_breaks`) after the next start's
reconciliation, and every wait has a time limit.

The full-disk tests put the log or the store on a small tmpfs that the test fills
once the first alert is out; mounting needs root (CI runs as root), and they skip,
with the reason, elsewhere.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import lfr
from lfr.alerts import Records
from lfr.audit import AuditLog, SigningKey, read_log, verify
from lfr.audit.liveness import close_crashed
from lfr.demo import compose_video, pick_people
from tests.support.enrol import enrol_usable
from tests.support.stream_server import Server, free_port, listening
from tests.support.trail import invariant_breaks

pytestmark = pytest.mark.data

WAIT_S = 90.0  # limits on waits that must end; never a speed assertion
STOP_S = 10.0  # lfr run must exit this soon after SIGTERM, in every state


@dataclass(frozen=True)
class Site:
    folder: Path
    key: lfr.Key
    signing: SigningKey
    video: Path

    @property
    def key_file(self) -> Path:
        """The alert store's key (reviewers')."""
        return self.folder / "store.key"

    @property
    def watchlist_key_file(self) -> Path:
        """The watchlist's own key (enrolment staff's)."""
        return self.folder / "watchlist.key"

    def keys(self) -> list[str]:
        """lfr run's key options: the two keys."""
        return [
            "--watchlist-key", str(self.watchlist_key_file),
            "--store-key", str(self.key_file),
        ]  # fmt: skip

    @property
    def signing_file(self) -> Path:
        return self.folder / "audit.key"


@pytest.fixture(scope="module")
def site(lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Site:
    folder = tmp_path_factory.mktemp("run-faults")
    detector, embedder = lfr.FaceDetector(), lfr.FaceEmbedder()
    chosen = pick_people(lfw_dir, enrolled=3, unknown=0, seed=2)
    key = lfr.Key.generate()
    key.save(folder / "store.key")
    wl_key = lfr.Key.generate()
    wl_key.save(folder / "watchlist.key")
    signing = SigningKey.generate()
    signing.save(folder / "audit.key")
    wl = lfr.Watchlist.create(folder / "w.lfrw", wl_key, embedder=embedder)
    for name, photos in chosen.enrol.items():
        enrol_usable(wl, name, photos, detector, embedder)
    assert len(wl) >= 2
    wl.save()
    wl.destroy()
    video = folder / "people.avi"
    compose_video(
        list(chosen.probe.values()), video, size=(960, 540), fps=10, seed=2,
        seconds_per_person=1.5, per_frame=(1, 2),
    )  # fmt: skip
    return Site(folder, key, signing, video)


@pytest.fixture
def stream(site: Site) -> Iterator[str]:
    server = Server(site.video, free_port())
    server.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not listening(server.port):
            assert time.monotonic() < deadline, "ffmpeg never listened"
            time.sleep(0.05)
        yield server.url
    finally:
        server.kill()


class Run:
    """``lfr run`` in a subprocess, its stdout read line by line."""

    def __init__(self, site: Site, url: str, store: Path, log: Path) -> None:
        self.store, self.log = store, log
        # Not beside the log: that disk may be the one the test fills.
        self._stderr = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in kill)
            "w", prefix="lfr-run-", suffix=".stderr", delete=False
        )
        self._stderr_path = Path(self._stderr.name)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lfr",
                "run",
                "--source",
                url,
                "--watchlist",
                str(site.folder / "w.lfrw"),
                *site.keys(),
                "--store",
                str(store),
                "--audit",
                str(log),
                "--signing-key",
                str(site.signing_file),
                "--camera-id",
                "cam-9",
            ],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: list[str] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._new:
                self.lines.append(line.rstrip("\n"))
                self._new.notify_all()

    def alert_ids(self) -> list[str]:
        with self._new:
            return [
                ln.rsplit(" ", 1)[-1] for ln in self.lines if ln.startswith("ALERT")
            ]

    def wait_for_alerts(self, n: int = 1) -> list[str]:
        deadline = time.monotonic() + WAIT_S
        with self._new:
            while len(self.alert_ids()) < n:
                left = deadline - time.monotonic()
                assert left > 0, "no alert in time"
                assert self.process.poll() is None, self.stderr()
                self._new.wait(min(left, 0.5))
        return self.alert_ids()

    def stop(self) -> tuple[int, float]:
        """SIGTERM; the exit status and how long it took."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=WAIT_S)
        return code, time.monotonic() - began

    def wait(self) -> int:
        return self.process.wait(timeout=WAIT_S)

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        return self._stderr_path.read_text()[-3000:]

    def kill(self) -> None:
        """Ends the process (if it still runs) and closes the pipes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_S)
        self._reader.join(WAIT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def __del__(self) -> None:
        self._stderr_path.unlink(missing_ok=True)


def uuids(text: str) -> set[str]:
    """The alert ids (canonical UUIDs) named in ``text``."""
    return set(re.findall(r"[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}", text))


def cli(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *args],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


def next_start(site: Site, store: Path, log: Path) -> Records:
    """What the next ``lfr run`` does first: close crashed runs, reconcile."""
    with AuditLog.open(log, site.signing) as audit:
        close_crashed(audit)
    return Records.open(store, site.key, log, site.signing)


def test_a_second_process_reviews_holds_acts_and_exports_during_lfr_run(
    site: Site, stream: str, tmp_path: Path
) -> None:
    store, log = tmp_path / "alerts.db", tmp_path / "audit.log"
    run = Run(site, stream, store, log)
    try:
        alert_id = run.wait_for_alerts(1)[0]
        opts = [
            "--store", str(store), "--key-file", str(site.key_file),
            "--audit", str(log), "--signing-key", str(site.signing_file),
        ]  # fmt: skip
        steps = [
            ["review", alert_id, "--reviewer", "op-1", "--decision", "confirmed"],
            ["review", alert_id, "--reviewer", "op-2", "--decision", "confirmed"],
            ["hold", alert_id, "--reason", "case 5", "--until", "2d", "--by", "op-1"],
            ["action", alert_id, "--action", "engaged", "--by", "eo-1"],
            ["show", alert_id, "--out", str(tmp_path / "c.png"), "--by", "op-3"],
        ]
        for step in steps:
            out = cli(site, "alerts", step[0], *step[1:], *opts)
            assert out.returncode == 0, (step[0], out.stderr)
            assert run.process.poll() is None, run.stderr()
        code, took = run.stop()
    finally:
        run.kill()
    assert code == 0, run.stderr()
    assert took < STOP_S
    records, problems = read_log(log, site.signing.public_key())
    assert problems == []
    mine = [
        r for r in records
        if r.fields.get("alert_id") == alert_id and r.event != "alert_improved"
    ]  # fmt: skip
    assert [r.event for r in mine] == [
        "alert_raised", "alert_reviewed", "alert_reviewed", "alert_held",
        "alert_actioned", "alert_exported",
    ]  # fmt: skip
    # Both processes wrote to one chain: lfr run's records follow the reviewer's.
    last_cli = mine[-1].seq
    assert any(
        r.seq > last_cli and r.event in ("counters", "deployment_stopped")
        for r in records
    )
    report = verify(log, site.signing.public_key())
    assert not [v for v in report.violations if v.kind == "integrity"], report
    assert invariant_breaks(store, site.key, log, site.signing.public_key()) == []


def test_sigterm_while_a_write_is_blocked_exits_in_time(
    site: Site, stream: str, tmp_path: Path
) -> None:
    store, log = tmp_path / "alerts.db", tmp_path / "audit.log"
    run = Run(site, stream, store, log)
    fd = -1
    try:
        run.wait_for_alerts(1)
        # Another process holds the store's lock: the alert writer blocks on the
        # next alert or better view.
        fd = os.open(f"{store}.lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        time.sleep(4.0)  # new faces keep coming: the writer is blocked by now
        code, took = run.stop()
    finally:
        if fd >= 0:
            os.close(fd)
        run.kill()
    assert took < STOP_S, run.stderr()
    stderr = run.stderr()
    assert "Traceback" not in stderr
    # The write really was blocked: the alerts it held are named, not stored
    # (abandoned by close, or refused once the lock wait ran out).
    assert code == 1, stderr
    assert "NOT stored" in stderr, stderr
    not_stored = uuids(stderr.split("NOT stored", 1)[1])
    assert not_stored, stderr
    with next_start(site, store, log):
        pass
    assert invariant_breaks(store, site.key, log, site.signing.public_key()) == []
    records, _ = read_log(log, site.signing.public_key())
    lost = uuids(
        " ".join(
            str(r.fields.get("detail"))
            for r in records
            if r.event == "anomaly" and r.fields["kind"] == "alert_lost"
        )
    )
    assert not_stored <= lost
    report = verify(log, site.signing.public_key())
    assert not [v for v in report.violations if v.kind == "integrity"]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs the test can fill (root only)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], timeout=30, check=False)


def fill(folder: Path) -> Path:
    """Fills the file system of ``folder``; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * 4096
        while True:
            try:
                if os.write(fd, block) < len(block):
                    break
            except OSError:  # ENOSPC: full
                break
        for size in (512, 64, 1):  # the last partial page too
            try:
                while os.write(fd, b"\0" * size) == size:
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("full", ["log", "store"])
def test_a_full_disk_stops_lfr_run_and_loses_nothing_silently(
    site: Site, stream: str, tmp_path: Path, tmpfs: Path, full: str
) -> None:
    store = (tmpfs if full == "store" else tmp_path) / "alerts.db"
    log = (tmpfs if full == "log" else tmp_path) / "audit.log"
    run = Run(site, stream, store, log)
    try:
        run.wait_for_alerts(1)
        filler = fill(tmpfs)
        code = run.wait()  # it stops by itself, at once
    finally:
        run.kill()
    stderr = run.stderr()
    assert code == 1, stderr
    assert "lfr run: the deployment stopped after an error" in stderr
    assert "Traceback" not in stderr
    printed = run.alert_ids()
    filler.unlink()
    with next_start(site, store, log) as records:
        stored = {a.alert_id for a in records.store._trail_state().alerts}
    # Every alert printed as raised is stored; every alert named lost is audited.
    assert set(printed) <= stored
    assert invariant_breaks(store, site.key, log, site.signing.public_key()) == []
    records_, problems = read_log(log, site.signing.public_key())
    assert problems == []
    lost = uuids(
        " ".join(
            str(r.fields.get("detail"))
            for r in records_
            if r.event == "anomaly" and r.fields["kind"] == "alert_lost"
        )
    )
    head, _, not_stored_text = stderr.partition("NOT stored")
    assert uuids(not_stored_text) <= lost  # named as lost: audited as lost
    assert not uuids(not_stored_text) & stored
    assert uuids(head) <= stored  # named as stored, audit pending: stored
    report = verify(log, site.signing.public_key())
    assert not [v for v in report.violations if v.kind == "integrity"]
    # The deployment whose stop could not be written is closed as crashed.
    stops = [r for r in records_ if r.event == "deployment_stopped"]
    assert len(stops) == 1


def test_a_killed_lfr_run_is_closed_as_crashed_by_the_next_start(
    site: Site, stream: str, tmp_path: Path
) -> None:
    store, log = tmp_path / "alerts.db", tmp_path / "audit.log"
    run = Run(site, stream, store, log)
    try:
        run.wait_for_alerts(1)
        run.process.kill()  # SIGKILL: nothing runs after it
        assert run.wait() == -signal.SIGKILL
    finally:
        run.kill()
    public = site.signing.public_key()
    records, _ = read_log(log, public)
    first = next(r for r in records if r.event == "deployment_started")
    dep_id = first.fields["deployment_id"]
    assert not [r for r in records if r.event == "deployment_stopped"]
    # The negative control: until a next start, verify sees it still running.
    assert any("still running" in n for n in verify(log, public).notices)
    # The next start: lfr run on the video file (it ends by itself).
    again = cli(
        site, "run", "--source", str(site.video),
        "--watchlist", str(site.folder / "w.lfrw"), *site.keys(),
        "--store", str(store), "--audit", str(log),
        "--signing-key", str(site.signing_file),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    records, problems = read_log(log, public)
    assert problems == []
    stops = [r for r in records if r.event == "deployment_stopped"]
    crashed = [r for r in stops if r.fields["deployment_id"] == dep_id]
    assert [r.fields["reason"] for r in crashed] == ["crashed"]
    second = [r for r in records if r.event == "deployment_started"][1]
    assert crashed[0].seq < second.seq  # closed before the next one started
    destroyed = [
        r for r in records
        if r.event == "watchlist_destroyed" and r.fields.get("deployment_id") == dep_id
    ]  # fmt: skip
    assert [r.fields.get("cause") for r in destroyed] == ["process_ended"]
    assert invariant_breaks(store, site.key, log, public) == []


def test_lfr_run_refuses_a_signing_key_beside_the_log(
    site: Site, tmp_path: Path
) -> None:
    beside = tmp_path / "audit.key"
    site.signing.save(beside)
    args = [
        "run", "--source", str(site.video),
        "--watchlist", str(site.folder / "w.lfrw"), *site.keys(),
        "--store", str(tmp_path / "alerts.db"), "--audit", str(tmp_path / "audit.log"),
        "--signing-key", str(beside),
    ]  # fmt: skip
    out = cli(site, *args)
    assert out.returncode == 1
    assert "audit log's folder" in out.stderr
    assert not (tmp_path / "audit.log").exists()  # nothing started
    # Allowed explicitly: it runs, and the log says so.
    out = cli(site, *args, "--allow-key-beside-log")
    assert out.returncode == 0, out.stderr[-2000:]
    records, problems = read_log(tmp_path / "audit.log", site.signing.public_key())
    assert problems == []
    kinds = [r.fields["kind"] for r in records if r.event == "anomaly"]
    assert "key_beside_log" in kinds
    # The control: a key in another folder runs with no such anomaly.
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    out = cli(
        site, *args[:-1], str(site.signing_file), "--audit", str(elsewhere / "a.log"),
        "--new-log",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    records, _ = read_log(elsewhere / "a.log", site.signing.public_key())
    assert "key_beside_log" not in [
        r.fields["kind"] for r in records if r.event == "anomaly"
    ]


def test_a_deleted_log_and_a_new_lfr_run_are_reported_by_verify(
    site: Site, tmp_path: Path
) -> None:
    """The operator deletes audit.log and runs again: the gap shows."""
    store, log = tmp_path / "alerts.db", tmp_path / "audit.log"
    args = [
        "run", "--source", str(site.video),
        "--watchlist", str(site.folder / "w.lfrw"), *site.keys(),
        "--store", str(store), "--audit", str(log),
        "--signing-key", str(site.signing_file),
    ]  # fmt: skip
    first = cli(site, *args)
    assert first.returncode == 0, first.stderr[-2000:]
    public = site.signing.public_key()
    raised = [r for r in read_log(log, public)[0] if r.event == "alert_raised"]
    assert raised, "the video raised no alert"
    kept = tmp_path / "audit-1.log"  # the copy an auditor received before
    kept.write_bytes(log.read_bytes())
    log.unlink()
    refused = cli(site, *args)  # not by mistake: a new log must be asked for
    assert refused.returncode == 1
    assert "--new-log" in refused.stderr
    assert not log.exists()
    again = cli(site, *args, "--new-log")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "continues alert store" in again.stderr
    pub = tmp_path / "auditor.pub"
    public.save(pub)
    alone = cli(site, "audit", "verify", str(log), "--public-key", str(pub),
                "--store", str(store))  # fmt: skip
    assert alone.returncode == 1
    assert "chain_gap" in alone.stdout, alone.stdout
    # The negative control: with the whole chain the same store accounts.
    whole = cli(site, "audit", "verify", str(kept), str(log), "--public-key",
                str(pub), "--store", str(store))  # fmt: skip
    assert whole.returncode == 0, whole.stdout
    # And deployment_started said what the store held when the second run began.
    records, _ = read_log(log, public)
    started = next(r for r in records if r.event == "deployment_started")
    assert started.fields["store_alerts"] == len(raised)


def test_lfr_run_takes_two_keys_and_one_key_for_both_only_when_asked(
    site: Site, tmp_path: Path
) -> None:
    """The watchlist key and the store key: separate, or one by explicit choice."""
    public = site.signing.public_key()
    pub = tmp_path / "audit.pub"
    public.save(pub)

    def run(folder: Path, *keys: str) -> subprocess.CompletedProcess[str]:
        folder.mkdir()
        return cli(
            site, "run", "--source", str(site.video),
            "--watchlist", str(site.folder / "w.lfrw"), *keys,
            "--store", str(folder / "alerts.db"), "--audit", str(folder / "audit.log"),
            "--signing-key", str(site.signing_file),
        )  # fmt: skip

    def record(folder: Path) -> tuple[str, str]:
        """deployment_started's keys, and the record's row that shows them."""
        records, problems = read_log(folder / "audit.log", public)
        assert problems == []
        started = next(r for r in records if r.event == "deployment_started")
        made = cli(site, "audit", "report", str(folder / "audit.log"),
                   "--public-key", str(pub), "--out", str(folder))  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr
        row = next(
            line
            for line in (folder / "deployment-record.md").read_text().splitlines()
            if "Watchlist and alert store keys" in line
        )
        return started.fields["keys"], row

    # Two keys, end to end: alerts stored, readable with the store key only.
    two = tmp_path / "two"
    done = run(two, *site.keys())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ALERT" in done.stdout
    keys, row = record(two)
    assert keys == "separate"
    assert "separate" in row
    assert "ONE KEY" not in row
    listed = cli(site, "alerts", "list", "--store", str(two / "alerts.db"),
                 "--store-key", str(site.key_file))  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip()
    staff = cli(site, "alerts", "list", "--store", str(two / "alerts.db"),
                "--key-file", str(site.watchlist_key_file))  # fmt: skip
    assert staff.returncode == 1
    assert "was created with key" in staff.stderr
    assert "its own key" in staff.stderr
    assert "Traceback" not in staff.stderr

    # One key file for both: refused before anything is made...
    same = ["--watchlist-key", str(site.watchlist_key_file),
            "--store-key", str(site.watchlist_key_file)]  # fmt: skip
    refused = run(tmp_path / "refused", *same)
    assert refused.returncode == 1
    assert "the same key" in refused.stderr
    assert "--allow-shared-key" in refused.stderr
    assert list((tmp_path / "refused").iterdir()) == []
    # ...and the old single --key-file is refused, naming the two options.
    old = run(tmp_path / "old", "--key-file", str(site.watchlist_key_file))
    assert old.returncode == 1
    assert "--watchlist-key" in old.stderr
    assert "--store-key" in old.stderr
    assert list((tmp_path / "old").iterdir()) == []

    # ...run when asked explicitly, and the deployment record says so.
    shared = tmp_path / "shared"
    done = run(shared, *same, "--allow-shared-key")
    assert done.returncode == 0, done.stderr[-2000:]
    keys, row = record(shared)
    assert keys == "shared"
    assert "ONE KEY FOR BOTH" in row
