#!/usr/bin/env bash
# Chooses where cargo takes lfr's Rust dependencies from.
#
# - crates.io reachable: the normal registry; a replacement written earlier by this
#   script is removed.
# - crates.io unreachable (air-gapped sites, this project's CI): Debian's crate packages
#   are installed and .cargo/config.toml (not committed) points cargo at them through
#   source replacement. Cargo.toml's version ranges accept both.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[cargo-source] %s\n' "$*"; }
CONFIG=.cargo/config.toml
MARKER="# written by scripts/cargo-source.sh"
REGISTRY=/usr/share/cargo/registry
# Debian packages of the crates in Cargo.toml (their dependencies come with them).
DEB_CRATES=(librust-pyo3-dev librust-rayon-dev librust-zeroize-dev librust-half-dev librust-libc-dev)

if python3 - <<'PY' 2>/dev/null
import urllib.request
urllib.request.urlopen("https://index.crates.io/config.json", timeout=15).read()
PY
then
    if [ -f "$CONFIG" ] && head -n1 "$CONFIG" | grep -qF "$MARKER"; then
        rm -f "$CONFIG"
        log "crates.io is reachable: removed the Debian source replacement"
    else
        log "crates.io is reachable"
    fi
    exit 0
fi

log "crates.io is unreachable: using Debian's crate packages from $REGISTRY"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v apt-get >/dev/null; then
    log "no apt-get: provide the crates another way (cargo vendor on a connected machine)"
    exit 1
fi
need=()
for pkg in "${DEB_CRATES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
    log "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p .cargo
cat > "$CONFIG" <<TOML
$MARKER (crates.io unreachable); delete it to use crates.io.
[source.crates-io]
replace-with = "debian-packages"

[source.debian-packages]
directory = "$REGISTRY"
TOML
# A lock file resolved against the other source would not match this one.
rm -f Cargo.lock
log "wrote $CONFIG"
