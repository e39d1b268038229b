"""No core dump from a crash of any entry point that handles faces or keys (issue 15).

Each command (``lfr run`` over a folder of photos, ``lfr demo``, ``lfr watchlist
enroll``, ``lfr eval``) runs in a child whose core-file limit is raised to
unlimited first (``ulimit -c unlimited``; by :class:`tests.support.unhardened.Launcher`,
started at collection, since the pytest process may be hardened by then). The
child is the real
command with real models and LFW photos, started through :data:`PROBE`: it calls
``lfr.cli.main`` as ``python -m lfr`` does, and wraps ``FaceEmbedder.embed`` so
that the first embedding (on the named thread) is completed and then the thread
stops there, with the frame, the aligned chip and the embedding in memory, and
reports ``prctl(PR_GET_DUMPABLE)`` (``/proc/PID/status`` has no dumpable line;
read as root from outside, the owner of ``/proc/PID`` says nothing either). While
it waits the test reads ``Max core file size`` from ``/proc/PID/limits`` (outside
the child), sends SIGSEGV and looks for a core file in the child's working
directory. ``kernel.core_pattern`` must be a plain file name for that last part
(``core`` here); elsewhere it is skipped with the reason, after the other checks.

The negative control runs the same commands with ``--allow-core-dumps``: the
limit stays unlimited, the child is dumpable, and the same SIGSEGV writes a core
file, so the checks above can fail.

"Cannot be set" is provoked through :data:`REFUSED`, a child whose
``lfr._core.harden`` raises as the kernel would (EPERM): each command then exits
1 with the reason and the override, before reading a key or a face; with
``--allow-core-dumps`` the same child runs, and the audit log records it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import lfr
from lfr.alerts import Records
from lfr.audit import SigningKey, read_log, verify
from lfr.audit.log import Record
from lfr.audit.report import render_markdown
from lfr.errors import EnrolmentError
from tests.support.unhardened import Launcher

pytestmark = pytest.mark.data

WAIT_S = 60.0  # limits on waits that must end; never a speed assertion

#: The real command (argv after the ready file and thread prefix), paused inside
#: ``FaceEmbedder.embed`` once a face has been embedded on a thread whose name
#: starts with the prefix; it then writes ``{"dumpable": PR_GET_DUMPABLE}`` to
#: the ready file and waits to be killed.
PROBE = r"""
import ctypes, json, sys, threading, time
from pathlib import Path

import lfr.embed

ready, prefix, argv = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
embed = lfr.embed.FaceEmbedder.embed

def paused(self, *args, **kwargs):
    out = embed(self, *args, **kwargs)
    if threading.current_thread().name.startswith(prefix):
        dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        tmp = ready.with_name(ready.name + ".tmp")
        tmp.write_text(json.dumps({"dumpable": dumpable}))
        tmp.rename(ready)
        while True:  # a face in memory: the test reads /proc, then sends SIGSEGV
            time.sleep(1)
    return out

lfr.embed.FaceEmbedder.embed = paused
from lfr.cli import main
sys.exit(main(argv))
"""

#: The real command, with the kernel refusing to harden (``lfr._core.harden``
#: raises EPERM as the Rust call does when ``setrlimit`` is refused).
REFUSED = r"""
import errno, sys
import lfr._core

def refused():
    raise PermissionError(errno.EPERM, "setrlimit(RLIMIT_CORE) failed: refused")

lfr._core.harden = refused
from lfr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def core_pattern() -> str:
    return Path("/proc/sys/kernel/core_pattern").read_text().strip()


def plain_core_pattern() -> bool:
    """Whether a crash writes a core file named by a plain name into the cwd."""
    pattern = core_pattern()
    return bool(pattern) and not pattern.startswith("|") and "/" not in pattern


#: Spawns the crashing children with ``ulimit -c unlimited``. Started here, at
#: collection, before any test runs: a test that calls ``Deployment.start`` or
#: ``Watchlist.enroll`` in the pytest process hardens it for good, and its own
#: children could then not raise the core limit again.
LAUNCHER = Launcher()


@pytest.fixture(scope="module", autouse=True)
def _launcher() -> Iterator[None]:
    yield
    LAUNCHER.close()


@dataclass(frozen=True)
class Site:
    folder: Path
    watchlist: Path
    key_file: Path  # the watchlist's key
    store_key: Path  # the alert store's own key
    signing_file: Path
    stills: Path  # a folder source: photos of people not on the watchlist
    enrol: tuple[Path, ...]  # photos of someone else, to enrol
    dataset: Path  # identities/<name>/*.jpg for lfr eval


def records_of(log: Path, site: Site) -> list[Record]:
    """The log's records, verified against the site's signing key."""
    records, problems = read_log(log, SigningKey.load(site.signing_file).public_key())
    assert problems == []
    return records


