"""Kernel sources and their PTX shipped with the package, and nvcc helpers (PTX for the target GPUs, objects).

The runtime loads the kernels from the PTX in kernels/ptx/ (`load_module`, pycuda's `module_from_buffer`), so no
nvcc is needed where it runs (a Jetson's /usr/local/cuda/bin is often not on PATH). The driver JIT-compiles the
PTX of the newest shipped architecture not newer than the GPU. Each file declares the oldest PTX ISA its target
allows, so a JetPack 5 driver (CUDA 11.4, ISA 7.4) loads it too. Regenerate after editing a .cu file:

    python -m human3r_edge.kernels.build --write-ptx        (needs nvcc; tests/test_kernels_ptx.py checks it)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from human3r_edge.errors import BackendUnavailable, msg

KERNEL_DIR = Path(__file__).resolve().parent
KERNEL_FILES = ("smplx_skinning.cu", "preprocess.cu", "nv12.cu")
# Turing (T4), Ampere desktop (RTX 30xx, A10), Orin (Jetson AGX/NX/Nano), Ada (RTX 40xx, L4)
ARCHS = ("sm_75", "sm_86", "sm_87", "sm_89")
PTX_DIR = KERNEL_DIR / "ptx"
# the oldest PTX ISA that can target each architecture (ptxas refuses older): CUDA 10.0 / 11.1 / 11.4 / 11.8
PTX_ISA = {"sm_75": "6.3", "sm_86": "7.1", "sm_87": "7.4", "sm_89": "7.8"}
_HEADER = "// human3r-edge kernel: source={name} sha256={sha}"
_HEADER_RE = re.compile(r"^// human3r-edge kernel: source=(\S+) sha256=([0-9a-f]{64})$", re.M)


class PtxError(Exception):
    """A PTX file the driver (or this package) cannot use."""


def kernel_path(name: str) -> Path:
    """Path of a kernel file shipped in kernels/ (e.g. 'smplx_skinning.cu')."""
    p = KERNEL_DIR / name
    if not p.is_file():
        raise FileNotFoundError(msg("kernels", "no such kernel source", name,
                                    [f.name for f in KERNEL_DIR.glob("*.cu")]))
    return p


def kernel_source(name: str) -> str:
    """Text of a kernel file (the host emulation and the PTX generator read it; the runtime loads the PTX)."""
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


# ------------------------------------------------------------------------------------------ shipped PTX
def source_sha256(name: str) -> str:
    return hashlib.sha256(kernel_path(name).read_bytes()).hexdigest()


def ptx_path(name: str, arch: str) -> Path:
    return PTX_DIR / f"{Path(name).stem}.{arch}.ptx"


def make_shipped_ptx(name: str, arch: str) -> str:
    """nvcc's PTX of kernel file `name` for `arch`, with the oldest ISA version the target allows and a header
    naming its source and the source's SHA-256 (so a stale PTX is detected)."""
    text = compile_ptx(name, arch)
    text = re.sub(r"^\.version \d+\.\d+$", f".version {PTX_ISA[arch]}", text, count=1, flags=re.M)
    return _HEADER.format(name=name, sha=source_sha256(name)) + "\n" + text


def write_shipped_ptx(names: Iterable[str] = KERNEL_FILES, archs: Iterable[str] = ARCHS) -> list[Path]:
    PTX_DIR.mkdir(exist_ok=True)
    out = []
    for name in names:
        for arch in archs:
            p = ptx_path(name, arch)
            p.write_text(make_shipped_ptx(name, arch))
            out.append(p)
    return out


def _cc_value(arch: str) -> int:
    return int(arch.removeprefix("sm_").removeprefix("compute_"))


def pick_arch(cc: tuple[int, int]) -> str:
    """The newest shipped architecture a GPU of compute capability `cc` runs (PTX is forward compatible)."""
    have = [a for a in ARCHS if _cc_value(a) <= cc[0] * 10 + cc[1]]
    if not have:
        raise PtxError(msg("kernels", "GPU too old for the shipped PTX", f"sm_{cc[0]}{cc[1]}", f">= {ARCHS[0]}"))
    return have[-1]


