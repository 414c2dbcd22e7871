#!/usr/bin/env bash
# System packages of the viewer and export tests (Debian/Ubuntu), installed idempotently by `make setup`:
# chromium (the headless browser the viewer tests drive through playwright; nothing is downloaded by playwright)
# and nodejs/npm (Khronos's gltf-validator runs on node). Each is checked first; `apt-get update` runs only when
# something is missing. Not root, or no apt-get: print what is missing and exit 0 (the tests then skip, except
# when CI=true).
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || dpkg -s chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || dpkg -s nodejs >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || dpkg -s npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
    echo "apt-viewer | missing system packages: ${missing[*]}. Hint: sudo apt-get install -y ${missing[*]}" >&2
    exit 0
fi
echo "apt-viewer | installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
