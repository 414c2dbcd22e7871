"""Runs CUDA kernels on the CPU: the same .cu source, compiled by g++ against a shim, launched like pycuda.

    mod = compile_module(open("kernels/smplx_skinning.cu").read())
    fk = mod.get_function("smplx_fk_kernel")
    fk(ptr_a, ptr_b, np.int32(n), np.float32(s), block=(64, 1, 1), grid=(P, 1))

Calling convention (pycuda's): pointer parameters take integer host addresses (int, numpy integers, objects with
`__int__` such as the pycuda stand-in's allocations, or a numpy array for its data pointer); scalar parameters take numpy
scalars of exactly the C type (np.int32 for int, np.float32 for float, ...). The kernel's parameter types are
read from the compiled code, so a wrong argument count or type is a TypeError, not silent garbage.

Faithfulness (details in cuda_shim.h): each block's threads are cooperative fibers, so `__syncthreads()` is a
real barrier (and barrier divergence is an error); between barriers threads run in a per-launch order
(`forward`, `reverse` or a seeded `shuffle`), which exposes missing barriers, and blocks run in the same order
mode, which exposes races between blocks; shared memory is filled with NaN bytes before every block; there are
no warps, so warp-synchronous code does not compile.
Supported subset: `__global__`/`__device__` functions, static `__shared__` arrays, `__syncthreads`, the
thread/block built-ins, atomics on int/unsigned/float, `__ldg`, `rsqrtf`, `__half` storage with
`__ushort_as_half`/`__half2float`, and math from <cmath>. Not supported: dynamic shared memory, `__constant__`
symbols set from the host, textures, warp intrinsics, cooperative groups, template kernels as entry points.
One OS thread runs every launch; a process-wide lock serialises launches.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import BackendUnavailable, msg

SHIM = Path(__file__).with_name("cuda_shim.h")
ORDERS = {"forward": 0, "reverse": 1, "shuffle": 2}
_LAUNCH_LOCK = threading.Lock()
_SCALARS: dict[str, tuple[type, Any]] = {
    "f": (np.float32, ctypes.c_float), "d": (np.float64, ctypes.c_double),
    "i": (np.int32, ctypes.c_int32), "I": (np.uint32, ctypes.c_uint32),
    "q": (np.int64, ctypes.c_int64), "Q": (np.uint64, ctypes.c_uint64),
    "h": (np.int16, ctypes.c_int16), "H": (np.uint16, ctypes.c_uint16),
    "b": (np.int8, ctypes.c_int8), "B": (np.uint8, ctypes.c_uint8),
}
_KERNEL_RE = re.compile(r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"
                        r"(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\(")
_TEMPLATE_KERNEL_RE = re.compile(r"template\s*<[^{;]*>\s*__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"
                                 r"(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\(")


class EmulationCompileError(RuntimeError):
    """The host compiler rejected a kernel source (the message carries its diagnostics)."""


def kernel_names(source: str) -> list[str]:
    """Names of the non-template `__global__` functions in `source`, in order of appearance."""
    text = _strip_comments(source)
    templates = set(_TEMPLATE_KERNEL_RE.findall(text))
    names: list[str] = []
    for name in _KERNEL_RE.findall(text):
        if name not in templates and name not in names:
            names.append(name)
    return names


def _strip_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    return re.sub(r"//[^\n]*", " ", source)


def _cache_dir() -> Path:
    env = os.environ.get("H3EMU_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "human3r_edge"
    d = base / "host_emu" if not env else base
    d.mkdir(parents=True, exist_ok=True)
    return d


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise BackendUnavailable(msg("host emulation", "no C++ compiler", None, "g++ on PATH or $CXX",
                                     "install g++ (build-essential)"))
    return cxx


def compile_module(source: str, *, defines: dict[str, str | int] | Iterable[str] | None = None,
                   include_dirs: Sequence[str | os.PathLike] = (), order: str = "forward", seed: int = 0,
                   opt: str = "-O2", **pycuda_options: Any) -> "EmulatedModule":
    """Compile CUDA `source` for the host emulation (cached by content hash) and load it.

    `defines` adds -D macros; `order` / `seed` set the default thread order of launches (see module doc).
    pycuda's SourceModule options (`options`, `no_extern_c`, `arch`, `code`, `keep`, `cache_dir`) are accepted
    and ignored, except that `-D` / `-I` entries of `options` are honoured.
    """
    if order not in ORDERS:
        raise ValueError(msg("host emulation", "unknown thread order", repr(order), sorted(ORDERS)))
    flags = ["-std=c++17", opt, "-fPIC", "-shared", "-fvisibility=hidden", "-fno-gnu-unique", "-w"]
    if isinstance(defines, dict):
        flags += [f"-D{k}={v}" for k, v in defines.items()]
    elif defines:
        flags += [f"-D{d}" for d in defines]
    for o in pycuda_options.get("options") or ():
        if isinstance(o, str) and (o.startswith("-D") or o.startswith("-I")):
            flags.append(o)
    flags += [f"-I{Path(d).resolve()}" for d in include_dirs]
    if "__syncthreads" not in _strip_comments(source):
        flags.append("-DH3EMU_NO_BARRIERS")  # no fibers needed: see run_block_direct in cuda_shim.h
    names = kernel_names(source)
    shim = SHIM.read_text()
    key = hashlib.sha256("\0".join([source, shim, " ".join(flags), ",".join(names)]).encode()).hexdigest()[:24]
    cache = _cache_dir()
    lib_path = cache / f"h3emu_{key}.so"
    if not lib_path.is_file():
        _build(source, names, flags, cache, lib_path)
    return EmulatedModule(lib_path, names, order, seed)


def _build(source: str, names: list[str], flags: list[str], cache: Path, lib_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cu = Path(tmp) / "module.cu"
        cu.write_text(source)
        lines = [f'#include "{cu}"', "#define H3EMU_EXPORT extern \"C\" __attribute__((visibility(\"default\")))"]
        for n in names:
            lines += [
                f"H3EMU_EXPORT int h3emu_launch_{n}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,"
                f" unsigned bz, void** args, int order, unsigned long long seed) {{",
                f"  return h3emu::launch({n}, dim3(gx, gy, gz), dim3(bx, by, bz), args, order, seed);",
                "}",
                f"H3EMU_EXPORT const char* h3emu_sig_{n}() {{",
                f"  static const std::string s = h3emu::signature({n});",
                "  return s.c_str();",
                "}",
            ]
        lines.append("H3EMU_EXPORT const char* h3emu_last_error() { return h3emu::g_error.c_str(); }")
        wrapper = Path(tmp) / "wrapper.cpp"
        wrapper.write_text("\n".join(lines) + "\n")
        out = Path(tmp) / "module.so"
        cmd = [_compiler(), *flags, "-include", str(SHIM), "-I", str(SHIM.parent), str(wrapper), "-o", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise EmulationCompileError(msg("host emulation", "g++ failed", res.stderr.strip()[-4000:],
                                            hint="the shim supports only the subset listed in host_emu/__init__.py"))
        os.replace(out, lib_path)


class EmulatedModule:
    """A compiled kernel source: `get_function(name)` like pycuda's SourceModule."""

    def __init__(self, lib_path: Path, names: list[str], order: str, seed: int) -> None:
        self.path = lib_path
        self.names = tuple(names)
        self.lib = ctypes.CDLL(str(lib_path))
        self.lib.h3emu_last_error.restype = ctypes.c_char_p
        self.default_order = order
        self.default_seed = seed

    def get_function(self, name: str) -> "EmulatedFunction":
        if name not in self.names:
            raise ValueError(msg("host emulation", "no such kernel", repr(name), f"one of {list(self.names)}",
                                 "template kernels cannot be entry points"))
        return EmulatedFunction(self, name)

    def host_function(self, name: str, restype: Any, argtypes: Sequence[Any]) -> Any:
        """A plain extern "C" host function of the module (e.g. a kernel file's CPU reference), via ctypes."""
        try:
            fn = getattr(self.lib, name)
        except AttributeError:
            raise ValueError(msg("host emulation", "no such exported host function", repr(name),
                                 hint="declare it extern \"C\" __attribute__((visibility(\"default\")))")) from None
        fn.restype, fn.argtypes = restype, list(argtypes)
        return fn

    def get_global(self, name: str) -> Any:
        raise NotImplementedError(msg("host emulation", "__constant__/__device__ symbols are not supported",
                                      repr(name), hint="pass the data through a pointer argument"))


