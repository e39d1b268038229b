"""scripts/debian_crates.py fetch: lfr's crates from the Debian packages it pins.

Run for real against Debian's archive (deb.debian.org, or LFR_DEBIAN_MIRROR): on this
host into a temporary work folder, and in a Debian 13 (trixie) tree that
``mmdebstrap`` makes, where ``scripts/cargo-source.sh`` and ``cargo build`` run with
crates.io unreachable. Both check that the step leaves the system's ``/etc/apt`` and
``/var/lib/dpkg/status`` as they were. The negative controls feed fetch a lock with
one SHA-256 changed and one with a version the archive does not offer, and expect the
one error line each.

The Debian 13 test takes minutes (about 50 s for the tree, cached under
``.cargo-debian/trixie/`` for the day, and a release build): it runs only with
``LFR_TEST_DEBIAN13=1``, as root, where ``mmdebstrap`` is installed
(``apt-get install mmdebstrap``).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "debian_crates.py"
LOCK = REPO / "scripts" / "debian-crates.lock"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
FETCH_LIMIT_S = 600  # a generous bound on a fetch: the index and 27 small packages
TREE_LIMIT_S = 1200  # mmdebstrap: about 50 s here
BUILD_LIMIT_S = 1800  # the crate step and a release build in the tree: about 40 s here
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once
MIRROR = os.environ.get("LFR_DEBIAN_MIRROR", "http://deb.debian.org/debian")
TRIXIE_SOURCES = (
    f"deb {MIRROR} trixie main",
    f"deb {MIRROR} trixie-updates main",
    "deb http://deb.debian.org/debian-security trixie-security main",
)
# Debian 13's rustc (1.85) is older than Cargo.toml's rust-version; rustc-web is not.
TRIXIE_PACKAGES = (
    "python3",
    "python3-dev",
    "build-essential",
    "ca-certificates",
    "debian-archive-keyring",
    "rustc-web",
    "cargo-web",
)


def _digest(path: Path) -> str:
    """A SHA-256 over a file, or a folder's names, links and contents."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for item in sorted(path.rglob("*")):
        h.update(str(item.relative_to(path)).encode() + b"\0")
        if item.is_symlink():
            h.update(b"link:" + os.readlink(item).encode())
        elif item.is_file():
            h.update(item.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _system_state(root: Path) -> dict[str, str]:
    """The digests of the apt configuration and the package state under ``root``."""
    return {
        name: _digest(root / name)
        for name in ("etc/apt", "var/lib/dpkg/status")
        if (root / name).exists()
    }


def _fetch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "fetch", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=FETCH_LIMIT_S,
        check=False,
    )


