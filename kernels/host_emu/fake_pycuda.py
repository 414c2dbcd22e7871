"""A CPU stand-in for the parts of pycuda our launchers use: host memory as "device" memory, kernels emulated.

`driver` and `compiler` mirror `pycuda.driver` and `pycuda.compiler` closely enough for the SMPL-X and
preprocessing launchers: mem_alloc / memcpy_htod / memcpy_dtoh (+ _async), pagelocked_empty, Stream,
Context.synchronize, and SourceModule(source, ...).get_function(name)(..., block=, grid=).
"""
from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Any

import numpy as np

from ...runtime.errors import msg
from . import compile_module

_ALIGN = 256  # cudaMalloc alignment


class FakeDeviceAllocation:
    """A block of host memory standing in for device memory; int(alloc) is its address (owned by this object)."""

    def __init__(self, nbytes: int) -> None:
        if nbytes < 0:
            raise ValueError(msg("mem_alloc", "negative size", nbytes))
        self._raw = np.empty(int(nbytes) + _ALIGN, dtype=np.uint8)
        self._offset = (-self._raw.ctypes.data) % _ALIGN
        self.nbytes = int(nbytes)
        self.freed = False

    def __int__(self) -> int:
        if self.freed:
            raise ValueError(msg("fake device allocation", "used after free"))
        return int(self._raw.ctypes.data + self._offset)

    __index__ = __int__

    def free(self) -> None:
        self.freed = True


def _check_copy(nbytes: int, alloc: Any, what: str) -> None:
    if isinstance(alloc, FakeDeviceAllocation) and nbytes > alloc.nbytes:
        raise ValueError(msg(what, "copy larger than the allocation", nbytes, f"<= {alloc.nbytes} bytes"))


def memcpy_htod(dest: Any, src: np.ndarray, stream: Any = None) -> None:
    src = np.ascontiguousarray(src)
    _check_copy(src.nbytes, dest, "memcpy_htod")
    ctypes.memmove(int(dest), src.ctypes.data, src.nbytes)


def memcpy_dtoh(dest: np.ndarray, src: Any, stream: Any = None) -> None:
    if not dest.flags.c_contiguous:
        raise ValueError(msg("memcpy_dtoh", "destination must be C-contiguous"))
    _check_copy(dest.nbytes, src, "memcpy_dtoh")
    ctypes.memmove(dest.ctypes.data, int(src), dest.nbytes)


class Stream:
    def synchronize(self) -> None:
        return None


class Context:
    @staticmethod
    def synchronize() -> None:
        return None


driver = SimpleNamespace(
    mem_alloc=FakeDeviceAllocation,
    memcpy_htod=memcpy_htod,
    memcpy_dtoh=memcpy_dtoh,
    memcpy_htod_async=memcpy_htod,
    memcpy_dtoh_async=memcpy_dtoh,
    pagelocked_empty=lambda shape, dtype: np.empty(shape, dtype=dtype),
    Stream=Stream,
    Context=Context,
    DeviceAllocation=FakeDeviceAllocation,
)
compiler = SimpleNamespace(SourceModule=compile_module)
