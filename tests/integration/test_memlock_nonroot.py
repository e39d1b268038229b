"""``lfr run`` as a user without ``CAP_IPC_LOCK`` under Debian's 8 MiB memlock limit.

As root, the test runs ``lfr run`` over a short video of real faces (two people on
a real watchlist, two who are not) as ``nobody`` with ``CAP_IPC_LOCK`` dropped
(``setpriv``) and ``RLIMIT_MEMLOCK`` set (``prlimit``):

- at 8 MiB it fails at once with ONE error (no traceback, nothing opened: no
  store, no log) that names one figure in three agreeing forms (systemd
  ``LimitMEMLOCK=``, ``ulimit -l`` in KiB, docker ``--ulimit memlock=`` in bytes),
  the figure ``lfr run --print-memlock`` prints;
- the same run as root, where no limit applies, never locks more than that
  figure (``VmLck`` sampled from ``/proc/PID/status``) and locks a good part of
  it (the figure is an upper bound, not a guess);
- where the machine can raise the hard limit, the run as ``nobody`` with the
  figure as its limit runs to the end (exit 0, frames processed), and
  one KiB below the figure it fails with the same error (this part skips, with
  the reason, where the hard limit cannot be raised: no ``CAP_SYS_RESOURCE``);
- ``Deployment.start()`` raises the same typed error before the audit log opens;
- where the hard limit cannot be raised (8 MiB), a deployment configured to fit
  under it (a 320x240 video, ``FaceDetector(working_size=320)``,
  ``FaceEmbedder(batch=1)``) shows the same: its ``Deployment.memlock_budget()``
  counts that detector's and embedder's own buffers; as ``nobody`` 64 KiB below
  its figure ``start()`` raises one error naming it, and at exactly the figure it
  runs to the end (every frame, faces seen, the audit log verifies);
- a lock refused outside the check points to the deployment's figure, not to a
  limit that covers only the allocation that failed.

Negative control: the same probe shows the setup really drops the capability and
sets the limit (root without ``setpriv`` is privileged), so the failure comes from
the limit. The interpreter, the package, the models and the data must be readable
by ``nobody``: the models and the run's files are copied into a temporary folder
it owns; an interpreter under a private home (pyenv in /root) is replaced by the
system's Python of the same version with the same site-packages, and the test
skips, with the reason, where none can import lfr.
"""

from __future__ import annotations

import os
import re
import shutil
import site
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
from lfr.audit import SigningKey
from lfr.demo import compose_video, pick_people
from lfr.models import model_dir
from lfr.pipeline.memlock import detector_bytes, embedder_bytes
from tests.support.enrol import enrol_usable

pytestmark = [pytest.mark.data, pytest.mark.slow]

TIMEOUT_S = 300  # each lfr run; a limit on a hang, never a speed assertion
DEBIAN_DEFAULT = 8 << 20
USER, GROUP = "nobody", "nogroup"


def _drop(limit: int) -> list[str]:
    """The command prefix: ``limit`` bytes of memlock, as ``nobody``, no IPC_LOCK."""
    return [
        "prlimit",
        f"--memlock={limit}:{limit}",
        "setpriv",
        f"--reuid={USER}",
        f"--regid={GROUP}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-ipc_lock",
        "--",
    ]


@dataclass(frozen=True)
class Site:
    root: Path
    python: str
    env: dict[str, str]

    def lfr_run(self, *extra: str) -> list[str]:
        return [
            self.python,
            "-m",
            "lfr",
            "run",
            "--source",
            str(self.root / "people.avi"),
            "--watchlist",
            str(self.root / "w.lfrw"),
            "--watchlist-key",
            str(self.root / "watchlist.key"),
            "--store-key",
            str(self.root / "store.key"),
            "--store",
            str(self.root / "run" / "alerts.db"),
            "--audit",
            str(self.root / "run" / "audit.log"),
            "--signing-key",
            str(self.root / "signing" / "audit.key"),
            *extra,
        ]


