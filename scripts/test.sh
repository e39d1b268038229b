#!/usr/bin/env bash
# Runs lfr's test suite: lint and types, the pure-Rust unit tests, pytest, then the
# release wheel's smoke test on Python 3.9, 3.12 and 3.13 (scripts/test-pythons.sh).
#
#   bash scripts/test.sh [pytest arguments...]
#
# Tests that need face images read them from LFR_DATA_DIR (default: ../shared/data)
# and are skipped, with the reason, where it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Rust toolchain scripts/setup.sh chose (rustup's, or Debian's rustc-web).
source scripts/rust-toolchain.sh
if ! lfr_rust_find; then
    echo "no Rust $(lfr_rust_min) or newer ($(lfr_rust_notes)): run bash scripts/setup.sh" >&2
    exit 1
fi
export PATH="$PWD/.venv/bin:$PATH"

echo "== lint =="
make --no-print-directory lint
echo "== cargo test =="
cargo test --release --quiet --features bench-probes,forensic-scan
echo "== pytest =="
python -m pytest "$@"
# The release wheel (one cp39-abi3 wheel, without the test and benchmark features),
# installed outside the source tree on 3.9, 3.12 and 3.13 where pyenv has them.
echo "== the release wheel on every Python =="
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
maturin build --release --quiet --out "$wheels"
bash scripts/test-pythons.sh "$wheels"/lfr-*-cp39-abi3-*.whl