def _host_pins() -> list[list[str]]:
    """This machine's lines of the lock, split into their six fields."""
    arch = subprocess.run(
        ["dpkg", "--print-architecture"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    lines = [
        line.split()
        for line in LOCK.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    mine = [fields for fields in lines if fields[2] == arch]
    assert mine, f"the lock pins nothing for {arch}"
    return mine


def _lock_with(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the lock with one line changed."""
    text = LOCK.read_text()
    assert text.count(old) == 1
    lock = tmp_path / "debian-crates.lock"
    lock.write_text(text.replace(old, new))
    return lock


def _one_error_line(stderr: str) -> str:
    """The error line of a failed fetch; every line before it is a progress line."""
    *progress, error = stderr.splitlines()
    assert error.startswith("[debian-crates] error: "), stderr
    assert all(
        line.startswith("[debian-crates] ") and " error: " not in line
        for line in progress
    ), stderr
    return error


@pytest.fixture(scope="module")
def debian_host() -> None:
    """Skips where this is not a Debian-like host (fetch needs apt and dpkg-deb)."""
    missing = [t for t in ("apt-get", "dpkg-deb", "dpkg") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not a Debian host: no {' '.join(missing)}")
    if not KEYRING.is_file():
        pytest.skip(f"no {KEYRING} (apt-get install debian-archive-keyring)")


@pytest.fixture(scope="module")
def fetched(
    debian_host: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str], dict[str, str]]:
    """One real fetch into a fresh work folder; the system state before it."""
    work = tmp_path_factory.mktemp("debian-crates")
    before = _system_state(Path("/"))
    done = _fetch("--work", str(work))
    return work, done, before


def test_fetch_unpacks_every_pinned_crate_and_leaves_the_system_alone(
    fetched: tuple[Path, subprocess.CompletedProcess[str], dict[str, str]],
) -> None:
    work, done, before = fetched
    assert done.returncode == 0, done.stderr
    registry = Path(done.stdout.strip())
    assert registry == work / "root" / "usr" / "share" / "cargo" / "registry"
    pins = _host_pins()
    crates = sorted(d.name for d in registry.iterdir() if (d / "Cargo.toml").is_file())
    assert len(crates) == len(pins), crates
    assert any(re.fullmatch(r"pyo3-0\.28\.\d+", c) for c in crates), crates
    for package, version, _arch, sha256, size, filename in pins:
        deb = work / "debs" / filename.rsplit("/", 1)[-1]
        assert deb.stat().st_size == int(size), (package, version)
        assert hashlib.sha256(deb.read_bytes()).hexdigest() == sha256, package
    # apt's state is the private one in the work folder, not the system's
    assert (work / "apt" / "sources.list").read_text().startswith("deb [arch=")
    assert list((work / "apt" / "lists").glob("*_InRelease"))
    assert _system_state(Path("/")) == before


def test_a_changed_hash_in_the_lock_is_refused(
    fetched: tuple[Path, subprocess.CompletedProcess[str], dict[str, str]],
    tmp_path: Path,
) -> None:
    """Negative control for the pin: apt fetches the real file, fetch refuses it."""
    work, done, _ = fetched
    assert done.returncode == 0, done.stderr
    *_, sha256, _size, filename = _host_pins()[0]
    wrong = sha256[::-1]
    lock = _lock_with(tmp_path, f" {sha256} ", f" {wrong} ")
    refused = _fetch("--lock", str(lock), "--work", str(work))
    assert refused.returncode == 1
    assert refused.stdout == ""
    basename = filename.rsplit("/", 1)[-1]
    assert _one_error_line(refused.stderr) == (
        f"[debian-crates] error: {basename} has SHA-256 {sha256}, but "
        f"{lock.resolve()} pins {wrong}: refusing it"
    )
    assert not (work / "debs" / basename).exists()  # the refused file is not kept


def test_a_version_the_archive_does_not_offer_is_one_clear_line(
    fetched: tuple[Path, subprocess.CompletedProcess[str], dict[str, str]],
    tmp_path: Path,
) -> None:
    work, done, _ = fetched
    assert done.returncode == 0, done.stderr
    fields = _host_pins()[0]
    package, _version, arch, _sha256, _size, filename = fields
    gone = "0.0.0~gone-1"
    pool = filename.rsplit("/", 1)[0]
    line = [package, gone, arch, *fields[3:5], f"{pool}/{package}_{gone}_{arch}.deb"]
    lock = _lock_with(tmp_path, " ".join(fields), " ".join(line))
    refused = _fetch("--lock", str(lock), "--work", str(work))
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert _one_error_line(refused.stderr).startswith(
        f"[debian-crates] error: Debian's archive ({MIRROR} forky) no longer offers "
        f"{package} {gone} ({arch}), pinned in {lock.resolve()}: re-pin with "
        "`python3 scripts/debian_crates.py pin`, build where crates.io is reachable, "
        "or set LFR_DEBIAN_MIRROR to a snapshot"
    )
    assert not list((work / "debs").glob(f"*{gone}*"))  # nothing was downloaded


def test_a_package_the_archive_dropped_is_one_clear_line(
    fetched: tuple[Path, subprocess.CompletedProcess[str], dict[str, str]],
    tmp_path: Path,
) -> None:
    """A package name the suite no longer has at all (apt-cache: No packages found)."""
    work, done, _ = fetched
    assert done.returncode == 0, done.stderr
    fields = _host_pins()[0]
    package, version, arch, *_ = fields
    dropped = "librust-lfr-dropped-dev"
    line = [dropped, *fields[1:5], fields[5].replace(package, dropped)]
    lock = _lock_with(tmp_path, " ".join(fields), " ".join(line))
    refused = _fetch("--lock", str(lock), "--work", str(work))
    assert refused.returncode == 1
    assert _one_error_line(refused.stderr).startswith(
        f"[debian-crates] error: Debian's archive ({MIRROR} forky) no longer offers "
        f"{dropped} {version} ({arch})"
    )


@pytest.mark.parametrize(
    "filename",
    ["pool/main/r/x/../../../../etc/passwd_1_amd64.deb", "/etc/x_1_amd64.deb"],
)
def test_a_hostile_file_name_in_the_lock_is_refused(
    debian_host: None, tmp_path: Path, filename: str
) -> None:
    fields = _host_pins()[0]
    lock = _lock_with(tmp_path, " ".join(fields), " ".join([*fields[:5], filename]))
    refused = _fetch("--lock", str(lock), "--work", str(tmp_path / "work"))
    assert refused.returncode == 1
    assert "is malformed" in _one_error_line(refused.stderr)
    assert not (tmp_path / "work").exists()


def test_apt_names_an_epoch_with_percent_3a() -> None:
    """apt-get download writes ``1:2.0-1`` as ``1%3a2.0-1``; the pool name has none."""
    spec = importlib.util.spec_from_file_location(
        "debian_crates", REPO / "scripts" / "debian_crates.py"
    )
    assert spec is not None
    assert spec.loader is not None
    debian_crates: Any = importlib.util.module_from_spec(spec)
    sys.modules["debian_crates"] = debian_crates  # dataclasses look their module up
    try:
        spec.loader.exec_module(debian_crates)
    finally:
        del sys.modules["debian_crates"]
    pin = debian_crates.Pin(
        "librust-x-dev",
        "1:2.0-1",
        "amd64",
        "0" * 64,
        1,
        "pool/main/r/rust-x/librust-x-dev_2.0-1_amd64.deb",
    )
    assert pin.basename == "librust-x-dev_1%3a2.0-1_amd64.deb"
    indep = debian_crates.Pin(
        "librust-y-dev",
        "3.1-2",
        "amd64",
        "0" * 64,
        1,
        "pool/main/r/rust-y/librust-y-dev_3.1-2_all.deb",
    )
    assert indep.basename == "librust-y-dev_3.1-2_all.deb"


# ---------------------------------------------------------------------------------
# Debian 13


def _min_rust() -> tuple[int, ...]:
    found = re.search(
        r'^rust-version *= *"([0-9.]+)"', (REPO / "Cargo.toml").read_text(), re.M
    )
    assert found, "Cargo.toml has no rust-version"
    return tuple(int(p) for p in found.group(1).split("."))


@pytest.fixture(scope="module")
def trixie_tar() -> Path:
    """A Debian 13 tree as a tar file, made by mmdebstrap, cached for the day."""
    if os.environ.get("LFR_TEST_DEBIAN13") != "1":
        pytest.skip("takes minutes: set LFR_TEST_DEBIAN13=1 to run it")
    missing = [t for t in ("mmdebstrap", "unshare", "chroot") if not shutil.which(t)]
    if missing:
        pytest.skip(f"no {' '.join(missing)} (apt-get install mmdebstrap)")
    if os.geteuid() != 0:
        pytest.skip("needs root (mmdebstrap --mode=root, chroot)")
    recipe = "\n".join((*TRIXIE_SOURCES, *TRIXIE_PACKAGES)).encode()
    key = f"{datetime.date.today()}-{hashlib.sha256(recipe).hexdigest()[:12]}"
    cache = REPO / ".cargo-debian" / "trixie"
    tar = cache / f"trixie-{key}.tar"
    if tar.is_file():
        return tar
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("trixie-*.tar*"):
        old.unlink()
    partial = tar.with_suffix(".tar.partial")
    made = subprocess.run(
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=apt",
            "--format=tar",
            f"--include={','.join(TRIXIE_PACKAGES)}",
            "trixie",
            str(partial),
            *TRIXIE_SOURCES,
        ],
        capture_output=True,
        text=True,
        timeout=TREE_LIMIT_S,
        check=False,
    )
    assert made.returncode == 0, made.stderr[-4000:]
    partial.rename(tar)
    return tar


# Runs inside the tree, in a copy of the working tree at /src. crates.io is made
# unreachable through https_proxy (Python's urllib and cargo honour it; apt fetches
# Debian's archive over http, which it leaves alone).
IN_TRIXIE = f"""
set -euo pipefail
cd /src
. /etc/os-release; echo "os: $PRETTY_NAME"
echo "rustc: $(rustc --version) from $(dpkg -S /usr/bin/rustc | cut -d: -f1)"
echo "cargo: $(cargo --version)"
echo "python3: $(python3 --version)"
export https_proxy={UNREACHABLE} HTTPS_PROXY={UNREACHABLE}
bash scripts/cargo-source.sh
cat .cargo/config.toml
cargo build --offline --release --features python,pyo3/extension-module
python3 - <<'PY'
import importlib.machinery, importlib.util
path = "target/release/lib_core.so"
loader = importlib.machinery.ExtensionFileLoader("lfr._core", path)
spec = importlib.util.spec_from_file_location("lfr._core", path, loader=loader)
core = importlib.util.module_from_spec(spec)
loader.exec_module(core)
print("lfr._core loaded:", ", ".join(sorted(n for n in dir(core) if n[0] != "_")))
PY
"""


def _copy_working_tree(dest: Path) -> None:
    """Copies the tracked and new (not ignored) files of the working tree."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    for name in files.decode().split("\0"):
        source = REPO / name
        if name and source.is_file() and not source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.fixture
def trixie_root(trixie_tar: Path, tmp_path: Path) -> Iterator[Path]:
    """A fresh copy of the Debian 13 tree, removed afterwards (about 1 GB)."""
    root = tmp_path / "trixie"
    root.mkdir()
    try:
        subprocess.run(
            ["tar", "-C", str(root), "-xf", str(trixie_tar)],
            timeout=TREE_LIMIT_S,
            check=True,
        )
        yield root
    finally:
        shutil.rmtree(root)


@pytest.mark.slow
def test_crate_step_and_build_in_debian_13(trixie_root: Path) -> None:
    root = trixie_root
    assert 'VERSION_ID="13"' in (root / "etc" / "os-release").read_text()
    _copy_working_tree(root / "src")
    before = _system_state(root)
    assert set(before) == {"etc/apt", "var/lib/dpkg/status"}
    # A private mount namespace: /proc inside the tree is gone when the step ends.
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "sh",
            "-c",
            'mount -t proc proc "$0/proc" && exec chroot "$0" /usr/bin/env -i'
            " PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8"
            ' bash -c "$1"',
            str(root),
            IN_TRIXIE,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BUILD_LIMIT_S,
        check=False,
    )
    output = done.stdout
    print(output)
    assert done.returncode == 0, output
    assert "os: Debian GNU/Linux 13 (trixie)" in output
    rustc = re.search(r"^rustc: rustc (\d+)\.(\d+)\.(\d+) .* from (\S+)$", output, re.M)
    assert rustc, output
    assert tuple(int(v) for v in rustc.groups()[:3]) >= _min_rust()
    assert rustc.group(4) == "rustc-web"
    assert "[cargo-source] crates.io is unreachable" in output
    assert 'directory = "/src/.cargo-debian/root/usr/share/cargo/registry"' in output
    assert re.search(r"^\s*Compiling pyo3 v0\.28\.", output, re.M), output
    assert "Finished `release` profile" in output
    loaded = re.search(r"^lfr._core loaded: (.*)$", output, re.M)
    assert loaded, output
    assert "Matcher" in loaded.group(1).split(", ")
    assert (root / "src" / ".cargo-debian" / "apt" / "sources.list").is_file()
    assert _system_state(root) == before
