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


def check_kernel_args(name: str, args: tuple) -> None:
    """Refuse what real pycuda's kernel call refuses or passes differently (its `_build_arg_buf`).

    pycuda takes numpy scalars, allocations, `__cuda_array_interface__` objects and objects with `.gpudata`;
    a plain Python int, float or bool raises "TypeError: invalid type on parameter #i (0-based)", and a numpy
    array is passed by value (its bytes), not as a pointer. The emulated kernels would accept both, so the
    stand-in checks here, before the launch."""
    for i, a in enumerate(args):
        if isinstance(a, (bool, int, float)):
            raise TypeError(msg(f"kernel {name}: parameter #{i}", "invalid type: a plain Python "
                                f"{type(a).__name__} (real pycuda raises TypeError)", repr(a)[:40],
                                "numpy scalars (np.int32, np.float32), np.uintp(pointer) or an allocation"))
        if isinstance(a, np.ndarray):
            raise TypeError(msg(f"kernel {name}: parameter #{i}", "a host numpy array (pycuda would pass its "
                                "bytes by value, not a pointer)", a.shape, "device memory"))


class _StrictFunction:
    def __init__(self, fn: Any, name: str) -> None:
        self._fn, self.name = fn, name

    def __call__(self, *args: Any, **kw: Any) -> Any:
        check_kernel_args(self.name, args)
        return self._fn(*args, **kw)


class _StrictModule:
    """compile_module with pycuda's argument rules (see check_kernel_args)."""

    def __init__(self, source: str, **kw: Any) -> None:
        self._module = compile_module(source, **kw)

    def get_function(self, name: str) -> _StrictFunction:
        return _StrictFunction(self._module.get_function(name), name)


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
compiler = SimpleNamespace(SourceModule=_StrictModule)
