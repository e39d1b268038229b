# shellcheck shell=bash
# Finds, and for scripts/setup.sh installs, the Rust toolchain lfr is built with. Sourced
# by scripts/setup.sh and scripts/test.sh, so both use the same cargo and rustc.
#
#   lfr_rust_find     a toolchain already here whose rustc is new enough: cargo on PATH,
#                     in $CARGO_HOME/bin (~/.cargo/bin), or from Debian's -web packages.
#   lfr_rust_ensure   lfr_rust_find; else rustup where its installer can be downloaded;
#                     else Debian's rustc-web, cargo-web, rust-web-clippy and rustfmt-web
#                     where apt's candidate is new enough (bookworm-security, trixie);
#                     else one line saying what to install.
#
# Both put the chosen toolchain's directory first on PATH (cargo then finds its rustc
# there; maturin and `cargo clippy` / `cargo fmt` go through cargo), print one line naming
# it and its version, and return 1 where there is none.
#
# Settings: LFR_RUST_MIN (default: Cargo.toml's rust-version), LFR_RUSTUP_URL (default
# https://sh.rustup.rs), APT_UPDATED=1 (apt's lists are current: no apt-get update).

LFR_RUST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LFR_RUST_DEB_PACKAGES=(rustc-web cargo-web rust-web-clippy rustfmt-web)

_lfr_rust_log() { printf '[rust-toolchain] %s\n' "$*"; }

# The oldest rustc lfr builds with.
lfr_rust_min() {
    if [ -n "${LFR_RUST_MIN:-}" ]; then
        printf '%s\n' "$LFR_RUST_MIN"
        return
    fi
    sed -nE 's/^rust-version *= *"([0-9.]+)".*/\1/p' "$LFR_RUST_ROOT/Cargo.toml"
}

# True where version $1 >= version $2.
_lfr_version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# The rustc version of the toolchain in directory $1 (its cargo must run), or nothing.
_lfr_rust_version_at() {
    [ -x "$1/cargo" ] && [ -x "$1/rustc" ] || return 1
    "$1/cargo" --version >/dev/null 2>&1 || return 1
    "$1/rustc" --version 2>/dev/null | awk '{print $2}'
}

# The directories holding rustc and cargo from Debian's installed -web packages.
_lfr_rust_deb_dirs() {
    command -v dpkg-query >/dev/null || return 0
    dpkg-query -W -f='${Status}\n' rustc-web 2>/dev/null | grep -q 'install ok installed' \
        || return 0
    dpkg-query -L rustc-web 2>/dev/null | sed -n 's,/rustc$,,p' | while read -r dir; do
        if [ "${dir##*/}" = bin ] && [ -x "$dir/cargo" ]; then printf '%s\n' "$dir"; fi
    done
}

# Who provided the cargo in directory $1, in words.
_lfr_rust_describe() {
    local owner
    owner=$(dpkg-query -S "$(readlink -f "$1/cargo")" 2>/dev/null | cut -d: -f1 || true)
    if [ -n "$owner" ]; then
        printf "Debian's %s" "$owner"
    elif [ -x "$1/rustup" ]; then
        printf "rustup's toolchain"
    else
        printf "cargo"
    fi
}

LFR_RUST_NOTES=()

lfr_rust_find() {
    local min dir version cargo_home="${CARGO_HOME:-$HOME/.cargo}"
    min=$(lfr_rust_min)
    local candidates=()
    if command -v cargo >/dev/null; then
        candidates+=("$(dirname "$(command -v cargo)")")
    fi
    candidates+=("$cargo_home/bin")
    while read -r dir; do candidates+=("$dir"); done < <(_lfr_rust_deb_dirs)
    for dir in "${candidates[@]}"; do
        version=$(_lfr_rust_version_at "$dir") || continue
        if ! _lfr_version_ge "$version" "$min"; then
            LFR_RUST_NOTES+=("rustc $version in $dir is older than $min")
            continue
        fi
        export PATH="$dir:$PATH"
        _lfr_rust_log "Rust: $(_lfr_rust_describe "$dir") $version ($dir)"
        if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1
        then
            _lfr_rust_log "note: cargo clippy or cargo fmt is missing (scripts/test.sh's" \
                "lint step needs both: rustup component add clippy rustfmt, or apt-get" \
                "install rust-web-clippy rustfmt-web)"
        fi
        return 0
    done
    return 1
}

