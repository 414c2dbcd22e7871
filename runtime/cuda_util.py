"""Lazy access to TensorRT, pycuda and the CUDA driver's graph API (ctypes); nothing here imports at module load.

* `require_tensorrt()` / `require_pycuda()` raise BackendUnavailable with an install hint when the library is
  missing. `tensorrt-stubs` installs a `tensorrt/` folder of .pyi files that Python imports as an empty namespace
  package, so "import succeeded" is not "TensorRT is installed": the check looks for the real module.
* `CudaGraphs`: stream capture, instantiate, launch and destroy through libcuda, because pycuda has no CUDA-graph
  API. Every call's CUresult is checked. `open_libcuda` is the one place the shared library is opened.
* `make_logger`: the process-wide TensorRT logger (TensorRT keeps only the first logger it is given and sends
  every later builder's and runtime's messages there), which keeps the messages, so build and load errors can
  quote TensorRT.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any

from human3r_edge.errors import BackendUnavailable, Human3RError, msg

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
_LOGGER: tuple[Any, Any] | None = None  # (the tensorrt module, its one RecordingLogger)
_MAX_MESSAGES = 10000


def make_logger(echo_severity: str = "warning") -> Any:
    """The process-wide `tensorrt.ILogger`: records (severity name, message), prints those at `echo_severity` or
    worse (the latest caller's level), and `errors()` returns the errors logged since this call.

    One instance per process because TensorRT keeps one: a second logger passed to a Builder or Runtime is
    ignored ("The logger passed into createInferBuilder differs from one already provided ...") and its
    messages go to the first, so a per-call logger would miss the errors (e.g. the build's workspace diagnosis)."""
    global _LOGGER
    import tensorrt as trt

    order = ["internal_error", "error", "warning", "info", "verbose"]
    if echo_severity not in order:
        raise Human3RError(msg("TensorRT log level", "unknown", repr(echo_severity), order))
    if _LOGGER is not None and _LOGGER[0] is trt:
        logger = _LOGGER[1]
        logger.limit = order.index(echo_severity)
        logger.start = len(logger.messages)
        return logger

    class RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []
            self.limit = order.index(echo_severity)
            self.start = 0  # errors() reports from here: the latest make_logger() call

        def log(self, severity: trt.ILogger.Severity, message: str) -> None:
            level = int(severity)
            name = order[level] if 0 <= level < len(order) else str(severity)
            self.messages.append((name, message))
            if len(self.messages) > _MAX_MESSAGES:
                drop = len(self.messages) - _MAX_MESSAGES
                del self.messages[:drop]
                self.start = max(0, self.start - drop)
            if level <= self.limit:
                print(f"[TensorRT {name}] {message}", file=sys.stderr)

        def errors(self) -> list[str]:
            return [m for s, m in self.messages[self.start:] if s in ("internal_error", "error")]

    logger = RecordingLogger()
    _LOGGER = (trt, logger)
    return logger


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


# ------------------------------------------------------------------------------------------ producer streams
def stream_handle_of(stream: Any) -> int | None:
    """The CUstream handle of a caller's stream: an int, a pycuda Stream (.handle), a torch.cuda.Stream
    (.cuda_stream) or a CuPy stream (.ptr); None for None."""
    if stream is None:
        return None
    for attr in ("handle", "cuda_stream", "ptr"):
        v = getattr(stream, attr, None)
        if v is not None:
            return int(v)
    if isinstance(stream, int):
        return int(stream)
    raise Human3RError(msg("stream", "not a CUDA stream", type(stream).__name__,
                           "an int handle, a pycuda Stream, a torch.cuda.Stream or a CuPy stream"))


def producer_stream(cai: dict, stream: Any = None) -> int | None:
    """What to wait for before reading a `__cuda_array_interface__` frame: the caller's `stream` when given, else
    the interface's "stream" entry (an int handle; 1 is the legacy default stream, 2 per-thread). Returns -1 when
    nothing says (no key: torch exports none), meaning "synchronise the whole context", and None when the
    producer states no synchronisation is needed ("stream": None, CUDA array interface v3)."""
    h = stream_handle_of(stream)
    if h is not None:
        return h
    if "stream" not in cai:
        return -1
    v = cai["stream"]
    return None if v is None else int(v)


def wait_for_producer(cuda: Any, handle: int | None) -> None:
    """Block until the producer's work is done: cuStreamSynchronize(handle), the whole context for -1, nothing
    for None. The current context must be the frame's (the device's primary context for torch / CuPy)."""
    if handle is None:
        return
    if handle == -1:
        cuda.Context.synchronize()
        return
    lib = open_libcuda()
    result = int(lib.cuStreamSynchronize(ctypes.c_void_p(handle)))
    if result != 0:
        raise Human3RError(msg("frame stream", "cuStreamSynchronize failed", f"CUresult {result}",
                               "a live stream of the current CUDA context", "pass the stream that produced the "
                               "frame, in the device's primary context"))
