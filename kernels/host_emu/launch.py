"""Launching emulated kernels with pycuda's rules: the one piece of "pycuda" the host emulation owns.

The pycuda stand-in itself (memory, streams, contexts) is tests/support/fake_gpu; it compiles and launches kernels
through this module, so kernel argument rules and the shipped-PTX mapping live in one place:

    mod = load_source(open("kernels/preprocess.cu").read(), no_extern_c=True)   # pycuda SourceModule
    mod = load_ptx(ptx_text, cc=(8, 7), driver_isa=(9, 0))                       # pycuda module_from_buffer
    mod.get_function("k")(np.uintp(ptr), np.int32(n), block=(256, 1, 1), grid=(4, 1))
"""
from __future__ import annotations

from typing import Any

import numpy as np

from human3r_edge.errors import msg
from human3r_edge.kernels.host_emu import EmulatedFunction, EmulatedModule, compile_module


def check_kernel_args(name: str, args: tuple) -> None:
    """Refuse what real pycuda's kernel call refuses or passes differently (its `_build_arg_buf`).

    pycuda takes numpy scalars, allocations, `__cuda_array_interface__` objects and objects with `.gpudata`;
    a plain Python int, float or bool raises "TypeError: invalid type on parameter #i (0-based)", and a numpy
    array is passed by value (its bytes), not as a pointer. The emulated kernels would accept both, so the
    launch refuses them first."""
    for i, a in enumerate(args):
        if isinstance(a, (bool, int, float)):
            raise TypeError(msg(f"kernel {name}: parameter #{i}", "invalid type: a plain Python "
                                f"{type(a).__name__} (real pycuda raises TypeError)", repr(a)[:40],
                                "numpy scalars (np.int32, np.float32), np.uintp(pointer) or an allocation"))
        if isinstance(a, np.ndarray):
            raise TypeError(msg(f"kernel {name}: parameter #{i}", "a host numpy array (pycuda would pass its "
                                "bytes by value, not a pointer)", a.shape, "device memory"))


class CheckedFunction:
    """An emulated kernel called like a pycuda Function, arguments checked by pycuda's rules."""

    def __init__(self, fn: EmulatedFunction, name: str) -> None:
        self._fn, self.name = fn, name

    def __call__(self, *args: Any, **kw: Any) -> Any:
        check_kernel_args(self.name, args)
        return self._fn(*args, **kw)


class CheckedModule:
    """A kernel source compiled for the host emulation, its functions launched with pycuda's argument rules."""

    def __init__(self, source: str, **kw: Any) -> None:
        self.module: EmulatedModule = compile_module(source, **kw)

    def get_function(self, name: str) -> CheckedFunction:
        return CheckedFunction(self.module.get_function(name), name)


def load_source(source: str, **pycuda_options: Any) -> CheckedModule:
    """pycuda's SourceModule(source, ...) on the host: the same .cu source, compiled by g++."""
    return CheckedModule(source, **pycuda_options)


def load_ptx(buffer: bytes | bytearray | memoryview | str, cc: tuple[int, int],
             driver_isa: tuple[int, int]) -> CheckedModule:
    """pycuda's module_from_buffer for a shipped PTX (kernels/ptx): the .cu source it was made from, after the
    driver's checks (build.ptx_source_for raises build.PtxError as the driver would refuse it)."""
    from human3r_edge.kernels.build import ptx_source_for

    text = (bytes(buffer).decode() if not isinstance(buffer, str) else buffer).rstrip("\0")
    return CheckedModule(ptx_source_for(text, cc, driver_isa), no_extern_c=True)
