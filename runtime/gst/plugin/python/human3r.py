"""GStreamer Python plugin loader entry for the `human3r` element (see docs/gstreamer.md).

GStreamer's Python plugin loader imports every `python/*.py` under GST_PLUGIN_PATH and registers what its
`__gstelementfactory__` names. This file only makes the project's venv importable and imports the element from
`human3r_edge.runtime.gst.element`, where its code lives.
"""
import os
import site
import sys


def _prepare_paths() -> None:
    # PYTHONPATH entries are not site dirs: their .pth files (an editable install's import hook) are not read.
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry.endswith("site-packages") and os.path.isdir(entry):
            site.addsitedir(entry)
    # Inside gst-launch/gst-inspect, sys.executable is not a Python: subprocesses the runtime starts (the
    # on-the-fly export of checkpoint=) must use the venv's interpreter.
    if not os.path.basename(sys.executable or "").startswith("python"):
        for entry in sys.path:
            cand = os.path.join(entry, "..", "..", "..", "bin", "python")
            if entry.endswith("site-packages") and os.path.isfile(os.path.join(entry, "..", "..", "..",
                                                                               "pyvenv.cfg")):
                sys.executable = os.path.normpath(cand) if os.path.exists(cand) else sys.executable
                break


_prepare_paths()
try:
    from human3r_edge.runtime.gst.element import Human3R
except ImportError as _exc:  # the loader would print a bare traceback and silently drop the element
    sys.stderr.write(f"human3r GStreamer plugin | cannot import the element: {_exc}. Expected human3r_edge and its "
                     "dependencies on PYTHONPATH. Hint: eval \"$(human3r-edge gst-env)\" from the project's venv "
                     "(same Python minor version as /usr/bin/python3)\n")
    raise

__gstelementfactory__ = ("human3r", 0, Human3R)  # rank GST_RANK_NONE: never autoplugged