def photos_of(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


@pytest.fixture(scope="module")
def site(
    lfw_dir: Path,
    yunet_path: Path,
    embedder_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Site:
    folder = tmp_path_factory.mktemp("crash-site")
    people = [p for p in sorted((lfw_dir / "identities").iterdir()) if p.is_dir()]
    people = [p for p in people if len(photos_of(p)) >= 3]
    assert len(people) >= 4, "lfw-dev has too few people with 3 photos"
    key = lfr.Key.generate()
    key.save(folder / "site.key")
    lfr.Key.generate().save(folder / "store.key")
    signing = SigningKey.generate()
    signing.save(folder / "audit.key")
    # The pytest process is left unhardened: enrolled with the override.
    detector, embedder = lfr.FaceDetector(), lfr.FaceEmbedder()
    wl = lfr.Watchlist.create(folder / "w.lfrw", key, embedder=embedder)
    for photo in photos_of(people[0]):
        try:
            wl.enroll(
                people[0].name, [photo], detector=detector, embedder=embedder,
                allow_core_dumps=True,
            )  # fmt: skip
            break
        except EnrolmentError:
            continue
    assert len(wl) == 1, f"no usable photo of {people[0].name}"
    wl.save()
    wl.destroy()
    stills = folder / "stills"
    stills.mkdir()
    for photo in sorted((lfw_dir / "unknowns").glob("*.jpg"))[:3]:
        shutil.copy(photo, stills / photo.name)
    dataset = folder / "dataset"
    for person in people[2:4]:
        (dataset / "identities" / person.name).mkdir(parents=True)
        for photo in photos_of(person)[:2]:
            shutil.copy(photo, dataset / "identities" / person.name / photo.name)
    return Site(
        folder, folder / "w.lfrw", folder / "site.key", folder / "store.key",
        folder / "audit.key",
        stills, tuple(photos_of(people[1])[:3]), dataset,
    )  # fmt: skip


# -- the commands --------------------------------------------------------------------


def run_args(site: Site, work: Path, source: Path | None = None) -> list[str]:
    return [
        "run", "--source", str(source or site.stills), "--watchlist",
        str(site.watchlist), "--watchlist-key", str(site.key_file),
        "--store-key", str(site.store_key), "--store",
        str(work / "alerts.db"), "--audit", str(work / "logs" / "audit.log"),
        "--signing-key", str(site.signing_file),
    ]  # fmt: skip


def demo_args(site: Site, work: Path, lfw_dir: Path) -> list[str]:
    return [
        "demo", "--data", str(lfw_dir), "--out", str(work / "demo"),
        "--enrolled", "1", "--unknown", "1",
    ]  # fmt: skip


def enrol_args(site: Site, work: Path) -> list[str]:
    watchlist = work / "copy.lfrw"
    shutil.copy(site.watchlist, watchlist)
    return [
        "watchlist", "enroll", str(watchlist), "--key-file", str(site.key_file),
        "--subject", "subject-2", *map(str, site.enrol),
    ]  # fmt: skip


def eval_args(site: Site, work: Path) -> list[str]:
    return ["eval", str(site.dataset), "--no-cache"]


#: Each command, and the thread on which the probe stops it after an embedding.
COMMANDS = {
    "run": "lfr-deployment",  # the deployment's processing thread
    "demo": "lfr-deployment",  # past its enrolment, in its deployment
    "enroll": "MainThread",
    "eval": "MainThread",
}


def command(name: str, site: Site, work: Path, lfw_dir: Path) -> list[str]:
    if name == "run":
        (work / "logs").mkdir()
        return run_args(site, work)
    if name == "demo":
        return demo_args(site, work, lfw_dir)
    if name == "enroll":
        return enrol_args(site, work)
    return eval_args(site, work)


# -- the crash -----------------------------------------------------------------------


@dataclass(frozen=True)
class Crash:
    core_limit: tuple[str, str]  # soft, hard, from /proc/PID/limits
    dumpable: int  # PR_GET_DUMPABLE inside the child, while it held a face
    returncode: int
    cores: list[Path]  # core files that appeared in the child's cwd


def core_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line[len("Max core file size") :].split()[:2]
            return soft, hard
    raise AssertionError(f"no core limit in /proc/{pid}/limits")


def crash(argv: Sequence[str], prefix: str, cwd: Path) -> Crash:
    """Runs ``argv`` through :data:`PROBE` under an unlimited core limit, then
    SIGSEGV while a face is in memory."""
    ready = cwd / "probe-ready.json"
    err = cwd / "probe.stderr"
    try:
        pid = LAUNCHER.spawn(
            [sys.executable, "-c", PROBE, str(ready), prefix, *argv], cwd, err
        )
    except PermissionError as exc:
        pytest.skip(f"the core limit cannot be raised here: {exc}")
    returncode: int | None = None
    try:
        deadline = time.monotonic() + WAIT_S
        while not ready.exists():
            returncode = LAUNCHER.wait(pid, 0)
            if returncode is not None:
                pytest.fail(
                    f"{argv[0]} ended ({returncode}) before embedding a "
                    f"face: {err.read_text()[-2000:]}"
                )
            assert time.monotonic() < deadline, f"{argv[0]} never embedded a face"
            time.sleep(0.05)
        limit = core_limit(pid)
        dumpable = int(json.loads(ready.read_text())["dumpable"])
        before = set(cwd.iterdir())
        os.kill(pid, signal.SIGSEGV)
        returncode = LAUNCHER.wait(pid, WAIT_S)  # a core takes a moment to write
        assert returncode is not None, f"{argv[0]} outlived SIGSEGV"
    finally:
        if returncode is None:
            os.kill(pid, signal.SIGKILL)
            LAUNCHER.wait(pid, WAIT_S)
    prefix_name = core_pattern().split("%")[0] or "core"
    cores = [p for p in set(cwd.iterdir()) - before if p.name.startswith(prefix_name)]
    return Crash(limit, dumpable, returncode, cores)


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for core in tmp_path.glob("core*"):  # the negative control's, hundreds of MB
        core.unlink()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_crash_with_a_face_in_memory_writes_no_core(
    name: str, site: Site, work: Path, lfw_dir: Path
) -> None:
    done = crash(command(name, site, work, lfw_dir), COMMANDS[name], work)
    assert done.core_limit == ("0", "0"), f"/proc/PID/limits: {done.core_limit}"
    assert done.dumpable == 0
    assert done.returncode == -signal.SIGSEGV
    if not plain_core_pattern():
        pytest.skip(
            f"kernel.core_pattern is {core_pattern()!r}, not a plain file name: "
            "no core file can be looked for in the cwd (limits and dumpable checked)"
        )
    assert done.cores == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_negative_control_the_override_leaves_core_dumps_on(
    name: str, site: Site, work: Path, lfw_dir: Path
) -> None:
    argv = [*command(name, site, work, lfw_dir), "--allow-core-dumps"]
    done = crash(argv, COMMANDS[name], work)
    assert done.core_limit == ("unlimited", "unlimited")
    assert done.dumpable == 1
    assert done.returncode == -signal.SIGSEGV
    if not plain_core_pattern():
        pytest.skip(f"kernel.core_pattern is {core_pattern()!r}: no core to find")
    assert len(done.cores) == 1, "the crash wrote no core: the test cannot fail"
    if name == "run":  # the override is audited before the first frame
        records = records_of(work / "logs" / "audit.log", site)
        started = [r for r in records if r.event == "deployment_started"]
        assert started[0].fields["hardened"] is False
        assert any(
            r.event == "anomaly" and r.fields["kind"] == "core_dumps_allowed"
            for r in records
        )


# -- when hardening is refused -------------------------------------------------------


def refused(argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", REFUSED, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )


@pytest.fixture
def records_site(site: Site, tmp_path: Path) -> tuple[Path, Path]:
    """An alert store and its audit log (empty of alerts)."""
    folder = tmp_path / "records"
    folder.mkdir()
    store, log = folder / "alerts.db", folder / "audit.log"
    with Records.open(
        store,
        lfr.Key.from_file(site.store_key),
        log,
        SigningKey.load(site.signing_file),
    ):
        pass
    return store, log


def refusal_cases(
    site: Site, work: Path, lfw_dir: Path, records: tuple[Path, Path]
) -> dict[str, list[str]]:
    store, log = records
    alerts = ["--store", str(store), "--key-file", str(site.store_key)]
    (work / "logs").mkdir()
    return {
        "run": run_args(site, work),
        "demo": demo_args(site, work, lfw_dir),
        "watchlist create": [
            "watchlist", "create", str(work / "new.lfrw"), "--key-file",
            str(site.key_file),
        ],
        "watchlist enroll": enrol_args(site, work),
        "watchlist list": [
            "watchlist", "list", str(site.watchlist), "--key-file", str(site.key_file)
        ],
        "eval": eval_args(site, work),
        "alerts list": ["alerts", "list", *alerts],
        "alerts purge": [
            "alerts", "purge", *alerts, "--audit", str(log), "--signing-key",
            str(site.signing_file),
        ],
        "audit verify": [
            "audit", "verify", str(log), "--public-key", f"{log}.pub",
            "--store", str(store), "--store-key", str(site.store_key),
        ],
        "audit checkpoint": [
            "audit", "checkpoint", str(log), "--signing-key", str(site.signing_file),
        ],
        "keys create": ["keys", "create", str(work / "new.key")],
    }  # fmt: skip


def test_every_command_refuses_to_run_when_core_dumps_stay_on(
    site: Site, tmp_path: Path, lfw_dir: Path, records_site: tuple[Path, Path]
) -> None:
    cases = refusal_cases(site, tmp_path, lfw_dir, records_site)
    log_before = records_site[1].read_bytes()
    for name, argv in cases.items():
        done = refused(argv, tmp_path)
        assert done.returncode == 1, (name, done.stderr)
        assert f"lfr {name}: " in done.stderr, (name, done.stderr)
        assert "cannot switch core dumps off" in done.stderr, (name, done.stderr)
        assert "--allow-core-dumps" in done.stderr, (name, done.stderr)
    # Refused before anything was read or written.
    assert not (tmp_path / "alerts.db").exists()
    assert not (tmp_path / "logs" / "audit.log").exists()
    assert not (tmp_path / "new.lfrw").exists()
    assert not (tmp_path / "demo").exists()
    assert not (tmp_path / "new.key").exists()
    assert records_site[1].read_bytes() == log_before


def test_negative_control_the_override_runs_warned_and_audited(
    site: Site, tmp_path: Path, records_site: tuple[Path, Path]
) -> None:
    """The same refusing child runs with --allow-core-dumps: the refusal above
    comes from hardening, and the override is warned and audited."""
    store, log = records_site
    (tmp_path / "logs").mkdir()
    done = refused([*run_args(site, tmp_path), "--allow-core-dumps"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "lfr run: warning: core dumps are allowed" in done.stderr
    run_log = tmp_path / "logs" / "audit.log"
    records = records_of(run_log, site)
    started = [r for r in records if r.event == "deployment_started"]
    assert [r.fields["hardened"] for r in started] == [False]
    anomalies = [r.fields["kind"] for r in records if r.event == "anomaly"]
    assert "core_dumps_allowed" in anomalies
    report = verify(run_log, SigningKey.load(site.signing_file).public_key())
    assert report.ok, report.violations
    assert [d.hardened for d in report.deployments] == [False]
    assert "| Core dumps | ALLOWED by the operator" in render_markdown(report)

    made = refused(
        ["watchlist", "create", str(tmp_path / "new.lfrw"), "--key-file",
         str(site.key_file), "--allow-core-dumps"],
        tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "lfr watchlist create: warning: core dumps are allowed" in made.stderr

    purged = refused(
        ["alerts", "purge", "--store", str(store), "--key-file", str(site.store_key),
         "--audit", str(log), "--signing-key", str(site.signing_file),
         "--allow-core-dumps"],
        tmp_path,
    )  # fmt: skip
    assert purged.returncode == 0, purged.stderr
    kinds = [
        r.fields.get("kind") for r in records_of(log, site) if r.event == "anomaly"
    ]
    assert "core_dumps_allowed" in kinds


def test_the_python_entry_points_refuse_too(site: Site, tmp_path: Path) -> None:
    """``Deployment.start`` and ``Watchlist.enroll`` (the library, no CLI)."""
    code = REFUSED.split("from lfr.cli")[0] + "\n".join(
        [
            "import json, lfr",
            "from lfr.errors import DeploymentError, HardeningError",
            "from lfr.audit import SigningKey",
            "args = json.loads(sys.argv[1])",
            "key = lfr.Key.from_file(args['key'])",
            "out = {}",
            "wl = lfr.Watchlist.open(args['watchlist'], key)",
            "try:",
            "    wl.enroll('s2', args['photos'])",
            "except HardeningError as e:",
            "    out['enroll'] = str(e)",
            "store = lfr.AlertStore(args['store'], lfr.Key.from_file(args['skey']))",
            "d = lfr.Deployment(source=args['stills'], watchlist=wl, store=store,",
            "    audit=args['log'], signing_key=SigningKey.load(args['signing']))",
            "try:",
            "    d.start()",
            "except DeploymentError as e:",
            "    out['start'] = type(e.__cause__).__name__ + ': ' + str(e)",
            "print(json.dumps(out))",
        ]
    )
    args = {
        "key": str(site.key_file),
        "skey": str(site.store_key),
        "watchlist": str(site.watchlist),
        "photos": [str(p) for p in site.enrol],
        "store": str(tmp_path / "alerts.db"),
        "log": str(tmp_path / "audit.log"),
        "signing": str(site.signing_file),
        "stills": str(site.stills),
    }
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "cannot switch core dumps off" in out["enroll"]
    assert out["start"].startswith("HardeningError: the deployment cannot start")
    assert not (tmp_path / "audit.log").exists()  # refused before the log opened
