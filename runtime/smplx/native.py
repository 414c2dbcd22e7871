"""The compiled CPU skinning kernels (kernels/smplx_cpu.c): built at first use, cached, called through ctypes.

`load_native()` compiles the C file with the system compiler (`$CC`, else cc / gcc / clang) as
`-O3 -march=native -fPIC -shared` (then without -march=native if that fails), into
`$HUMAN3R_NATIVE_CACHE` (default `~/.cache/human3r-edge/native`), named by a hash of the source, the compiler's
version and the flags, so a cached library is reused only for the same source and compiler. The library is
written to a temporary name and renamed: concurrent first uses are safe. Nothing here is required: without a
compiler (or with `HUMAN3R_SMPLX_NATIVE=0`) `load_native()` returns None and says why in `native_status()`,
and SMPLXModel uses its numpy path.

The kernels hold no state; `NativeKernels` splits each call over a thread pool (ctypes releases the GIL), so
calls from several threads at once are safe.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.kernels.build import kernel_path

SOURCE = "smplx_cpu.c"
ABI_VERSION = 2
BLOCK = 16  # basis columns per block (H3R_BLOCK)
TILE = 8  # people per register tile (H3R_TILE)
_FLAG_SETS = (["-O3", "-march=native", "-fPIC", "-shared"], ["-O3", "-fPIC", "-shared"])

_LOCK = threading.Lock()
_LOADED: "NativeKernels | None" = None
_STATUS = "not tried yet"


def cache_dir() -> Path:
    env = os.environ.get("HUMAN3R_NATIVE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "human3r-edge" / "native"


def _compiler() -> str | None:
    for name in ([os.environ["CC"]] if os.environ.get("CC") else []) + ["cc", "gcc", "clang"]:
        path = shutil.which(name)
        if path:
            return path
    return None


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def build_library(cc: str, out_dir: Path) -> Path:
    """Compile kernels/smplx_cpu.c (cached by source, compiler and flags); returns the library's path.
    Raises RuntimeError with the compiler's message if every flag set fails."""
    src = kernel_path(SOURCE)
    text = src.read_bytes()
    version = _compiler_version(cc)
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(text + version.encode() + " ".join(flags).encode() + cc.encode()).hexdigest()[:20]
        lib = out_dir / f"smplx_cpu-{key}.so"
        if lib.is_file():
            return lib
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".smplx_cpu-", suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            res = subprocess.run([cc, *flags, str(src), "-o", tmp], capture_output=True, text=True, timeout=300)
            if res.returncode == 0:
                os.replace(tmp, lib)  # atomic: a concurrent builder finds a whole library or none
                return lib
            errors.append(f"{' '.join(flags)}: {res.stderr.strip()[:300]}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise RuntimeError("; ".join(errors))


class NativeKernels:
    """ctypes bindings of kernels/smplx_cpu.c plus the thread pool that splits each call."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        lib = ctypes.CDLL(str(path))
        if lib.h3r_abi_version() != ABI_VERSION:
            raise RuntimeError(f"{path}: ABI {lib.h3r_abi_version()}, expected {ABI_VERSION}")
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.h3r_blend.argtypes = [p, i, i, i, p, p, i, p, i, i]
        lib.h3r_blend.restype = None
        lib.h3r_skin.argtypes = [p, p, i, p, p, i, p, i, i, p, p, i, i, i, i]
        lib.h3r_skin.restype = None
        self.lib = lib
        self.path = path
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        self.threads = max(1, min(int(threads or cpus), 16))
        self._pool = ThreadPoolExecutor(self.threads - 1, "smplx-native") if self.threads > 1 else None

    def _parallel(self, n: int, call: Any) -> None:
        """call(lo, hi) over [0, n) split into one range per thread; the calling thread takes the last one."""
        k = min(self.threads, n)
        if k <= 1 or self._pool is None:
            call(0, n)
            return
        edges = [n * t // k for t in range(k + 1)]
        futures = [self._pool.submit(call, edges[t], edges[t + 1]) for t in range(k - 1)]
        call(edges[k - 1], edges[k])
        for f in futures:
            f.result()

    def blend(self, featsT: np.ndarray, P: int, basis_blk: np.ndarray, template: np.ndarray, out: np.ndarray) -> None:
        """out (P, n3) = template + feats . basis. featsT (K, Ppad) float32 C-contiguous (zero beyond P)."""
        K, Ppad = featsT.shape
        nblk, n3 = basis_blk.shape[0], template.shape[0]
        args = (featsT.ctypes.data, P, Ppad, K, basis_blk.ctypes.data, template.ctypes.data, n3, out.ctypes.data)
        self._parallel(nblk, lambda lo, hi: self.lib.h3r_blend(*args, lo, hi))

    def skin(self, v_posed: np.ndarray, A: np.ndarray, w_idx: np.ndarray, w_val: np.ndarray,
             world: np.ndarray | None, v_cam: np.ndarray, v_world: np.ndarray | None) -> None:
        """v_cam (P, V, 3) (and v_world) from v_posed (P, 3, V) and A (P, J, 3, 4); sparse weights (V, kw)."""
        P, _, V = v_posed.shape
        J, kw = A.shape[1], w_idx.shape[1]
        wp = None if world is None else world.ctypes.data
        vw = None if v_world is None else v_world.ctypes.data
        args = (v_posed.ctypes.data, A.ctypes.data, J, w_idx.ctypes.data, w_val.ctypes.data, kw, wp, P, V,
                v_cam.ctypes.data, vw)
        chunks = max(1, self.threads)  # split the vertices: every thread works on every person
        self._parallel(chunks, lambda lo, hi: self.lib.h3r_skin(*args, 0, P, V * lo // chunks, V * hi // chunks))


def load_native() -> NativeKernels | None:
    """The compiled kernels, or None (see native_status() for why). Built once per process, cached on disk."""
    global _LOADED, _STATUS
    with _LOCK:
        if _LOADED is not None:
            return _LOADED
        if os.environ.get("HUMAN3R_SMPLX_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            _STATUS = "disabled by HUMAN3R_SMPLX_NATIVE"
            return None
        cc = _compiler()
        if cc is None:
            _STATUS = "no C compiler found ($CC, cc, gcc or clang)"
            return None
        try:
            _LOADED = NativeKernels(build_library(cc, cache_dir()))
            _STATUS = f"compiled kernels {_LOADED.path.name} ({_LOADED.threads} threads)"
        except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as exc:
            _STATUS = f"compiled kernels unavailable: {exc}"[:500]
            return None
        return _LOADED


def native_status() -> str:
    """Why load_native() gave what it gave (for logs and summaries)."""
    return _STATUS


def _reset_for_tests() -> None:
    global _LOADED, _STATUS
    with _LOCK:
        _LOADED, _STATUS = None, "not tried yet"


def blocked_basis(basis: np.ndarray) -> np.ndarray:
    """(K, n3) blend basis -> (ceil(n3/16), K, 16) float32 column blocks, zero-padded (the kernel's layout)."""
    K, n3 = basis.shape
    nblk = -(-n3 // BLOCK)
    padded = np.zeros((K, nblk * BLOCK), np.float32)
    padded[:, :n3] = basis
    return np.ascontiguousarray(padded.reshape(K, nblk, BLOCK).transpose(1, 0, 2))


def sparse_weights(weights_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(J, V) skinning weights -> (V, kw) joint indices int32 and weights float32 of each vertex's non-zero
    weights (kw = the most any vertex has; shorter rows padded with weight 0)."""
    w = weights_t.T  # (V, J)
    kw = int(max(1, (w != 0).sum(1).max()))
    order = np.argsort(w == 0, axis=1, kind="stable")[:, :kw]  # non-zero joints first, in joint order
    return (np.ascontiguousarray(order.astype(np.int32)),
            np.ascontiguousarray(np.take_along_axis(w, order, axis=1).astype(np.float32)))
