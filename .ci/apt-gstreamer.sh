#!/usr/bin/env bash
# System packages of the GStreamer element (Debian/Ubuntu), installed idempotently by `make setup` (gst-deps):
# checked with `dpkg -s` first; `apt-get update` runs once, only when something is missing. They give
# gst-launch/gst-inspect, the Python plugin loader, PyGObject with the Gst bindings, and the C headers for
# examples/c/human3r_pipeline.c (docs/gstreamer.md). The viewer's packages are in .ci/apt-viewer.sh.
# Not root, or no apt-get: print what is missing and exit 0 (the GStreamer tests then skip, except when CI=true).
set -euo pipefail

GSTREAMER=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav
           python3-gi python3-gst-1.0 gstreamer1.0-python3-plugin-loader libgstreamer1.0-dev)
PACKAGES=("${GSTREAMER[@]}")

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
    echo "apt-gstreamer | missing system packages: ${missing[*]}. Hint: sudo apt-get install -y ${missing[*]}" >&2
    exit 0
fi
echo "apt-gstreamer | installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