def _dims(value: Sequence[int] | int, what: str) -> tuple[int, int, int]:
    t = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(t) <= 3 or any(not isinstance(v, (int, np.integer)) or v < 1 for v in t):
        raise ValueError(msg(f"kernel launch: {what}", "invalid dimensions", value, "1 to 3 positive ints"))
    return tuple(int(v) for v in t) + (1,) * (3 - len(t))  # type: ignore[return-value]


def _address(value: Any, index: int, name: str) -> int:
    if isinstance(value, np.ndarray):
        return int(value.ctypes.data)
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (float, np.floating)):
        raise TypeError(msg(f"kernel {name}: parameter #{index}", "expected a pointer", type(value).__name__,
                            "an integer address or an allocation"))
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TypeError(msg(f"kernel {name}: parameter #{index}", "expected a pointer", type(value).__name__,
                            "an integer address or an allocation")) from None


class EmulatedFunction:
    """One kernel entry point; call it like a pycuda Function."""

    def __init__(self, module: EmulatedModule, name: str) -> None:
        self.module = module
        self.name = name
        sig = getattr(module.lib, f"h3emu_sig_{name}")
        sig.restype = ctypes.c_char_p
        self.signature = sig().decode()
        self._launch = getattr(module.lib, f"h3emu_launch_{name}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_ulonglong]

    def __call__(self, *args: Any, block: Sequence[int] = (1, 1, 1), grid: Sequence[int] = (1, 1), shared: int = 0,
                 stream: Any = None, time_kernel: bool = False, order: str | None = None,
                 seed: int | None = None) -> float | None:
        if len(args) != len(self.signature):
            raise TypeError(msg(f"kernel {self.name}", "wrong number of arguments", len(args),
                                f"{len(self.signature)} (signature {self.signature!r})"))
        if shared:
            raise ValueError(msg(f"kernel {self.name}", "dynamic shared memory is not emulated", shared, "0"))
        b, g = _dims(block, "block"), _dims(grid, "grid")
        holders: list[Any] = []
        for i, (code, value) in enumerate(zip(self.signature, args)):
            if code == "P":
                holders.append(ctypes.c_void_p(_address(value, i, self.name)))
                continue
            np_type, c_type = _SCALARS[code]
            if not isinstance(value, np.generic) or np.dtype(type(value)) != np.dtype(np_type):
                raise TypeError(msg(f"kernel {self.name}: parameter #{i}", "wrong scalar type",
                                    type(value).__name__, f"numpy.{np.dtype(np_type).name}",
                                    f"wrap it, e.g. np.{np.dtype(np_type).name}(x), as pycuda needs"))
            holders.append(c_type(value.item()))
        argv = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
        mode = ORDERS[order or self.module.default_order] if (order or self.module.default_order) in ORDERS else -1
        if mode < 0:
            raise ValueError(msg(f"kernel {self.name}", "unknown thread order", order, sorted(ORDERS)))
        s = self.module.default_seed if seed is None else seed
        with _LAUNCH_LOCK:
            t0 = time.perf_counter()
            rc = self._launch(*g, *b, ctypes.cast(argv, ctypes.c_void_p), mode, s)
            dt = time.perf_counter() - t0
            err = self.module.lib.h3emu_last_error().decode() if rc else ""
        if rc:
            raise RuntimeError(msg(f"kernel {self.name}", "emulated launch failed", err,
                                   hint="this is a bug in the kernel (a GPU run would be undefined)"))
        return dt if time_kernel else None
