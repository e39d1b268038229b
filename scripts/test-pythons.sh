#!/usr/bin/env bash
# Smoke-tests one lfr wheel on every supported Python that pyenv provides.
#
#   bash scripts/test-pythons.sh WHEEL [VERSION...]    (default versions: 3.9 3.12 3.13)
#
# For each version it runs scripts/smoke.py with pyenv's newest X.Y.Z: a fresh venv in
# a temporary directory, the wheel and its runtime dependencies (pip's cache is
# reused), then import / matcher / secure buffer / detect + embed / `lfr demo` (see
# scripts/smoke.py). A version pyenv has must pass; one it lacks is skipped, and
# the reason is printed. Face photographs come from LFR_DATA_DIR (default
# ../shared/data), the models from LFR_MODEL_DIR or the cache `lfr models fetch` fills.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 WHEEL [VERSION...]" >&2
    exit 2
fi
wheel=$1
shift
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.9 3.12 3.13)
here=$(cd "$(dirname "$0")" && pwd)
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}

failed=()
tested=()
for version in "${versions[@]}"; do
    # pyenv's newest patch release of this version (3.9 -> 3.9.18, not 3.9.1 or 3.90).
    python=$(find "$pyenv_root/versions" -maxdepth 1 -name "$version.*" 2>/dev/null |
        grep -E "/$version\.[0-9]+$" | sort -V | tail -n 1 || true)
    if [ -z "$python" ] || [ ! -x "$python/bin/python" ]; then
        echo "== Python $version: SKIPPED (pyenv has no $version.x under $pyenv_root/versions)"
        continue
    fi
    echo "== Python $version: $python/bin/python"
    start=$SECONDS
    if "$python/bin/python" "$here/smoke.py" "$wheel"; then
        echo "== Python $version: passed ($((SECONDS - start)) s wall)"
        tested+=("$version")
    else
        echo "== Python $version: FAILED ($((SECONDS - start)) s wall)"
        failed+=("$version")
    fi
done
echo "passed on: ${tested[*]:-none}; failed on: ${failed[*]:-none}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "smoke test failed on Python ${failed[*]}" >&2
    exit 1
fi