def ptx_info(text: str) -> tuple[str, str, tuple[int, int], int]:
    """(source name, source sha256, PTX ISA version, target as e.g. 87) of a shipped PTX text."""
    m = _HEADER_RE.search(text)
    v = re.search(r"^\.version (\d+)\.(\d+)$", text, re.M)
    t = re.search(r"^\.target sm_(\d+)", text, re.M)
    if m is None or v is None or t is None:
        raise PtxError("not a human3r-edge PTX file (no source header, .version or .target)")
    return m.group(1), m.group(2), (int(v.group(1)), int(v.group(2))), int(t.group(1))


def ptx_source_for(text: str, cc: tuple[int, int], driver_isa: tuple[int, int]) -> str:
    """The .cu source a shipped PTX was made from, after the checks the driver (and freshness) impose:
    ISA not newer than the driver's, .target not newer than the GPU, source unchanged since. (Stand-ins.)"""
    name, sha, isa, target = ptx_info(text)
    if isa > driver_isa:
        raise PtxError(f"CUDA_ERROR_UNSUPPORTED_PTX_VERSION: PTX ISA {isa[0]}.{isa[1]} is newer than the "
                       f"driver's {driver_isa[0]}.{driver_isa[1]}")
    if target > cc[0] * 10 + cc[1]:
        raise PtxError(f"CUDA_ERROR_NO_BINARY_FOR_GPU: PTX for sm_{target} on an sm_{cc[0]}{cc[1]} GPU")
    if sha != source_sha256(name):
        raise PtxError(f"stale PTX: {name} changed since its PTX was generated (python -m "
                       "human3r_edge.kernels.build --write-ptx)")
    return kernel_source(name)


def shipped_ptx(name: str, cc: tuple[int, int]) -> tuple[Path, str]:
    """(path, text) of the shipped PTX of kernel file `name` for a GPU of compute capability `cc`."""
    path = ptx_path(name, pick_arch(cc))
    if not path.is_file():
        raise PtxError(msg(f"kernel {name}", "no shipped PTX", str(path),
                           hint="python -m human3r_edge.kernels.build --write-ptx (needs nvcc)"))
    return path, path.read_text()


def load_module(driver: Any, name: str) -> Any:
    """Load kernel file `name` from its shipped PTX into the current CUDA context (pycuda module_from_buffer;
    the driver JIT-compiles it, no nvcc). Raises BackendUnavailable with the reason."""
    try:
        cc = tuple(driver.Context.get_device().compute_capability())
        path, text = shipped_ptx(name, (int(cc[0]), int(cc[1])))
        return driver.module_from_buffer(text.encode() + b"\0")  # cuModuleLoadDataEx reads PTX up to a NUL
    except PtxError as exc:
        raise BackendUnavailable(msg(f"CUDA kernels {name}", "cannot be loaded", str(exc))) from exc
    except Exception as exc:  # pycuda LogicError (no context, JIT failure, ...)
        raise BackendUnavailable(msg(f"CUDA kernels {name}", "the driver refused the PTX", repr(exc)[:400], None,
                                     "a current CUDA context, and a driver new enough for the PTX ISA "
                                     "(see `human3r-edge doctor`)")) from exc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m human3r_edge.kernels.build", description=__doc__.splitlines()[0])
    p.add_argument("--write-ptx", action="store_true", help=f"regenerate {PTX_DIR.name}/ (needs nvcc)")
    p.add_argument("names", nargs="*", metavar="KERNEL", help=f"only these kernel files (default: all of "
                   f"{', '.join(KERNEL_FILES)})")
    args = p.parse_args(argv)
    unknown = sorted(set(args.names) - set(KERNEL_FILES))
    if unknown:
        p.error(msg("KERNEL", "not a shipped kernel file", unknown, list(KERNEL_FILES)))
    if args.write_ptx:
        for path in write_shipped_ptx(args.names or KERNEL_FILES):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
