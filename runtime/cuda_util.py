"""Lazy access to TensorRT, pycuda and the CUDA driver's graph API (ctypes); nothing here imports at module load.

* `require_tensorrt()` / `require_pycuda()` raise BackendUnavailable with an install hint when the library is
  missing. `tensorrt-stubs` installs a `tensorrt/` folder of .pyi files that Python imports as an empty namespace
  package, so "import succeeded" is not "TensorRT is installed": the check looks for the real module.
* `CudaGraphs`: stream capture, instantiate, launch and destroy through libcuda, because pycuda has no CUDA-graph
  API. Every call's CUresult is checked. `open_libcuda` is the one place the shared library is opened.
* `make_logger`: a TensorRT logger that keeps every message, so build and load errors can quote TensorRT.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any

from .errors import BackendUnavailable, Human3RError, msg

CAPTURE_MODE_THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL


def require_tensorrt() -> str:
    """Check that the real TensorRT Python module is importable; returns its version string."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailable(msg("tensorrt", "not installed", repr(exc), "TensorRT >= 10.3 Python bindings",
                                     "JetPack 6 ships TensorRT 10.3 (python3-libnvinfer); desktops: pip install "
                                     "tensorrt (see docs/deploy-*.md)")) from exc
    version = getattr(tensorrt, "__version__", None)
    if not version or not hasattr(tensorrt, "Runtime"):
        where = list(getattr(tensorrt, "__path__", []))
        raise BackendUnavailable(msg("tensorrt", "only type stubs found (no TensorRT library)", where,
                                     "the tensorrt Python bindings", "tensorrt-stubs provides types for mypy only; "
                                     "install TensorRT to build or run engines"))
    return str(version)


def trt_version_tuple(version: str) -> tuple[int, int]:
    parts = str(version).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:
        raise Human3RError(msg("tensorrt.__version__", "unparseable", repr(version), "MAJOR.MINOR[...]")) from exc


def require_pycuda() -> Any:
    """`pycuda.driver`, initialised (cuInit), or BackendUnavailable."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailable(msg("pycuda", "not installed", repr(exc), "pycuda >= 2024.1",
                                     "pip install pycuda (on Jetson it compiles against /usr/local/cuda; see "
                                     "docs/deploy-jetson.md)")) from exc
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda raises its own RuntimeError/LogicError subclasses
        raise BackendUnavailable(msg("CUDA driver", "cuInit failed", repr(exc), "an NVIDIA GPU and driver",
                                     "check nvidia-smi / the JetPack install")) from exc
    if count < 1:
        raise BackendUnavailable(msg("CUDA driver", "no CUDA device", count, ">= 1"))
    return cuda


def gpu_identity(cuda: Any, device_id: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'M.m') of device `device_id`."""
    dev = cuda.Device(device_id)
    major, minor = dev.compute_capability()
    return str(dev.name()), f"{major}.{minor}"


# ------------------------------------------------------------------------------------------ logging
def make_logger(echo_severity: str = "warning") -> Any:
    """A `tensorrt.ILogger` that records (severity name, message) and prints those at `echo_severity` or worse."""
    import tensorrt as trt

    order = ["internal_error", "error", "warning", "info", "verbose"]
    if echo_severity not in order:
        raise Human3RError(msg("TensorRT log level", "unknown", repr(echo_severity), order))
    limit = order.index(echo_severity)

    class RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: trt.ILogger.Severity, message: str) -> None:
            level = int(severity)
            name = order[level] if 0 <= level < len(order) else str(severity)
            self.messages.append((name, message))
            if level <= limit:
                print(f"[TensorRT {name}] {message}", file=sys.stderr)

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in ("internal_error", "error")]

    return RecordingLogger()


# ------------------------------------------------------------------------------------------ CUDA graphs
def open_libcuda() -> Any:
    """The CUDA driver library (ctypes). The CPU stand-in replaces this function in tests."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise BackendUnavailable(msg("libcuda", "CUDA driver library not found", None, "libcuda.so.1",
                                 "CUDA graphs need the NVIDIA driver; run without cuda_graph=True"))


class CudaGraphs:
    """Stream capture and graph launch through the driver API (pycuda has none). Handles are plain ints."""

    def __init__(self, lib: Any | None = None) -> None:
        self.lib = lib if lib is not None else open_libcuda()

    def _check(self, result: int, what: str) -> None:
        if int(result) != 0:
            name = ctypes.c_char_p()
            try:
                self.lib.cuGetErrorName(int(result), ctypes.byref(name))
                text = name.value.decode() if name.value else str(result)
            except Exception:  # the error name is a courtesy; the code itself is reported either way
                text = str(result)
            raise Human3RError(msg(f"CUDA {what}", "failed", f"CUresult {int(result)} ({text})",
                                   "CUDA_SUCCESS", "capture needs a non-default stream, no allocation or "
                                   "synchronisation inside capture, and one warm-up enqueue before it"))

    def begin_capture(self, stream: int) -> None:
        self._check(self.lib.cuStreamBeginCapture_v2(ctypes.c_void_p(stream), ctypes.c_int(CAPTURE_MODE_THREAD_LOCAL)),
                    "cuStreamBeginCapture")

    def end_capture(self, stream: int) -> int:
        graph = ctypes.c_void_p()
        self._check(self.lib.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)), "cuStreamEndCapture")
        if not graph.value:
            raise Human3RError(msg("CUDA cuStreamEndCapture", "returned no graph (capture was invalidated)"))
        return int(graph.value)

    def instantiate(self, graph: int) -> int:
        exe = ctypes.c_void_p()
        self._check(self.lib.cuGraphInstantiateWithFlags(ctypes.byref(exe), ctypes.c_void_p(graph),
                                                         ctypes.c_ulonglong(0)), "cuGraphInstantiate")
        return int(exe.value or 0)

    def launch(self, graph_exec: int, stream: int) -> None:
        self._check(self.lib.cuGraphLaunch(ctypes.c_void_p(graph_exec), ctypes.c_void_p(stream)), "cuGraphLaunch")

    def destroy(self, graph: int, graph_exec: int) -> None:
        if graph_exec:
            self._check(self.lib.cuGraphExecDestroy(ctypes.c_void_p(graph_exec)), "cuGraphExecDestroy")
        if graph:
            self._check(self.lib.cuGraphDestroy(ctypes.c_void_p(graph)), "cuGraphDestroy")
