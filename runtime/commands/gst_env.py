"""`human3r-edge gst-env`: print the shell lines that let GStreamer load the `human3r` element from this install.

    eval "$(human3r-edge gst-env)"
    gst-inspect-1.0 human3r
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys

from human3r_edge.errors import msg
from human3r_edge.runtime.gst import ELEMENT, PLUGIN_DIR, environment


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="also run `gst-inspect-1.0 human3r` with these variables "
                   "and report whether the element loads (exit 1 if not); the export lines go to stdout either way")


def main(args: argparse.Namespace) -> int:
    env = environment()
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")
    if not (PLUGIN_DIR / "python" / f"{ELEMENT}.py").is_file():
        print(msg("human3r-edge gst-env", "the plugin loader is missing", str(PLUGIN_DIR / "python"),
                  hint="reinstall the package (its wheel ships runtime/gst/plugin/python/human3r.py)"),
              file=sys.stderr)
        return 1
    if args.check:
        return _check(env)
    return 0


def _check(env: dict[str, str]) -> int:
    import os

    tool = shutil.which("gst-inspect-1.0")
    if tool is None:
        print(msg("human3r-edge gst-env --check", "gst-inspect-1.0 not found", None, "GStreamer's tools",
                  "run `make setup` (as root it installs them through .ci/apt-deps.sh), or apt-get install "
                  "gstreamer1.0-tools python3-gst-1.0 gstreamer1.0-python3-plugin-loader"), file=sys.stderr)
        return 1
    proc = subprocess.run([tool, ELEMENT], env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        print(msg("human3r-edge gst-env --check", "GStreamer cannot load the element", tail or proc.returncode,
                  hint="install python3-gst-1.0 and gstreamer1.0-python3-plugin-loader; the venv must use the "
                  "system Python's minor version"), file=sys.stderr)
        return 1
    print(f"# gst-env | `gst-inspect-1.0 {ELEMENT}` loads the element", file=sys.stderr)
    return 0
