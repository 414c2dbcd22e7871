"""Fake libcuda: the driver entry points `runtime/cuda_util.CudaGraphs` calls through ctypes, over FakeDevice.

They take the same ctypes arguments as the real functions and write results through `ctypes.byref` pointers,
so the real ctypes code in cuda_util runs unchanged.
"""
from __future__ import annotations

from typing import Any

from .device import FakeDevice

CUDA_SUCCESS = 0
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901
_NAMES = {0: b"CUDA_SUCCESS", 1: b"CUDA_ERROR_INVALID_VALUE", 901: b"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"}


def _val(x: Any) -> int:
    return int(getattr(x, "value", x) or 0)


def _out(ref: Any, value: int) -> None:
    ref._obj.value = value  # ctypes.byref(...) keeps the target object in ._obj


class FakeLibCuda:
    """Fake CDLL('libcuda.so.1') for stream capture and graph launch; violations propagate as exceptions."""

    def __init__(self, dev: FakeDevice) -> None:
        self.dev = dev
        self.calls: list[str] = []

    def _guard(self, name: str, fn: Any) -> int:
        """Run one driver call; contract violations raise (loudly) instead of returning an error code."""
        self.calls.append(name)
        fn()
        return CUDA_SUCCESS

    def cuStreamBeginCapture_v2(self, stream: Any, mode: Any) -> int:
        if _val(mode) not in (0, 1, 2):
            return CUDA_ERROR_INVALID_VALUE
        return self._guard("cuStreamBeginCapture_v2", lambda: self.dev.begin_capture(_val(stream)))

    def cuStreamEndCapture(self, stream: Any, graph_ref: Any) -> int:
        s = self.dev.streams.get(_val(stream))
        if s is not None and s.invalidated:
            self.calls.append("cuStreamEndCapture")
            self.dev.end_capture(_val(stream))
            _out(graph_ref, 0)
            return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED

        def run() -> None:
            _out(graph_ref, self.dev.end_capture(_val(stream)))
        return self._guard("cuStreamEndCapture", run)

    def cuGraphInstantiateWithFlags(self, exec_ref: Any, graph: Any, flags: Any) -> int:
        def run() -> None:
            _out(exec_ref, self.dev.instantiate(_val(graph)))
        return self._guard("cuGraphInstantiateWithFlags", run)

    def cuGraphLaunch(self, graph_exec: Any, stream: Any) -> int:
        return self._guard("cuGraphLaunch", lambda: self.dev.launch(_val(graph_exec), _val(stream)))

    def cuGraphExecDestroy(self, graph_exec: Any) -> int:
        g = self.dev.graph_execs.get(_val(graph_exec))
        if g is None or not g.alive:
            return CUDA_ERROR_INVALID_VALUE
        g.alive = False
        self.calls.append("cuGraphExecDestroy")
        return CUDA_SUCCESS

    def cuGraphDestroy(self, graph: Any) -> int:
        g = self.dev.graphs.get(_val(graph))
        if g is None or not g.alive:
            return CUDA_ERROR_INVALID_VALUE
        g.alive = False
        self.calls.append("cuGraphDestroy")
        return CUDA_SUCCESS

    def cuStreamSynchronize(self, stream: Any) -> int:
        h = _val(stream)
        h = 0 if h in (1, 2) else h  # CU_STREAM_LEGACY, CU_STREAM_PER_THREAD
        if h not in self.dev.streams or not self.dev.streams[h].alive:
            return CUDA_ERROR_INVALID_VALUE
        return self._guard("cuStreamSynchronize", lambda: self.dev.synchronize(h, "cuStreamSynchronize"))

    def cuGetErrorName(self, code: Any, out_ref: Any) -> int:
        out_ref._obj.value = _NAMES.get(_val(code), b"CUDA_ERROR_UNKNOWN")
        return CUDA_SUCCESS
