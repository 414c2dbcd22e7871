"""ONNX Runtime CPU profile of the export: kernel time per op type and achieved GFLOP/s of matmuls and convs."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.benchmarks.bench_settings import BenchSettings

MATMUL_OPS = ("MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "QLinearMatMul")
CONV_OPS = ("Conv", "FusedConv", "ConvTranspose", "NhwcFusedConv")


def _profiled_ort_cpu(prefix: str) -> type:
    """OrtCpuBackend with ONNX Runtime's per-node profiler on (used only for the profile pass, never timed)."""
    from human3r_edge.runtime.backends.ort import (OrtCpuBackend, import_onnxruntime, onnx_path, session_options,
                                                   verify_session_io)

    class ProfiledOrtCpu(OrtCpuBackend):
        def _activate_impl(self) -> None:
            ort = import_onnxruntime()
            so = session_options(ort, self.opts, strict=False)
            so.enable_profiling = True
            so.profile_file_prefix = prefix
            for g in self.spec.graphs:
                path = onnx_path(self.directory, g)
                sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
                verify_session_io(sess, g, path)
                self._sessions[g.name] = sess

    return ProfiledOrtCpu


def summarize_ort_profile(events: Sequence[Mapping[str, Any]], flops: Mapping[str, int], peak_gflops: float) -> dict:
    """Kernel time per op type of the LAST `model_run` in an ONNX Runtime profile, and achieved GFLOP/s of the
    matmul-like and conv ops. flops: {"MatMul": ..., "Gemm": ..., "Conv": ..., "ConvTranspose": ...} of the
    graph as exported (before ORT's fusions renamed MatMul+Add into Gemm / FusedMatMul)."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        return {}
    last = max(runs, key=lambda e: e["ts"])
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and e["ts"] >= last["ts"]:
            op = str(e.get("args", {}).get("op_name", "?"))
            by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e3
    kernel = sum(by_op.values())
    cats = {"matmul": sum(v for k, v in by_op.items() if k in MATMUL_OPS),
            "conv": sum(v for k, v in by_op.items() if k in CONV_OPS)}
    cats["other"] = kernel - cats["matmul"] - cats["conv"]
    cat_flops = {"matmul": sum(flops.get(k, 0) for k in ("MatMul", "Gemm", "Einsum", "Attention",
                                                         "MultiHeadAttention", "FusedMatMul")),
                 "conv": sum(flops.get(k, 0) for k in ("Conv", "ConvTranspose", "FusedConv")), "other": 0}
    out = {"run_ms": last["dur"] / 1e3, "kernel_ms": kernel,
           "by_op_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1])), "categories": {}}
    for k, ms in cats.items():
        f = cat_flops[k]
        out["categories"][k] = {"ms": ms, "share": ms / kernel if kernel else 0.0, "gflop": f / 1e9,
                                "efficiency": f / (ms / 1e3) / (peak_gflops * 1e9) if ms > 0 and f else None}
    return out


def profile_ort_cpu(s: BenchSettings, directory: Path, frames: Sequence[np.ndarray], by_op_flops: Mapping[str, Any],
                    peak_gflops: float, workdir: Path) -> dict:
    """Run `frames` (the last one is profiled) through a profiling ort-cpu Session; per graph, the op-type
    breakdown of the last run (`summarize_ort_profile`)."""
    from human3r_edge.runtime.iospec import ExportSpec
    from human3r_edge.runtime.pipeline import PipelineOptions
    from human3r_edge.runtime.session import Session, SessionOptions

    workdir.mkdir(parents=True, exist_ok=True)
    opts: dict[str, Any] = dict(s.ort_options)
    opts.setdefault("intra_op_threads", s.threads)
    cls = _profiled_ort_cpu(str(workdir / "ort_profile"))
    backend = cls(ExportSpec.load(directory), directory, **opts)
    session = Session(backend, None, SessionOptions(pipeline=PipelineOptions(ttt3r=True), dense=True, skin=False))
    session.start()
    try:
        for f in frames:
            session.step(f)
        files = {name: sess.end_profiling() for name, sess in backend._sessions.items()}
    finally:
        session.close()
    out = {}
    for name, f in files.items():
        path = Path(f)
        events = json.loads(path.read_text())
        out[name] = summarize_ort_profile(events, by_op_flops.get(name, {}), peak_gflops)
        path.unlink(missing_ok=True)
    return out
