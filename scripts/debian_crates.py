#!/usr/bin/env python3
"""lfr's Rust crates from Debian's archive, for machines that cannot reach crates.io.

Debian packages every crate it ships as a ``librust-*-dev`` binary package that holds
the crate's source under ``/usr/share/cargo/registry``. This script fetches the
packages that carry exactly the crates cargo needs for lfr, with apt, and unpacks them
into a project-local directory registry, without touching the system:

- apt runs with a private sources list, state and cache under ``.cargo-debian/apt``
  (the system's ``/etc/apt`` sources and ``/var/lib`` state are not read or changed);
  the archive's ``InRelease`` is checked against the system's Debian keyring;
- every ``.deb`` is pinned by SHA-256 in ``scripts/debian-crates.lock`` and checked
  again after apt downloads it;
- ``dpkg-deb -x`` unpacks them into ``.cargo-debian/root``; cargo reads
  ``.cargo-debian/root/usr/share/cargo/registry`` (``scripts/cargo-source.sh`` writes
  the source replacement).

Commands:

  python3 scripts/debian_crates.py fetch   # what scripts/cargo-source.sh runs offline
  python3 scripts/debian_crates.py pin     # maintainers: re-resolve, rewrite the lock

``fetch --lock FILE --work DIR`` reads another lock and works in another folder (tests).

``pin`` resolves the set with cargo itself: it starts from the packages of the crates
in Cargo.toml, lets ``cargo generate-lockfile`` say which crate is missing, adds the
packages that carry it, and repeats; the lock then holds the packages of the crates
in the resulting Cargo.lock, for amd64 and arm64. Only the standard library is used
(Debian 12's python3 is 3.11, Debian 13's 3.13).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "scripts" / "debian-crates.lock"
WORK = ROOT / ".cargo-debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MIRROR = os.environ.get("LFR_DEBIAN_MIRROR", "http://deb.debian.org/debian")
ARCHES = ("amd64", "arm64")
REGISTRY_IN_DEB = Path("usr/share/cargo/registry")


class Failure(Exception):  # noqa: N818 (a step that fails, not an error type)
    """A step that cannot go on; its message is printed as one line."""


def log(msg: str) -> None:
    """Prints one progress line."""
    print(f"[debian-crates] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Pin:
    """One pinned ``.deb``: a line of the lock."""

    package: str
    version: str
    arch: str
    sha256: str
    size: int
    filename: str

    @property
    def basename(self) -> str:
        """The file name ``apt-get download`` gives the ``.deb``.

        apt names it ``package_version_arch.deb`` with an epoch's colon as ``%3a``
        (the pool's file name has no epoch); ``arch`` is ``all`` for
        architecture-independent packages, as in the pool's name.
        """
        file_arch = self.filename.rsplit("_", 1)[-1].removesuffix(".deb")
        return f"{self.package}_{self.version.replace(':', '%3a')}_{file_arch}.deb"

    def line(self) -> str:
        """The lock line for this pin."""
        return " ".join(
            (
                self.package,
                self.version,
                self.arch,
                self.sha256,
                str(self.size),
                self.filename,
            )
        )


def read_lock(path: Path = LOCK) -> tuple[str, list[Pin]]:
    """Returns the suite and the pins of the lock file."""
    suite = ""
    pins: list[Pin] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("# suite:"):
            suite = line.split(":", 1)[1].strip()
            continue
        if line.startswith("# pinned:"):
            continue
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if (
            len(parts) != 6
            or not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", parts[0])
            or not re.fullmatch(r"([0-9]+:)?[A-Za-z0-9.+~-]+", parts[1])
            or not re.fullmatch(r"[a-z0-9-]+", parts[2])
            or not re.fullmatch(r"[0-9a-f]{64}", parts[3])
            or not parts[4].isdigit()
            or not re.fullmatch(r"pool/[A-Za-z0-9+.~_/-]+_[a-z0-9-]+\.deb", parts[5])
            or ".." in parts[5]
        ):
            raise Failure(f"{path.name} line {n} is malformed: {line!r}")
        pins.append(
            Pin(parts[0], parts[1], parts[2], parts[3], int(parts[4]), parts[5])
        )
    if not suite:
        raise Failure(f"{path.name} names no suite ('# suite: NAME')")
    return suite, pins


class PrivateApt:
    """apt with its own sources list, state and cache: the system's are left alone."""

    def __init__(self, base: Path, suite: str, arches: tuple[str, ...]) -> None:
        self.base = base
        self.suite = suite
        self.arches = arches
        for sub in ("lists/partial", "cache/archives/partial", "parts", "prefs"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "status").touch()
        if not KEYRING.is_file():
            raise Failure(
                f"{KEYRING} is missing: install debian-archive-keyring to check "
                "the archive's signatures"
            )
        (base / "sources.list").write_text(
            f"deb [arch={','.join(arches)} signed-by={KEYRING}] {MIRROR} {suite} main\n"
        )
        self.options = [
            f"-oDir::Etc::SourceList={base / 'sources.list'}",
            f"-oDir::Etc::SourceParts={base / 'parts'}",
            f"-oDir::State::Lists={base / 'lists'}",
            f"-oDir::State::status={base / 'status'}",
            f"-oDir::Cache={base / 'cache'}",
            f"-oDir::Etc::Preferences={base / 'prefs' / 'none'}",
            f"-oDir::Etc::PreferencesParts={base / 'prefs'}",
            "-oAPT::Architecture=" + arches[0],
            *(f"-oAPT::Architectures::={a}" for a in arches),
            "-oDebug::NoLocking=1",
            "-oAcquire::Languages=none",
            # The signature is checked, its age is not: every .deb is pinned by SHA-256,
            # so an old index can offer nothing but the pinned files, and a frozen
            # mirror or snapshot.debian.org (LFR_DEBIAN_MIRROR) stays usable.
            "-oAcquire::Check-Valid-Until=false",
        ]
        if os.geteuid() == 0:
            # apt would drop to the _apt user, who cannot write into this tree.
            self.options.append("-oAPT::Sandbox::User=root")

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        """Runs an apt tool with the private options; returns its standard output."""
        proc = subprocess.run(
            [tool, "-q", *self.options, *args],
            cwd=cwd,
            # The messages this script matches ("No packages found") are apt's English.
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split())[:400]
            raise Failure(f"{tool} {args[0]} failed: {detail}")
        return proc.stdout

    def update(self) -> None:
        """Fetches the suite's signed package lists (apt checks the signature)."""
        log(f"apt-get update ({MIRROR} {self.suite}, private state in {self.base})")
        self.run("apt-get", "update")

    def records(self, names: list[str]) -> list[dict[str, str]]:
        """The index records (all versions, all architectures) of these packages."""
        out = self.run("apt-cache", "show", "--all-versions", *names)
        return parse_records(out)

    def package_names(self) -> list[str]:
        """Every package name the private index knows."""
        return self.run("apt-cache", "pkgnames").split()

    def download(self, specs: list[str], into: Path) -> None:
        """Downloads ``name:arch=version`` packages into a folder."""
        into.mkdir(parents=True, exist_ok=True)
        self.run("apt-get", "download", *specs, cwd=into)


def parse_records(text: str) -> list[dict[str, str]]:
    """Parses deb822 records (only the single-line fields lfr reads)."""
    records = []
    for block in text.split("\n\n"):
        rec: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            rec[key] = value.strip()
        if "Package" in rec:
            records.append(rec)
    return records


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def host_arch() -> str:
    """Dpkg's name for this machine's architecture."""
    out = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def unpack(debs: list[Path], root: Path) -> Path:
    """Unpacks ``.deb`` files into a fresh root; returns the registry inside it."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root / REGISTRY_IN_DEB


def fetch(lock: Path = LOCK, work: Path = WORK) -> Path:
    """Fetches, checks and unpacks the pinned packages; returns the registry folder.

    Args:
        lock: the lock file (default ``scripts/debian-crates.lock``).
        work: where the private apt state, the ``.deb`` files and the unpacked
            registry go (default ``.cargo-debian``).
    """
    suite, pins = read_lock(lock)
    shown = _shown(lock)
    arch = host_arch()
    mine = [p for p in pins if p.arch == arch]
    if not mine:
        # The crates inside are sources, the same in every architecture's package.
        arch = ARCHES[0]
        mine = [p for p in pins if p.arch == arch]
        log(f"{shown} pins no packages for {host_arch()}: using the {arch} ones")
    if not mine:
        raise Failure(f"{shown} pins no packages for {arch}")
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in mine if not _verified(debs / p.basename, p)]
    if missing:
        apt = PrivateApt(work / "apt", suite, (arch,))
        apt.update()
        offered = set()
        for name in sorted({p.package for p in missing}):
            try:
                records = apt.records([name])
            except Failure as e:
                if "No packages found" not in str(e):
                    raise
                records = []  # the suite dropped the package altogether
            offered |= {
                (r["Package"], r["Version"], r.get("Architecture", "")) for r in records
            }
        for p in missing:
            if not offered & {
                (p.package, p.version, p.arch),
                (p.package, p.version, "all"),
            }:
                raise Failure(gone(p, suite, shown))
        log(f"downloading {len(missing)} package(s) with apt-get download")
        apt.download([f"{p.package}:{p.arch}={p.version}" for p in missing], debs)
        for p in missing:
            path = debs / p.basename
            if not path.is_file():
                raise Failure(f"apt-get download left no {p.basename}")
            got = sha256_of(path)
            if got != p.sha256:
                path.unlink()
                raise Failure(
                    f"{p.basename} has SHA-256 {got}, but {shown} pins "
                    f"{p.sha256}: refusing it"
                )
    else:
        log(f"all {len(mine)} pinned package(s) already downloaded and checked")
    registry = unpack([debs / p.basename for p in mine], work / "root")
    crates = sorted(d.name for d in registry.iterdir() if d.is_dir())
    log(f"{len(crates)} crate(s) in {_shown(registry)}")
    return registry


def gone(p: Pin, suite: str, shown: str) -> str:
    """The one line that says a pinned package is no longer in the archive."""
    return (
        f"Debian's archive ({MIRROR} {suite}) no longer offers {p.package} {p.version} "
        f"({p.arch}), pinned in {shown}: re-pin with `python3 scripts/debian_crates.py "
        "pin`, build where crates.io is reachable, or set LFR_DEBIAN_MIRROR to a "
        "snapshot of the day the lock was pinned "
        "(http://snapshot.debian.org/archive/debian/YYYYMMDDT000000Z, see the lock's "
        "'# pinned:' line)"
    )


def _shown(path: Path) -> str:
    """A path as messages show it: relative to the project where it is inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if ROOT in path.parents else str(path)


def _verified(path: Path, pin: Pin) -> bool:
    return (
        path.is_file()
        and path.stat().st_size == pin.size
        and sha256_of(path) == pin.sha256
    )


# ---------------------------------------------------------------------------------
# pin: resolve the set with cargo and rewrite the lock.


def crate_packages(crate: str, names: set[str]) -> list[str]:
    """The Debian packages that may carry some version of a crate."""
    stem = "librust-" + crate.lower().replace("_", "-")
    pattern = re.compile(re.escape(stem) + r"(-[0-9]+(\.[0-9]+)*)?-dev")
    return sorted(n for n in names if pattern.fullmatch(n))


def root_crates() -> list[str]:
    """The crate names of Cargo.toml's [dependencies] (a small TOML subset)."""
    crates = []
    section = ""
    for raw in (ROOT / "Cargo.toml").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]").strip()
            continue
        if section in ("dependencies", "build-dependencies") and "=" in line:
            crates.append(line.split("=", 1)[0].strip())
    return crates


