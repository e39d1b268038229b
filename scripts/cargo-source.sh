#!/usr/bin/env bash
# Chooses where cargo takes lfr's Rust dependencies from.
#
# - crates.io reachable: the normal registry; a replacement written earlier by this
#   script is removed.
# - crates.io unreachable (air-gapped sites, this project's CI): the Debian packages that
#   carry the crates, pinned by SHA-256 in scripts/debian-crates.lock, are fetched with a
#   private apt state and unpacked into .cargo-debian/ (scripts/debian_crates.py); the
#   system's apt sources and installed packages are left as they are.
#   .cargo/config.toml (not committed) points cargo there through source replacement.
#   Cargo.toml's version ranges accept both.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[cargo-source] %s\n' "$*"; }
CONFIG=.cargo/config.toml
MARKER="# written by scripts/cargo-source.sh"

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

log "crates.io is unreachable: using the Debian crate packages pinned in scripts/debian-crates.lock"
for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null; then
        log "no $tool: provide the crates another way (cargo vendor on a connected machine)"
        exit 1
    fi
done
# Private apt state under .cargo-debian/: the system's sources and package state are
# neither read nor changed.
registry=$(python3 scripts/debian_crates.py fetch)
# A TOML basic string: backslashes and quotes in the path escaped.
registry=${registry//\\/\\\\}
registry=${registry//\"/\\\"}
mkdir -p .cargo
cat > "$CONFIG" <<TOML
$MARKER (crates.io unreachable); delete it to use crates.io.
[source.crates-io]
replace-with = "debian-packages"

[source.debian-packages]
directory = "$registry"
TOML
# A lock file resolved against the other source would not match this one.
rm -f Cargo.lock
log "wrote $CONFIG"
