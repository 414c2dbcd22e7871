"""`human3r-edge doctor`: which backends work on this machine, and for each that does not, why.

    human3r-edge doctor [--backend NAME ...] [--json]

It reports the TensorRT version (or that only type stubs are installed), pycuda and whether the device's primary
CUDA context can be created, the ONNX Runtime providers that really load (after `onnxruntime.preload_dlls()`),
the shipped PTX for this GPU, the GPU's name, compute capability and free memory, the numpy / ONNX Runtime
pairing, and the TensorRT and CUDA majors that onnxruntime's provider libraries link (their ELF NEEDED entries).

Exit status: 0 when every requested backend works (with no --backend: when at least one backend works),
3 otherwise; 2 on a bad argument. Nothing here imports torch, and nothing is left allocated on the GPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import struct
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from human3r_edge.errors import BackendUnavailable, Human3RError, msg

BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "trt", "torch")


@dataclass
class Finding:
    """One probed item: ok, what was found (value) or why not (reason)."""

    name: str
    ok: bool
    value: Any = None
    reason: str = ""


@dataclass
class Report:
    backends: dict[str, Finding] = field(default_factory=dict)
    items: dict[str, Finding] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"backends": {k: asdict(v) for k, v in self.backends.items()},
                "checks": {k: asdict(v) for k, v in self.items.items()}}


# ------------------------------------------------------------------------------------------ ELF
def elf_needed(path: str | Path) -> list[str]:
    """The DT_NEEDED entries (shared libraries a binary links) of a 64- or 32-bit ELF file, in order.

    A small reader of the ELF header, the section headers, .dynamic and its string table (no readelf needed)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise Human3RError(msg(str(path), "not an ELF file", data[:4]))
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    if is64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
        sec_fmt, dyn_fmt = e + "IIQQQQIIQQ", e + "qQ"
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)
        sec_fmt, dyn_fmt = e + "IIIIIIIIII", e + "iI"
    sections = [struct.unpack_from(sec_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    SHT_DYNAMIC, DT_NEEDED = 6, 1
    out: list[str] = []
    for sec in sections:
        sh_type, sh_offset, sh_size, sh_link = sec[1], sec[4], sec[5], sec[6]
        if sh_type != SHT_DYNAMIC:
            continue
        strtab = sections[sh_link]
        str_off = strtab[4]
        step = struct.calcsize(dyn_fmt)
        for k in range(sh_size // step):
            tag, val = struct.unpack_from(dyn_fmt, data, sh_offset + k * step)
            if tag == 0:
                break
            if tag == DT_NEEDED:
                end = data.index(b"\0", str_off + val)
                out.append(data[str_off + val:end].decode())
    return out


def ort_provider_links(ort_dir: str | Path | None = None) -> dict[str, list[str]]:
    """NEEDED entries of onnxruntime's CUDA and TensorRT provider libraries ({} where absent)."""
    if ort_dir is None:
        import importlib.util

        spec = importlib.util.find_spec("onnxruntime")
        if spec is None or not spec.submodule_search_locations:
            return {}
        ort_dir = list(spec.submodule_search_locations)[0]
    out = {}
    for kind in ("cuda", "tensorrt"):
        p = Path(ort_dir) / "capi" / f"libonnxruntime_providers_{kind}.so"
        if p.is_file():
            out[kind] = elf_needed(p)
    return out


def linked_major(needed: list[str], lib: str) -> int | None:
    """Major version of `lib` (e.g. 'libnvinfer', 'libcudart') in a NEEDED list: libnvinfer.so.10 -> 10."""
    for n in needed:
        m = re.fullmatch(re.escape(lib) + r"\.so\.(\d+)", n)
        if m:
            return int(m.group(1))
    return None


# ------------------------------------------------------------------------------------------ probes
def _probe_numpy_ort(rep: Report) -> Any:
    import numpy as np

    rep.items["numpy"] = Finding("numpy", True, np.__version__)
    try:
        from human3r_edge.runtime.backends.ort import import_onnxruntime

        ort = import_onnxruntime()
    except (BackendUnavailable, ImportError) as exc:
        rep.items["onnxruntime"] = Finding("onnxruntime", False, reason=str(exc))
        return None
    except Exception as exc:  # e.g. a wheel built against numpy 1.x under numpy 2: "_ARRAY_API not found"
        rep.items["onnxruntime"] = Finding("onnxruntime", False, reason=msg(
            "onnxruntime", "fails to import", repr(exc)[:300], hint="on JetPack keep numpy < 2 (the Jetson ORT "
            "wheels are built against numpy 1.x, microsoft/onnxruntime#27562): pip install 'numpy<2'"))
        return None
    rep.items["onnxruntime"] = Finding("onnxruntime", True, ort.__version__)
    pairing_ok = not (platform.machine() in ("aarch64", "arm64") and int(np.__version__.split(".")[0]) >= 2)
    rep.items["numpy/onnxruntime"] = Finding(
        "numpy/onnxruntime", pairing_ok, f"numpy {np.__version__} with onnxruntime {ort.__version__} on "
        f"{platform.machine()}", "" if pairing_ok else "JetPack's onnxruntime-gpu wheels break under numpy 2 "
        "(microsoft/onnxruntime#27562): pip install 'numpy<2'")
    return ort


def _probe_ort_providers(rep: Report, ort: Any) -> None:
    from human3r_edge.runtime.backends.ort import OrtOptions, preload_cuda_libraries, probe_provider

    avail = list(ort.get_available_providers())
    rep.items["ort providers listed"] = Finding("ort providers listed", True, avail)
    links = ort_provider_links(Path(ort.__file__).parent)
    if links:
        rep.items["ort provider links"] = Finding(
            "ort provider links", True, {k: [n for n in v if n.startswith(("libnvinfer", "libcudart", "libcudnn",
                                                                          "libcublas"))] for k, v in links.items()})
    gpu = [p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") if p in avail]
    preload = preload_cuda_libraries(ort) if gpu else []
    if preload:
        rep.items["ort preload_dlls"] = Finding("ort preload_dlls", False, reason=" | ".join(preload[:6]))
    loads = []
    o = OrtOptions()
    for name in ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"):
        try:
            providers: list[Any] = [name] if name == "CPUExecutionProvider" else [(name, {})]
            probe_provider(ort, providers, o, strict=False)
            loads.append(name)
        except BackendUnavailable as exc:
            rep.items[f"ort {name}"] = Finding(name, False, reason=str(exc)[:600])
        except Exception as exc:  # an ORT error type the probe did not map
            rep.items[f"ort {name}"] = Finding(name, False, reason=repr(exc)[:600])
    rep.items["ort providers that load"] = Finding("ort providers that load", bool(loads), loads)


def _probe_tensorrt(rep: Report) -> str | None:
    from human3r_edge.runtime.cuda_util import require_tensorrt

    try:
        version = require_tensorrt()
    except BackendUnavailable as exc:
        rep.items["tensorrt"] = Finding("tensorrt", False, reason=str(exc))
        return None
    rep.items["tensorrt"] = Finding("tensorrt", True, version)
    links = rep.items.get("ort provider links")
    want = linked_major(ort_provider_links().get("tensorrt", []), "libnvinfer") if links else None
    if want is not None:
        have = int(version.split(".")[0])
        rep.items["tensorrt/onnxruntime"] = Finding(
            "tensorrt/onnxruntime", have == want, f"TensorRT {version}; onnxruntime's TensorRT EP links "
            f"libnvinfer.so.{want}", "" if have == want else f"ort-trt needs TensorRT {want}.x: pip install "
            f"'tensorrt-cu13>={want},<{want + 1}' (see docs/deploy-desktop.md)")
    return version


def _probe_cuda(rep: Report) -> tuple[int, int] | None:
    """pycuda, the primary context, GPU identity and free memory; the context is released again."""
    from human3r_edge.runtime.cuda_util import require_pycuda

    try:
        cuda = require_pycuda()
    except BackendUnavailable as exc:
        rep.items["pycuda"] = Finding("pycuda", False, reason=str(exc))
        return None
    import pycuda  # noqa: F401  (for its VERSION)

    rep.items["pycuda"] = Finding("pycuda", True, ".".join(map(str, getattr(sys.modules["pycuda"], "VERSION", ()))))
    try:
        dev = cuda.Device(0)
        ctx = dev.retain_primary_context()
        ctx.push()
    except Exception as exc:  # pycuda's LogicError/RuntimeError
        rep.items["primary context"] = Finding("primary context", False, reason=repr(exc)[:300])
        return None
    try:
        free, total = cuda.mem_get_info()
        cc = tuple(int(v) for v in dev.compute_capability())
        rep.items["primary context"] = Finding("primary context", True, "created")
        rep.items["gpu"] = Finding("gpu", True, {"name": str(dev.name()), "compute_capability": f"{cc[0]}.{cc[1]}",
                                                 "free_mb": free >> 20, "total_mb": total >> 20})
    finally:
        cuda.Context.pop()
        ctx.detach()
    return (cc[0], cc[1])


def _probe_ptx(rep: Report, cc: tuple[int, int] | None) -> None:
    from human3r_edge.kernels import build

    shipped = sorted(p.name for p in build.PTX_DIR.glob("*.ptx")) if build.PTX_DIR.is_dir() else []
    stale = []
    for name in build.KERNEL_FILES:
        for arch in build.ARCHS:
            p = build.ptx_path(name, arch)
            if p.is_file() and build.ptx_info(p.read_text())[1] != build.source_sha256(name):
                stale.append(p.name)
    if cc is None:
        rep.items["kernels ptx"] = Finding("kernels ptx", bool(shipped) and not stale,
                                           {"shipped": shipped, "isa": build.PTX_ISA},
                                           "; ".join(f"stale: {s}" for s in stale))
        return
    try:
        arch = build.pick_arch(cc)
        files = [build.ptx_path(n, arch).name for n in build.KERNEL_FILES]
        missing = [f for f in files if f not in shipped]
        ok = not missing and not stale
        rep.items["kernels ptx"] = Finding("kernels ptx", ok, {"arch": arch, "files": files, "isa": build.PTX_ISA[arch]},
                                           f"missing {missing}, stale {stale}" if not ok else "")
    except build.PtxError as exc:
        rep.items["kernels ptx"] = Finding("kernels ptx", False, reason=str(exc))


def _verdicts(rep: Report) -> None:
    it = rep.items

    def first_bad(*names: str) -> str:
        for n in names:
            f = it.get(n)
            if f is None:
                return f"{n}: not probed"
            if not f.ok:
                return f"{n}: {f.reason}"
        return ""

    loads = it.get("ort providers that load")
    loaded = loads.value if loads is not None and loads.value else []

    def ort_verdict(provider: str, backend: str) -> Finding:
        if "onnxruntime" not in it or not it["onnxruntime"].ok:
            return Finding(backend, False, reason=first_bad("onnxruntime"))
        if provider in loaded:
            return Finding(backend, True, provider)
        f = it.get(f"ort {provider}")
        return Finding(backend, False, reason=f.reason if f else f"{provider} did not load")

    rep.backends["ort-cpu"] = ort_verdict("CPUExecutionProvider", "ort-cpu")
    rep.backends["ort-cuda"] = ort_verdict("CUDAExecutionProvider", "ort-cuda")
    rep.backends["ort-trt"] = ort_verdict("TensorrtExecutionProvider", "ort-trt")
    bad = first_bad("tensorrt", "pycuda", "primary context")
    rep.backends["trt"] = Finding("trt", not bad, it["tensorrt"].value if not bad else None, bad)
    import importlib.util

    has_torch = importlib.util.find_spec("torch") is not None
    rep.backends["torch"] = Finding("torch", has_torch, "the PyTorch reference (export extra)" if has_torch else None,
                                    "" if has_torch else "torch is not installed: pip install 'human3r-edge[export]'")


def diagnose() -> Report:
    """Probe everything (no GPU memory is left allocated); returns the report."""
    rep = Report()
    rep.items["platform"] = Finding("platform", True, f"{platform.system()} {platform.machine()}, "
                                                      f"Python {platform.python_version()}")
    ort = _probe_numpy_ort(rep)
    if ort is not None:
        _probe_ort_providers(rep, ort)
    _probe_tensorrt(rep)
    cc = _probe_cuda(rep)
    _probe_ptx(rep, cc)
    _verdicts(rep)
    return rep


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", action="append", choices=BACKENDS, default=None,
                   help="a backend that must work (repeatable); exit 3 if any does not")
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")


def format_report(rep: Report, wanted: list[str]) -> list[str]:
    lines = ["backends:"]
    for name, f in rep.backends.items():
        mark = "ok" if f.ok else "unavailable"
        star = " (requested)" if name in wanted else ""
        lines.append(f"  {name:9s} {mark}{star}" + (f": {f.value}" if f.ok and f.value else "")
                     + (f" | {f.reason}" if not f.ok else ""))
    lines.append("checks:")
    for name, f in rep.items.items():
        lines.append(f"  {name}: " + (f"{f.value}" if f.ok else f"NO | {f.reason}" + (f" ({f.value})" if f.value
                                                                                      else "")))
    return lines


def exit_code(rep: Report, wanted: list[str]) -> int:
    if wanted:
        return 0 if all(rep.backends[b].ok for b in wanted) else 3
    return 0 if any(f.ok for f in rep.backends.values()) else 3


def main(args: argparse.Namespace) -> int:
    wanted = list(dict.fromkeys(args.backend or []))
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # ONNX Runtime prints its fallback notices: keep stdout clean
        rep = diagnose()
    code = exit_code(rep, wanted)
    if args.json:
        print(json.dumps({**rep.as_dict(), "requested": wanted, "exit": code}, indent=1, default=str))
    else:
        print("\n".join(format_report(rep, wanted)))
        bad = [b for b in wanted if not rep.backends[b].ok]
        summary = f"unavailable: {', '.join(bad)}" if bad else \
            f"usable: {', '.join(b for b, f in rep.backends.items() if f.ok) or 'none'}"
        print(f"human3r-edge doctor | {summary} (exit {code})")
    return code
