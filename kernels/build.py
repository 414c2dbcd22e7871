"""Kernel sources shipped with the package, and nvcc helpers (PTX for the target GPUs, object files)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..runtime.errors import BackendUnavailable, msg

KERNEL_DIR = Path(__file__).resolve().parent
KERNEL_FILES = ("smplx_skinning.cu", "preprocess.cu")
# Turing (T4), Ampere desktop (RTX 30xx, A10), Orin (Jetson AGX/NX/Nano), Ada (RTX 40xx, L4)
ARCHS = ("sm_75", "sm_86", "sm_87", "sm_89")


def kernel_path(name: str) -> Path:
    """Path of a kernel file shipped in kernels/ (e.g. 'smplx_skinning.cu')."""
    p = KERNEL_DIR / name
    if not p.is_file():
        raise FileNotFoundError(msg("kernels", "no such kernel source", name,
                                    [f.name for f in KERNEL_DIR.glob("*.cu")]))
    return p


def kernel_source(name: str) -> str:
    """Text of a kernel file (what the runtime hands to pycuda's SourceModule)."""
    return kernel_path(name).read_text()


def find_nvcc() -> str | None:
    """nvcc from $NVCC, PATH, $CUDA_HOME/bin or /usr/local/cuda/bin, or None."""
    candidates = [os.environ.get("NVCC"), shutil.which("nvcc")]
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            candidates.append(str(Path(root) / "bin" / "nvcc"))
    return next((c for c in candidates if c and Path(c).is_file()), None)


def _nvcc() -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        raise BackendUnavailable(msg("nvcc", "not found", None, "nvcc on PATH, $NVCC or $CUDA_HOME/bin",
                                     "install the CUDA toolkit (any 12.x/13.x)"))
    return nvcc


def compile_ptx(source: str | Path, arch: str, defines: Iterable[str] = (), extra: Iterable[str] = ()) -> str:
    """Compile a kernel file (name in kernels/ or a path) to PTX for `arch` (e.g. 'sm_87'); returns the PTX text.

    Raises RuntimeError with nvcc's diagnostics when compilation fails.
    """
    path = Path(source) if Path(source).is_file() else kernel_path(str(source))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (path.stem + ".ptx")
        cmd = [_nvcc(), "-ptx", f"-arch={arch}", "-O3", *[f"-D{d}" for d in defines], *extra, str(path), "-o", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(msg(f"nvcc {path.name} ({arch})", "compilation failed", res.stderr.strip()[-3000:]))
        return out.read_text()


def compile_object(source: str | Path, arch: str, defines: Iterable[str] = ()) -> bytes:
    """Compile a kernel file with its host code to an object file (checks the standalone benchmark compiles)."""
    path = Path(source) if Path(source).is_file() else kernel_path(str(source))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (path.stem + ".o")
        cmd = [_nvcc(), "-c", f"-arch={arch}", "-O3", *[f"-D{d}" for d in defines], str(path), "-o", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(msg(f"nvcc -c {path.name} ({arch})", "compilation failed", res.stderr.strip()[-3000:]))
        return out.read_bytes()
