"""Interchangeable backends behind one protocol (see base.py); heavy libraries are imported lazily."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from human3r_edge.errors import Human3RError, msg

# backend name -> "module:class". Modules are imported only when that backend is asked for.
# 'torch' lives in export/ (it needs torch); the runtime itself never imports torch.
BACKENDS: dict[str, str] = {
    "torch": "human3r_edge.export.torch_backend:TorchBackend",
    "ort-cpu": "human3r_edge.runtime.backends.ort:OrtCpuBackend",
    "ort-cuda": "human3r_edge.runtime.backends.ort:OrtCudaBackend",
    "ort-trt": "human3r_edge.runtime.backends.ort:OrtTrtBackend",
    "trt": "human3r_edge.runtime.backends.trt:TrtBackend",
}


def backend_class(name: str) -> type:
    if name == "triton":
        raise Human3RError(msg("backend", "'triton' is a remote session, not a graph backend", repr(name),
                               "one of " + ", ".join(BACKENDS) + " here",
                               "open_session('triton', url='HOST:PORT') from human3r_edge.runtime.triton.client "
                               "gives a Session-like RemoteSession (docs/serving.md)"))
    if name not in BACKENDS:
        raise Human3RError(msg("backend", "unknown backend", repr(name), "one of " + ", ".join(BACKENDS)))
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def open_backend(name: str, directory: str | Path, **options: Any):
    """Instantiate backend `name` over the export (ONNX or engine) directory `directory`."""
    from human3r_edge.runtime.iospec import ExportSpec

    spec = ExportSpec.load(directory)
    return backend_class(name)(spec, Path(directory), **options)