MISSING = (
    re.compile(r"no matching package named `([^`]+)` found"),
    re.compile(r"failed to select a version for the requirement `([^` =]+)"),
    re.compile(r"no matching package found\s+searched package name: `([^`]+)`"),
)


def pin(suite: str) -> None:
    """Resolves the packages cargo needs for lfr and rewrites the lock."""
    cargo = shutil.which("cargo")
    if cargo is None:
        raise Failure("pin needs cargo on PATH")
    arch = host_arch()
    arches = tuple(dict.fromkeys((arch, *ARCHES)))
    apt = PrivateApt(WORK / "pin-apt", suite, arches)
    apt.update()
    names = set(apt.package_names())
    debs = WORK / "pin-debs"
    shutil.rmtree(debs, ignore_errors=True)  # a fresh resolution, not the last one's
    versions: dict[str, str] = {}  # package -> newest version in the suite (host arch)

    def add(crate: str) -> bool:
        new = [n for n in crate_packages(crate, names) if n not in versions]
        if not new:
            return False
        for rec in apt.records(new):
            if rec.get("Architecture") in (arch, "all"):
                versions.setdefault(rec["Package"], rec["Version"])
        apt.download([f"{n}:{arch}={versions[n]}" for n in new if n in versions], debs)
        log(f"+ {crate}: {', '.join(new)}")
        return True

    for crate in root_crates():
        if not add(crate):
            raise Failure(f"{suite} has no package for the crate {crate}")
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        (project / "rust").mkdir(parents=True)
        shutil.copy(ROOT / "Cargo.toml", project / "Cargo.toml")
        (project / "rust" / "lib.rs").write_text("")
        registry = Path(tmp) / "registry"
        registry.mkdir()
        owner: dict[tuple[str, str], str] = {}  # (crate, version) -> package
        unpacked: set[Path] = set()
        for _ in range(300):
            for deb in sorted(set(debs.glob("*.deb")) - unpacked):
                owner.update(_unpack_crates(deb, Path(tmp) / "x", registry))
                unpacked.add(deb)
            proc = subprocess.run(
                [
                    cargo,
                    "generate-lockfile",
                    "--offline",
                    "--config",
                    'source.crates-io.replace-with="debian"',
                    "--config",
                    f'source.debian.directory="{registry}"',
                ],
                cwd=project,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode == 0:
                break
            crate = next(
                (m.group(1) for pat in MISSING if (m := pat.search(proc.stderr))), None
            )
            if crate is None or not add(crate):
                raise Failure(
                    "cargo cannot resolve: " + " ".join(proc.stderr.split())[:600]
                )
        else:
            raise Failure("no resolution after 300 rounds")
        lock = (project / "Cargo.lock").read_text()
    used = sorted(
        {
            owner[(name, version)]
            for name, version in re.findall(
                r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"\nsource', lock
            )
        }
    )
    pins = []
    for a in arches:
        for rec in apt.records([f"{n}:{a}" for n in used]):
            # A binNMU (+bN) may differ between architectures, the crate inside not.
            if _base(rec["Version"]) == _base(versions[rec["Package"]]) and not any(
                p.package == rec["Package"] and p.arch == a for p in pins
            ):
                pins.append(
                    Pin(
                        rec["Package"],
                        rec["Version"],
                        a,
                        rec["SHA256"],
                        int(rec["Size"]),
                        rec["Filename"],
                    )
                )
    pins.sort(key=lambda p: (p.arch, p.package))
    for a in arches:
        got = {p.package for p in pins if p.arch == a}
        if got != set(used):
            raise Failure(f"{suite} lacks {sorted(set(used) - got)} for {a}")
    header = (
        "# Debian packages that carry lfr's Rust crates, for builds where crates.io\n"
        "# is unreachable (scripts/debian_crates.py fetch; written by `pin`).\n"
        "# package version arch sha256 size filename\n"
        f"# suite: {suite}\n"
        f"# pinned: {time.strftime('%Y-%m-%d', time.gmtime())}\n"
    )
    LOCK.write_text(header + "".join(p.line() + "\n" for p in pins))
    log(f"pinned {len(used)} package(s) for {', '.join(arches)} in scripts/{LOCK.name}")


def _base(version: str) -> str:
    """A Debian version without its binNMU suffix."""
    return re.sub(r"\+b[0-9]+$", "", version)


def _unpack_crates(
    deb: Path, scratch: Path, registry: Path
) -> dict[tuple[str, str], str]:
    """Unpacks a package's crates into ``registry``; maps (crate, version) to it."""
    package = deb.name.split("_", 1)[0]
    dest = scratch / package
    dest.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    owners = {}
    for crate in sorted((dest / REGISTRY_IN_DEB).glob("*/Cargo.toml")):
        text = crate.read_text()
        section = text.split("[package]", 1)[-1]
        name = re.search(r'^name = "([^"]+)"', section, re.M)
        version = re.search(r'^version = "([^"]+)"', section, re.M)
        if name and version:
            owners[(name.group(1), version.group(1))] = package
            shutil.move(str(crate.parent), str(registry / crate.parent.name))
    return owners


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="fetch, check and unpack the pinned packages")
    f.add_argument("--lock", type=Path, default=LOCK, help="lock file")
    f.add_argument("--work", type=Path, default=WORK, help="work folder")
    p = sub.add_parser("pin", help="re-resolve the packages and rewrite the lock")
    p.add_argument("--suite", default="forky", help="Debian suite (default: forky)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(args.lock.resolve(), args.work.resolve()))
        else:
            pin(args.suite)
    except Failure as e:
        print(f"[debian-crates] error: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(
            f"[debian-crates] error: {' '.join(map(str, e.cmd))} failed "
            f"(exit {e.returncode})",
            file=sys.stderr,
        )
        return 1
    except OSError as e:
        print(f"[debian-crates] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
