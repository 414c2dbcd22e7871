"""GStreamer integration: the `human3r` element (element.py) and what makes GStreamer find it (this module).

GStreamer's Python plugin loader (Debian `gstreamer1.0-python3-plugin-loader`) embeds the system Python and scans
`<dir>/python/*.py` for every `<dir>` on GST_PLUGIN_PATH. `plugin/python/human3r.py` is a thin loader that imports
`human3r_edge.runtime.gst.element`; the packages it needs (numpy, onnxruntime, ...) come from the project's venv,
put on PYTHONPATH by `eval "$(human3r-edge gst-env)"`. The venv must be the same CPython minor version as the
system Python (3.11 on Debian 12): the loader then imports the venv's compiled wheels as they are.
This module imports nothing from GStreamer, so the CLI and the tests can use it anywhere.
"""
from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"  # the folder GST_PLUGIN_PATH names (it holds python/)
ELEMENT = "human3r"


def site_packages() -> list[str]:
    """The site-packages folders of the running interpreter (the venv's when run from it), first the purelib."""
    out = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    out += [p for p in site.getsitepackages() if p not in out]
    return [p for i, p in enumerate(out) if p not in out[:i] and os.path.isdir(p)]


def python_paths() -> list[str]:
    """What the embedded Python needs on PYTHONPATH: the venv's site-packages, then any source checkout folder
    the running interpreter found `human3r_edge` through outside them (a plain PYTHONPATH checkout)."""
    import human3r_edge

    paths = site_packages()
    pkg_parent = str(Path(human3r_edge.__file__).resolve().parent.parent)
    if not any(pkg_parent == str(Path(p).resolve()) for p in paths) and pkg_parent in map(_resolved, sys.path):
        paths.append(pkg_parent)
    return paths


def _resolved(p: str) -> str:
    return str(Path(p or ".").resolve())


def environment(existing: dict[str, str] | None = None) -> dict[str, str]:
    """GST_PLUGIN_PATH and PYTHONPATH that make `gst-inspect-1.0 human3r` work, prepended to `existing` values."""
    env = dict(os.environ if existing is None else existing)
    out = {}
    for name, first in (("GST_PLUGIN_PATH", [str(PLUGIN_DIR)]), ("PYTHONPATH", python_paths())):
        old = [p for p in env.get(name, "").split(os.pathsep) if p and p not in first]
        out[name] = os.pathsep.join(first + old)
    return out
