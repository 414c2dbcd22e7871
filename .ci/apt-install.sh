#!/usr/bin/env bash
# Install Debian/Ubuntu system packages idempotently (called by `make setup`):
#   bash .ci/apt-install.sh WHAT PACKAGE[:COMMAND] ...
# A package counts as present when `dpkg -s PACKAGE` succeeds or, for PACKAGE:COMMAND, when COMMAND is on PATH
# (node/npm may come from elsewhere than Debian). `apt-get update` runs once, only when something is missing.
# Not root, or no apt-get: print what is missing with the install line and exit 0 (the tests that need it then
# skip, except when CI=true, where they fail).
set -euo pipefail

what="$1"
shift
missing=()
for spec in "$@"; do
    pkg="${spec%%:*}"
    cmd="${spec#*:}"
    if [ "$cmd" != "$spec" ] && command -v "$cmd" >/dev/null 2>&1; then
        continue
    fi
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
    echo "apt-$what | missing system packages: ${missing[*]}. Hint: sudo apt-get install -y ${missing[*]}" >&2
    exit 0
fi
echo "apt-$what | installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
