"""scripts/rust-toolchain.sh: which Rust toolchain setup.sh and test.sh use.

Run for real on this machine: with ~/.cargo/bin off PATH, CARGO_HOME and HOME pointed
at an empty directory and rustup's installer URL pointed at a closed port, the
detection has to fall back to Debian's rustc-web/cargo-web (installed here with
apt-get install rustc-web cargo-web rust-web-clippy rustfmt-web). The negative control
raises the minimum version past every candidate and expects the one-line error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEB_PACKAGES = ("rustc-web", "cargo-web", "rust-web-clippy", "rustfmt-web")
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused at once
LIMIT_S = 120  # a generous bound on a subprocess that must end

pytestmark = pytest.mark.slow


def _run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Sources scripts/rust-toolchain.sh in bash and runs ``script`` after it."""
    return subprocess.run(
        [
            "bash",
            "-c",
            f"set -euo pipefail; source scripts/rust-toolchain.sh; {script}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
        check=False,
    )


def _cargo_bins() -> set[str]:
    """The directories rustup installs into: $CARGO_HOME/bin and ~/.cargo/bin."""
    bins = {str(Path.home() / ".cargo" / "bin")}
    if os.environ.get("CARGO_HOME"):
        bins.add(str(Path(os.environ["CARGO_HOME"]) / "bin"))
    return bins


@pytest.fixture
def no_rustup(tmp_path: Path) -> dict[str, str]:
    """An environment without rustup: no ~/.cargo/bin, its installer unreachable."""
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p not in _cargo_bins()]
    return {
        "PATH": os.pathsep.join(path),
        "HOME": str(tmp_path),
        "CARGO_HOME": str(tmp_path / "cargo"),
        "LFR_RUSTUP_URL": UNREACHABLE,
        "APT_UPDATED": "1",  # the lists are current: no apt-get update in a test
        "LC_ALL": "C",
    }


def _installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
        check=False,
    )
    return done.stdout.strip() == "install ok installed"


@pytest.fixture(scope="module")
def debian_toolchain() -> None:
    """Skips, with the fix, where Debian's -web toolchain is not installed."""
    if shutil.which("dpkg-query") is None or shutil.which("apt-cache") is None:
        pytest.skip("not a Debian system (no dpkg-query / apt-cache)")
    missing = [p for p in DEB_PACKAGES if not _installed(p)]
    if missing:
        pytest.skip(f"not installed: {' '.join(missing)} (apt-get install them)")


def _owner(path: str) -> str:
    done = subprocess.run(
        ["dpkg-query", "-S", os.path.realpath(path)],
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
        check=False,
    )
    return done.stdout.split(":")[0]


@pytest.mark.usefixtures("debian_toolchain")
def test_debian_toolchain_is_used_without_rustup(no_rustup: dict[str, str]) -> None:
    done = _run(
        "lfr_rust_ensure; command -v cargo; cargo --version;"
        " cargo clippy --version; cargo fmt --version",
        no_rustup,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    chosen = re.fullmatch(
        r"\[rust-toolchain\] Rust: Debian's cargo-web (\S+) \((\S+)\)", lines[0]
    )
    assert chosen, done.stdout
    version, directory = chosen.groups()
    cargo = lines[1]
    assert cargo == f"{directory}/cargo"
    assert _owner(cargo) == "cargo-web"
    assert lines[2].startswith(f"cargo {version} ")
    assert lines[3].startswith("clippy ")
    assert lines[4].startswith("rustfmt ")


@pytest.mark.usefixtures("debian_toolchain")
def test_test_sh_finds_the_same_debian_toolchain(no_rustup: dict[str, str]) -> None:
    done = _run("lfr_rust_find; command -v rustc", no_rustup)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[rust-toolchain] Rust: Debian's cargo-web ")
    assert _owner(done.stdout.splitlines()[1]) == "rustc-web"


@pytest.mark.usefixtures("debian_toolchain")
def test_nothing_new_enough_is_one_clear_line(no_rustup: dict[str, str]) -> None:
    """Negative control: the same machine, with a minimum no candidate reaches."""
    done = _run("lfr_rust_ensure", {**no_rustup, "LFR_RUST_MIN": "99"})
    assert done.returncode == 1
    assert "Rust:" not in done.stdout  # nothing was chosen, nothing installed
    assert len(done.stderr.splitlines()) == 1, done.stderr
    error = done.stderr
    assert error.startswith("[rust-toolchain] no Rust 99 or newer (")
    # every step was tried, in order: the installed cargo, rustup, apt's candidate
    steps = [
        re.search(r"rustc \S+ in \S+ is older than 99", error),
        re.search(re.escape(f"rustup unreachable ({UNREACHABLE})"), error),
        re.search(r"apt's rustc-web \d+\.\d+\.\d+ is older than 99", error),
    ]
    assert all(steps), error
    assert [s.start() for s in steps if s] == sorted(s.start() for s in steps if s)
    assert "apt-get install rustc-web cargo-web rust-web-clippy rustfmt-web" in error
    assert _run("lfr_rust_find", {**no_rustup, "LFR_RUST_MIN": "99"}).returncode == 1


def _min_rust() -> str:
    text = (REPO / "Cargo.toml").read_text()
    found = re.search(r'^rust-version *= *"([0-9.]+)"', text, re.MULTILINE)
    assert found, "Cargo.toml has no rust-version"
    return found.group(1)


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def test_an_existing_rustup_toolchain_comes_first() -> None:
    """rustup's toolchain, where it is new enough, wins over Debian's and is kept."""
    cargo_bin = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin"
    if not (cargo_bin / "rustup").exists():
        pytest.skip(f"no rustup in {cargo_bin}")
    rustc = subprocess.run(
        [str(cargo_bin / "rustc"), "--version"],
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
        check=False,
    )
    if rustc.returncode != 0 or _as_tuple(rustc.stdout.split()[1]) < _as_tuple(
        _min_rust()
    ):
        pytest.skip(f"rustup's toolchain is older than {_min_rust()}: {rustc.stdout}")
    env = {
        **os.environ,
        "PATH": f"{cargo_bin}{os.pathsep}{os.environ['PATH']}",
        "LFR_RUSTUP_URL": UNREACHABLE,
    }
    done = _run("lfr_rust_ensure; command -v cargo", env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[rust-toolchain] Rust: rustup's toolchain ")
    assert done.stdout.splitlines()[-1] == f"{cargo_bin}/cargo"