def _as_user(
    site: Site, limit: int, command: list[str], timeout: float = TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _drop(limit) + command,
        env=site.env,
        cwd=site.root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _interpreter(root: Path) -> tuple[str, dict[str, str]]:
    """An interpreter ``nobody`` can run that imports this lfr, and its env."""
    package = Path(lfr.__file__).resolve().parents[1]
    paths = [str(package), *site.getsitepackages()]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
        "LFR_MODEL_DIR": str(root / "models"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join(paths),
        "LANG": "C.UTF-8",
    }
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    tried = []
    for python in (sys.executable, f"/usr/bin/python{version}"):
        probe = subprocess.run(
            [
                *_drop(DEBIAN_DEFAULT),
                python,
                "-c",
                "import sys, lfr, cv2, onnxruntime; print(lfr.__file__)",
            ],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip().startswith(str(package)):
            return python, env
        tried.append(f"{python}: {(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    pytest.skip(f"no interpreter {USER} can run with this lfr ({'; '.join(tried)})")


@pytest.fixture(scope="module")
def nonroot_site(
    lfw_dir: Path, yunet_path: Path, embedder_path: Path
) -> Iterator[Site]:
    if os.geteuid() != 0:
        pytest.skip("needs root, to run lfr as another user without CAP_IPC_LOCK")
    for tool in ("setpriv", "prlimit"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing (Debian: apt-get install util-linux)")
    try:
        import pwd

        pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no user {USER}")
    root = Path(tempfile.mkdtemp(prefix="lfr-memlock-"))
    try:
        root.chmod(0o755)
        shutil.copytree(model_dir(), root / "models")
        (root / "run").mkdir()
        (root / "signing").mkdir()
        detector, embedder = lfr.FaceDetector(), lfr.FaceEmbedder()
        chosen = pick_people(lfw_dir, enrolled=2, unknown=2, seed=11)
        lfr.Key.generate().save(root / "store.key")
        key = lfr.Key.generate()  # the watchlist's own key
        key.save(root / "watchlist.key")
        SigningKey.generate().save(root / "signing" / "audit.key")
        wl = lfr.Watchlist.create(root / "w.lfrw", key, embedder=embedder)
        for name, photos in chosen.enrol.items():
            enrol_usable(wl, name, photos, detector, embedder)
        assert len(wl) >= 1
        wl.save()
        wl.destroy()
        detector.close()
        people = [*chosen.probe.values(), *([p] for p in chosen.unknown)]
        compose_video(
            people, root / "people.avi", size=(960, 540), fps=10, seed=11,
            seconds_per_person=1.0, per_frame=(1, 2),
        )  # fmt: skip
        subprocess.run(["chown", "-R", f"{USER}:{GROUP}", str(root)], check=True)
        python, env = _interpreter(root)
        yield Site(root, python, env)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _figure(stderr: str, prefix: str = "lfr run: ") -> int:
    """The one figure the error names, checked to agree in its three forms."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(prefix), stderr
    assert "Traceback" not in stderr
    docker = re.findall(r"--ulimit memlock=(\d+):(\d+)", stderr)
    ulimit = re.findall(r"ulimit -l (\d+)", stderr)
    systemd = re.findall(r"LimitMEMLOCK=(\d+)K", stderr)
    assert len(docker) == len(ulimit) == len(systemd) == 1, stderr
    soft, hard = (int(v) for v in docker[0])
    assert soft == hard == int(ulimit[0]) * 1024 == int(systemd[0]) * 1024
    return soft


class _VmLckPeak:
    """Samples ``VmLck`` of a running process every few milliseconds."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._pid = pid
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        path = Path(f"/proc/{self._pid}/status")
        while not self._done.is_set():
            try:
                text = path.read_text()
            except OSError:
                return
            match = re.search(r"^VmLck:\s+(\d+) kB", text, re.MULTILINE)
            if match:
                self.peak = max(self.peak, int(match.group(1)) * 1024)
            time.sleep(0.005)

    def stop(self) -> int:
        self._done.set()
        self._thread.join(5)
        return self.peak


def test_setup_drops_the_capability_and_sets_the_limit(nonroot_site: Site) -> None:
    probe = "from lfr.secure import memory_status as m; r = m(); " + (
        "print(r.memlock_privileged, r.memlock_limit)"
    )
    dropped = _as_user(nonroot_site, DEBIAN_DEFAULT, [nonroot_site.python, "-c", probe])
    assert dropped.stdout.split() == ["False", str(DEBIAN_DEFAULT)], dropped.stderr
    # Negative control: root under the same limit keeps CAP_IPC_LOCK.
    as_root = subprocess.run(
        [*_drop(DEBIAN_DEFAULT)[:2], sys.executable, "-c", probe],
        env=nonroot_site.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert as_root.stdout.split() == ["True", str(DEBIAN_DEFAULT)], as_root.stderr


@pytest.fixture(scope="module")
def figure(nonroot_site: Site) -> int:
    """The figure ``lfr run --print-memlock`` prints for the run, as ``nobody``."""
    printed = _as_user(
        nonroot_site, DEBIAN_DEFAULT, nonroot_site.lfr_run("--print-memlock")
    )
    assert printed.returncode == 0, printed.stderr
    found = re.findall(r"--ulimit memlock=(\d+):\1", printed.stdout)
    assert len(found) == 1, printed.stdout
    value = int(found[0])
    assert f"LimitMEMLOCK={value // 1024}K" in printed.stdout
    assert f"ulimit -l {value // 1024}" in printed.stdout
    return value


def _run_watched(command: list[str], site: Site) -> tuple[int, str, str, int]:
    """Runs ``command``; returns its exit status, stdout, stderr and VmLck peak."""
    process = subprocess.Popen(
        command,
        env=site.env,
        cwd=site.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = _VmLckPeak(process.pid)
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        peak = sampler.stop()
    return process.returncode, out, err, peak


def _ran(status: int, err: str) -> None:
    assert status == 0, err
    assert "stopped; audit log" in err
    frames = [int(n) for n in re.findall(r"frames (\d+)", err)]
    assert frames, err
    assert frames[-1] > 0


def test_8_mib_gives_one_error_naming_the_figure(
    nonroot_site: Site, figure: int
) -> None:
    site = nonroot_site
    failed = _as_user(site, DEBIAN_DEFAULT, site.lfr_run())
    assert failed.returncode == 1, failed.stderr
    assert "RLIMIT_MEMLOCK is 8.0 MiB" in failed.stderr
    assert _figure(failed.stderr) == figure
    assert figure > DEBIAN_DEFAULT
    assert not (site.root / "run" / "alerts.db").exists(), "nothing may be opened"
    assert not (site.root / "run" / "audit.log").exists()


def test_the_figure_covers_what_a_run_locks(nonroot_site: Site, figure: int) -> None:
    """The same run as root (no limit applies): what it locks stays within the figure.

    ``mlock`` succeeds while the pages locked stay within the limit, so a peak at
    or below the figure is what lets the run pass at the figure; the peak is
    sampled, so it is a lower bound of the real one.
    """
    site = nonroot_site
    out = site.root / "run-root"
    out.mkdir(exist_ok=True)
    command = site.lfr_run(
        "--store", str(out / "alerts.db"), "--audit", str(out / "audit.log")
    )
    status, _, err, peak = _run_watched(command, site)
    _ran(status, err)
    print(f"figure {figure} bytes, VmLck peak sampled {peak} bytes")
    assert 0 < peak <= figure
    assert peak >= figure // 4, f"the figure {figure} is far above the peak {peak}"


def test_the_figure_runs_as_that_user(nonroot_site: Site, figure: int) -> None:
    site = nonroot_site
    probe = subprocess.run(
        ["prlimit", f"--memlock={figure}:{figure}", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"this machine cannot raise RLIMIT_MEMLOCK to {figure} bytes (the hard "
            f"limit is lower and CAP_SYS_RESOURCE is missing: "
            f"{probe.stderr.strip()}); test_the_figure_covers_what_a_run_locks "
            "shows the run's locked peak within the figure, and "
            "test_small_deployment_at_its_figure_runs_to_the_end a deployment that "
            "fits the hard limit running at its figure, instead"
        )
    below = _as_user(site, figure - 1024, site.lfr_run())
    assert below.returncode == 1, below.stderr
    assert _figure(below.stderr) == figure
    status, _, err, peak = _run_watched(_drop(figure) + site.lfr_run(), site)
    _ran(status, err)
    assert (site.root / "run" / "audit.log").exists()
    print(f"figure {figure} bytes, VmLck peak sampled {peak} bytes")
    assert 0 < peak <= figure


_START = """
import sys
from pathlib import Path
import lfr
from lfr.alerts import AlertStore
from lfr.errors import MemlockBudgetError
root = Path(sys.argv[1])
wl = lfr.Watchlist.open(root / "w.lfrw", lfr.Key.from_file(root / "watchlist.key"))
store_key = lfr.Key.from_file(root / "store.key")
store = AlertStore(root / "run-api" / "alerts.db", store_key)
dep = lfr.Deployment(
    source=str(root / "people.avi"), watchlist=wl, store=store,
    audit=root / "run-api" / "audit.log", signing_key=root / "signing" / "audit.key",
)
try:
    dep.start()
except MemlockBudgetError as exc:
    print("required", exc.required, "limit", exc.limit)
    print("budget", dep.memlock_budget().required)
"""


def test_deployment_start_checks_the_budget_first(
    nonroot_site: Site, figure: int
) -> None:
    site = nonroot_site
    out = site.root / "run-api"
    out.mkdir(exist_ok=True)
    shutil.chown(out, USER, GROUP)
    result = _as_user(site, DEBIAN_DEFAULT, [site.python, "-c", _START, str(site.root)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "required",
        str(figure),
        "limit",
        str(DEBIAN_DEFAULT),
        "budget",
        str(figure),
    ], result.stdout
    assert not (out / "audit.log").exists(), "the check comes before the log opens"


# -- a deployment whose own figure is below the hard limit -----------------------------
#
# Where the hard limit cannot be raised (no CAP_SYS_RESOURCE, hard limit 8 MiB), the
# default run's figure cannot be set, but a deployment configured for a small box can
# be: small frames, a detector that works at 320 px and an embedder that embeds one
# face (and its mirror image) at a time. Its figure, as Deployment.memlock_budget()
# computes it, is below 8 MiB; the same process as nobody, without CAP_IPC_LOCK, is
# refused 64 KiB below it and runs to the end at exactly it.

SMALL_SIZE = (320, 240)  # frames of the small video
SMALL_WORKING = 320  # FaceDetector(working_size=)
SMALL_BATCH = 1  # FaceEmbedder(batch=)
SMALL_MARGIN = 64 << 10

_SMALL = """
import sys
from pathlib import Path
import lfr
from lfr.alerts import AlertStore
from lfr.errors import MemlockBudgetError
from lfr.secure import memory_status
root, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
working, batch, timeout = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
wl = lfr.Watchlist.open(root / "w.lfrw", lfr.Key.from_file(root / "watchlist.key"))
store = AlertStore(out / "alerts.db", lfr.Key.from_file(root / "store.key"))
try:
    dep = lfr.Deployment(
        source=str(root / "small.avi"), watchlist=wl, store=store,
        audit=out / "audit.log", signing_key=root / "signing" / "audit.key",
        detector=lfr.FaceDetector(working_size=working),
        embedder=lfr.FaceEmbedder(batch=batch),
    )
    if mode == "budget":
        print(dep.memlock_budget().describe())
        wl.destroy()
        sys.exit(0)
    m = memory_status()
    print("privileged", m.memlock_privileged, "limit", m.memlock_limit, flush=True)
    try:
        dep.start()
    except MemlockBudgetError as exc:
        print(f"MemlockBudgetError: {exc}", file=sys.stderr)
        sys.exit(3)
    finished = dep.wait(timeout)
    dep.close()
    s = dep.stats()
    print("finished", finished, "frames", s.frames, "faces", s.faces,
          "alerts", s.alerts, flush=True)
finally:
    store.close()
"""


@dataclass(frozen=True)
class Small:
    site: Site
    frames: int  # frames in the small video

    def command(self, out: Path, mode: str) -> list[str]:
        return [
            self.site.python, "-c", _SMALL, str(self.site.root), str(out), mode,
            str(SMALL_WORKING), str(SMALL_BATCH), str(TIMEOUT_S - 30),
        ]  # fmt: skip

    def out(self, name: str) -> Path:
        path = self.site.root / name
        path.mkdir()
        shutil.chown(path, USER, GROUP)
        return path


@pytest.fixture(scope="module")
def small(nonroot_site: Site, lfw_dir: Path) -> Small:
    """A small video of the same people, beside the other run's files."""
    chosen = pick_people(lfw_dir, enrolled=2, unknown=2, seed=11)
    people = [*chosen.probe.values(), *([p] for p in chosen.unknown)]
    video = nonroot_site.root / "small.avi"
    truth = compose_video(
        people, video, size=SMALL_SIZE, fps=10, seed=11, seconds_per_person=1.0,
        per_frame=(1, 2), face_widths=(70, 110),
    )  # fmt: skip
    shutil.chown(video, USER, GROUP)
    return Small(nonroot_site, truth.frames)


@pytest.fixture(scope="module")
def small_figure(small: Small) -> int:
    """``Deployment.memlock_budget()`` of the small deployment, as ``nobody``."""
    printed = _as_user(
        small.site, DEBIAN_DEFAULT, small.command(small.out("small-budget"), "budget")
    )
    assert printed.returncode == 0, printed.stderr
    print(printed.stdout)
    parts = dict(re.findall(r"^(\S.*?)\s{2,}(\d+) bytes", printed.stdout, re.MULTILINE))
    # The detector's and the embedder's own buffers, not the defaults'.
    assert int(parts["detector buffers"]) == detector_bytes(SMALL_WORKING)
    assert int(parts["embedder buffers"]) == embedder_bytes(150, 128, 2 * SMALL_BATCH)
    found = re.findall(r"--ulimit memlock=(\d+):\1", printed.stdout)
    assert len(found) == 1, printed.stdout
    value = int(found[0])
    assert int(parts["total"]) == value
    assert value < DEBIAN_DEFAULT, "the small deployment must fit the hard limit"
    return value


def test_small_deployment_below_its_figure_gets_one_error(
    small: Small, small_figure: int
) -> None:
    out = small.out("small-below")
    limit = small_figure - SMALL_MARGIN
    failed = _as_user(small.site, limit, small.command(out, "run"))
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert failed.stdout.split() == ["privileged", "False", "limit", str(limit)]
    assert _figure(failed.stderr, "MemlockBudgetError: ") == small_figure
    assert f"RLIMIT_MEMLOCK is {limit / 1048576:.1f} MiB" in failed.stderr
    assert not (out / "audit.log").exists(), "the check comes before the log opens"


def test_small_deployment_at_its_figure_runs_to_the_end(
    small: Small, small_figure: int
) -> None:
    out = small.out("small-at")
    status, stdout, err, peak = _run_watched(
        _drop(small_figure) + small.command(out, "run"), small.site
    )
    assert status == 0, stdout + err
    lines = stdout.splitlines()
    assert lines[0].split() == ["privileged", "False", "limit", str(small_figure)]
    done = lines[-1].split()
    assert done[:4] == ["finished", "True", "frames", str(small.frames)], stdout
    assert int(done[5]) > 0, f"no face was seen: {stdout}"
    log = out / "audit.log"
    assert log.exists()
    public = SigningKey.load(small.site.root / "signing" / "audit.key").public_key()
    report = lfr.audit.verify(log, public, store=out / "alerts.db")
    assert report.ok, report
    print(stdout, f"small figure {small_figure} bytes, VmLck peak sampled {peak}")
    # The kernel kept the run within the limit; the figure is not a wild guess.
    assert small_figure // 4 <= peak <= small_figure


def test_a_failed_allocation_points_to_the_deployment_figure(
    nonroot_site: Site,
) -> None:
    """A lock refused outside the budget's check names no per-allocation limit."""
    probe = (
        "import lfr\ntry:\n    lfr.SecureBuffer(1 << 20)\n"
        "except lfr.errors.SecureMemoryError as exc:\n    print(exc)\n"
    )
    result = _as_user(nonroot_site, 64 << 10, [nonroot_site.python, "-c", probe])
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert message.startswith("cannot lock 1.0 MiB"), message
    assert "RLIMIT_MEMLOCK is 64 KiB" in message
    assert "lfr run --print-memlock" in message
    assert "Deployment.memlock_budget()" in message
    assert "at least" not in message  # no limit that covers only this buffer