# rustup, where its installer can be downloaded (a short timeout: offline sites).
_lfr_rust_from_rustup() {
    local url="${LFR_RUSTUP_URL:-https://sh.rustup.rs}" script cargo_home
    cargo_home="${CARGO_HOME:-$HOME/.cargo}"
    command -v curl >/dev/null || _lfr_rust_apt curl ca-certificates || true
    if ! command -v curl >/dev/null; then
        LFR_RUST_NOTES+=("no curl to reach rustup")
        return 1
    fi
    script=$(mktemp)
    if ! curl -fsS --connect-timeout 5 --max-time 60 -o "$script" "$url" 2>/dev/null; then
        rm -f "$script"
        LFR_RUST_NOTES+=("rustup unreachable ($url)")
        return 1
    fi
    if [ -x "$cargo_home/bin/rustup" ]; then
        _lfr_rust_log "updating rustup's stable toolchain and making it the default"
        "$cargo_home/bin/rustup" toolchain install stable --profile minimal \
            --component clippy,rustfmt && "$cargo_home/bin/rustup" default stable
    else
        _lfr_rust_log "installing Rust with rustup"
        sh "$script" -y --profile minimal --component clippy,rustfmt
    fi
    local rc=$?
    rm -f "$script"
    return $rc
}

# apt's candidate version of Debian's rustc-web (upstream part: 1.96.0), or nothing.
lfr_rust_debian_candidate() {
    command -v apt-cache >/dev/null || return 0
    LC_ALL=C apt-cache policy rustc-web 2>/dev/null \
        | sed -nE 's/^ *Candidate: *([0-9]+:)?([0-9][0-9.]*).*/\2/p'
}

_lfr_rust_apt() {
    if declare -F apt_install >/dev/null; then  # scripts/setup.sh's
        apt_install "$@"
        return
    fi
    command -v apt-get >/dev/null || return 1
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    if [ "${APT_UPDATED:-0}" -eq 0 ]; then
        $sudo apt-get update -qq || return 1
        APT_UPDATED=1
    fi
    _lfr_rust_log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "$@" >/dev/null
}

# Debian's -web toolchain, where apt's candidate is new enough.
_lfr_rust_from_debian() {
    local min candidate sudo=""
    min=$(lfr_rust_min)
    if ! command -v apt-get >/dev/null; then
        LFR_RUST_NOTES+=("no apt-get")
        return 1
    fi
    candidate=$(lfr_rust_debian_candidate)
    if { [ -z "$candidate" ] || ! _lfr_version_ge "$candidate" "$min"; } \
        && [ "${APT_UPDATED:-0}" -eq 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        $sudo apt-get update -qq >/dev/null 2>&1 && APT_UPDATED=1
        candidate=$(lfr_rust_debian_candidate)
    fi
    if [ -z "$candidate" ]; then
        LFR_RUST_NOTES+=("apt has no rustc-web")
        return 1
    fi
    if ! _lfr_version_ge "$candidate" "$min"; then
        LFR_RUST_NOTES+=("apt's rustc-web $candidate is older than $min")
        return 1
    fi
    _lfr_rust_log "using Debian's rustc-web $candidate (no usable cargo, no rustup)"
    _lfr_rust_apt "${LFR_RUST_DEB_PACKAGES[@]}"
}

# The reasons each candidate was passed over, once each, on one line.
lfr_rust_notes() {
    printf '%s\n' "${LFR_RUST_NOTES[@]}" | awk 'NF && !seen[$0]++' | paste -sd';' \
        | sed 's/;/; /g'
}

lfr_rust_ensure() {
    local min
    min=$(lfr_rust_min)
    LFR_RUST_NOTES=()
    lfr_rust_find && return 0
    if _lfr_rust_from_rustup && lfr_rust_find; then return 0; fi
    if _lfr_rust_from_debian && lfr_rust_find; then return 0; fi
    _lfr_rust_log "no Rust $min or newer ($(lfr_rust_notes)): install it with rustup" \
        "(https://rustup.rs) or apt-get install ${LFR_RUST_DEB_PACKAGES[*]}" \
        "(Debian 12 bookworm-security, Debian 13), then re-run" >&2
    return 1
}
