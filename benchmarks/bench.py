"""`human3r-edge bench`: per-stage latency, memory and efficiency of each backend on the same synthetic frames.

    human3r-edge bench --config 672S --resolution 512x288 --backends torch,ort-cpu --frames 5 --warmup 1

What is measured, per backend, in one process on the same frames (warm-up frames excluded from statistics):
* `torch`: the full reference model in PyTorch eager fp32 (every head, as the original demo runs it:
  `export.reference.ReferenceStreamer`, n detected people, TTT3R on) plus the demo's per-frame post-processing
  (world points, Weiszfeld focal, rotation vectors) and SMPL-X meshes through the `smplx` package.
* `ort-cpu` (and `ort-cuda`, `ort-trt`, `trt`): the lean deployment export that `human3r-edge run` uses, through the
  torch-free `runtime.session.Session` (preprocessing, K padded human slots, host detection, tracking, numpy
  skinning, world points).
Stages: preprocess, encoder, decoder (one recurrent step), smpl_head, skinning, postprocess (detection, NMS,
tracking, pose/focal/world points), outputs (building the per-frame result; the residual of the frame time).
FLOPs come from the exported ONNX graphs (`flops.py`), the peak from a measured sgemm (`peak.py`); efficiency =
counted FLOPs / time / sgemm peak. Weights are random (seeded), with the detection bias shifted on frame 0 so that
`--people` people pass there (as the reference anchor did); the same weights feed the torch model and the export.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from human3r_edge.benchmarks import flops as flops_mod
from human3r_edge.benchmarks import machine
from human3r_edge.benchmarks import peak as peak_mod
from human3r_edge.benchmarks.bench_assets import asset_dir, ensure_assets, ensure_export, load_assets, prepare_assets
from human3r_edge.benchmarks.bench_report import default_json_path, write_results
from human3r_edge.benchmarks.bench_runners import run_runtime, run_torch
from human3r_edge.benchmarks.bench_settings import (GRAPH_STAGES, RUNTIME_BACKENDS, STAGES, BenchSettings,
                                                    add_arguments, settings_from_args)
from human3r_edge.benchmarks.frames import synthetic_frames
from human3r_edge.benchmarks.memory import peak_rss_bytes, release_memory, reset_peak_rss, rss_bytes
from human3r_edge.benchmarks.ort_profile import profile_ort_cpu
from human3r_edge.benchmarks.timing import percentiles
from human3r_edge.errors import BackendUnavailable, Human3RError, msg

__all__ = ["add_arguments", "main", "run_bench"]


def summarize_backend(raw: dict, warmup: int, flops: Mapping[str, int], peak_gflops: float) -> dict:
    """Percentiles, FPS, efficiency and runtime overhead of one backend's per-frame records."""
    timed_records = raw["records"][warmup:]
    frame = [r["frame_ms"] for r in timed_records]
    stages = {k: percentiles([r["stages"].get(k, 0.0) for r in timed_records]) for k in STAGES}
    fr = percentiles(frame)
    graph = percentiles([r["graph_ms"] for r in timed_records])
    outside = [max(r["frame_ms"] - r["graph_ms"], 0.0) / r["frame_ms"] for r in timed_records if r["frame_ms"] > 0]
    peak = peak_gflops * 1e9
    eff = {}
    for k in GRAPH_STAGES:
        t = stages[k]["p50"] / 1e3
        eff[k] = float(flops.get(k, 0)) / t / peak if t > 0 and peak > 0 else 0.0
    total_flops = float(sum(flops.get(k, 0) for k in GRAPH_STAGES))
    eff["total"] = total_flops / (fr["p50"] / 1e3) / peak if fr["p50"] > 0 and peak > 0 else 0.0
    eff["graphs"] = total_flops / (graph["p50"] / 1e3) / peak if graph["p50"] > 0 and peak > 0 else 0.0
    return {
        "frame_ms": fr, "fps": 1e3 / fr["p50"] if fr["p50"] > 0 else 0.0, "stages": stages,
        "graph_ms": graph, "efficiency": eff,
        "achieved_gflops": {"total": total_flops / (fr["p50"] / 1e3) / 1e9 if fr["p50"] > 0 else 0.0},
        "overhead": {"outside_graphs_fraction_p50": float(np.median(outside)) if outside else 0.0,
                     "outside_graphs_ms_p50": float(np.median([r["frame_ms"] - r["graph_ms"] for r in timed_records]))
                     if timed_records else 0.0},
        "people_per_frame": [r["people"] for r in raw["records"]],
        "timed_frames": len(timed_records), "warmup_frames": min(warmup, len(raw["records"])),
        "per_frame_ms": frame,
    }


def run_bench(s: BenchSettings) -> dict:
    """Run the whole benchmark for settings `s` and return the result dict (the JSON that is written)."""
    from human3r_edge.runtime.config import get_config

    cfg = get_config(s.config)
    cpu_before = machine.cpu_snapshot()
    result: dict[str, Any] = {
        "what": "human3r-edge bench: per-frame latency per stage, peak RSS and efficiency vs the measured sgemm peak",
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "config": s.config,
        "resolution": [s.width, s.height], "frames": s.frames, "warmup": s.warmup, "threads": s.threads,
        "people_frame0": s.people, "max_people": s.max_people, "seed": s.seed, "stages": list(STAGES),
        "ort_options": {k: v for k, v in s.ort_options},
        "machine": machine.describe(s.threads), "versions": machine.versions(),
        "command": "human3r-edge bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
    }
    sg = peak_mod.measure(s.peak_size, s.peak_repeats, s.threads)
    result["machine"]["sgemm_peak_gflops"] = sg["peak_gflops"]
    result["machine"]["sgemm"] = sg
    assets = ensure_assets(s)
    result["weights"] = {"checkpoint": str(assets.checkpoint), **assets.info}
    runtime_names = [b for b in s.backends if b in RUNTIME_BACKENDS]
    onnx_dir = None
    export_error = None
    if runtime_names:
        try:
            onnx_dir = ensure_export(s, assets)
        except (BackendUnavailable, Human3RError) as exc:
            export_error = str(exc)
    if onnx_dir is not None:
        graphs = flops_mod.count_export(onnx_dir)
        onnx_flops = flops_mod.summarize(graphs)
        flops = {k: int(onnx_flops["stages"].get(k, 0)) for k in GRAPH_STAGES}
        result["flops_info"] = {"source": f"onnx: {onnx_dir}", "weight_fp32_bytes": onnx_flops["weight_fp32_bytes"],
                                "params": onnx_flops["params"],
                                "by_op": {k: v.by_op for k, v in graphs.items()},
                                "by_scope": {k: v.by_scope for k, v in graphs.items()},
                                "uncounted_nodes": {k: len(v.uncounted) for k, v in graphs.items()}}
    else:
        meta = flops_mod.torch_stage_flops(cfg, s.width, s.height, s.max_people, lean=True)
        flops = {k: int(meta["stages"][k]) for k in GRAPH_STAGES}
        result["flops_info"] = {"source": "torch-meta (no ONNX export available)",
                                "weight_fp32_bytes": meta["weight_fp32_bytes"], "params": meta["params"]}
    result["flops"] = {**flops, "total": int(sum(flops.values()))}

    w0, h0 = s.source_size
    frames = synthetic_frames(w0, h0, s.warmup + s.frames, s.seed)
    result["source_frame_size"] = [w0, h0]
    backends: dict[str, Any] = {}
    for name in s.backends:
        release_memory()
        base = rss_bytes()
        reset_peak_rss()
        try:
            if name == "torch":
                raw = run_torch(s, assets, frames)
            elif name == "trt":
                if s.trt_engines is None:
                    raise BackendUnavailable(msg("trt", "no engine directory", None,
                                                 hint="pass --trt-engines DIR (human3r-edge build)"))
                raw = run_runtime(s, name, s.trt_engines, assets, frames)
            else:
                if onnx_dir is None:
                    raise BackendUnavailable(msg(name, "no lean export", export_error))
                raw = run_runtime(s, name, onnx_dir, assets, frames)
        except (BackendUnavailable, ImportError) as exc:
            backends[name] = {"skipped": str(exc)}
            print(f"bench | {name}: skipped ({exc})", file=sys.stderr)
            continue
        peak_rss, end_rss = peak_rss_bytes(), rss_bytes()
        if name == "torch":
            bflops = flops_mod.torch_stage_flops(cfg, s.width, s.height, _typical_people(raw), lean=False)
            stage_flops = {k: int(bflops["stages"][k]) for k in GRAPH_STAGES}
            weights = raw["weights_fp32_bytes"]
            fsource = (f"torch-meta, full model (every head), {bflops['humans']} people "
                       "(FlopCounterMode on the meta device: SDPA counted as matmuls)")
        else:
            stage_flops = flops
            weights = int(result["flops_info"]["weight_fp32_bytes"])
            fsource = result["flops_info"]["source"]
        b = summarize_backend(raw, s.warmup, stage_flops, sg["peak_gflops"])
        b.update(what=raw["what"], load_s=raw["load_s"], load_peak_rss_bytes=raw["load_peak_rss_bytes"],
                 flops={**stage_flops, "total": sum(stage_flops.values())},
                 flops_source=fsource, peak_rss_bytes=peak_rss, rss_end_bytes=end_rss, rss_baseline_bytes=base,
                 peak_rss_tracked=bool(base) and os.path.exists("/proc/self/clear_refs"),
                 peak_rss_above_baseline_bytes=peak_rss - base, weights_fp32_bytes=weights,
                 rss_over_weights=peak_rss / weights if weights else 0.0,
                 rss_above_baseline_over_weights=(peak_rss - base) / weights if weights else 0.0)
        for k in ("device", "export"):
            if raw.get(k):
                b[k] = raw[k]
        backends[name] = b
        print(f"bench | {name}: p50 {b['frame_ms']['p50']:.1f} ms/frame ({b['fps']:.2f} FPS), efficiency "
              f"{100 * b['efficiency']['total']:.1f} %, peak RSS {peak_rss / 2**30:.2f} GiB", file=sys.stderr)
    if s.profile and onnx_dir is not None and "ort-cpu" in backends and "skipped" not in backends["ort-cpu"]:
        release_memory()
        by_op = result["flops_info"].get("by_op", {})
        backends["ort-cpu"]["profile"] = profile_ort_cpu(s, onnx_dir, frames[:2], by_op, sg["peak_gflops"],
                                                         asset_dir(s) / "profiles")
    result["backends"] = backends
    result["comparison"] = compare_to_torch(backends)
    result["machine"] = machine.finish(result["machine"], cpu_before)
    result["targets"] = targets(backends)
    return result


def _typical_people(raw: dict) -> int:
    people = [r["people"] for r in raw["records"]]
    return int(round(float(np.median(people)))) if people else 0


def compare_to_torch(backends: Mapping[str, Any]) -> dict:
    """Every measured backend's p50 frame and stage times as a ratio of torch's (same run, frames, threads)."""
    ref = backends.get("torch")
    if not ref or "skipped" in ref:
        return {}
    out = {}
    for name, b in backends.items():
        if "skipped" in b:
            continue
        stages = {}
        for k in STAGES:
            r = ref["stages"][k]["p50"]
            stages[k] = b["stages"][k]["p50"] / r if r > 0 else None
        out[name] = {"frame_p50_ratio": b["frame_ms"]["p50"] / ref["frame_ms"]["p50"], "stages_p50_ratio": stages,
                     "speedup": ref["frame_ms"]["p50"] / b["frame_ms"]["p50"]}
    return out


def targets(backends: Mapping[str, Any]) -> dict:
    """The issue's targets for ort-cpu, each with the measured value and whether it is met."""
    ort, ref = backends.get("ort-cpu"), backends.get("torch")
    if not ort or "skipped" in ort:
        return {}
    out: dict[str, Any] = {}
    if ref and "skipped" not in ref:
        ratio = ort["frame_ms"]["p50"] / ref["frame_ms"]["p50"]
        out["p50_vs_torch_le_0.75"] = {"value": ratio, "met": ratio <= 0.75}
    eff = ort["efficiency"]["total"]
    out["efficiency_total_ge_0.75"] = {"value": eff, "met": eff >= 0.75}
    over = ort["overhead"]["outside_graphs_fraction_p50"]
    out["overhead_le_0.03"] = {"value": over, "met": over <= 0.03}
    # what loading and running the backend adds to the process (the bench process also holds torch's libraries,
    # which a `human3r-edge run` process does not); the absolute ratio is reported next to it
    rss = ort["rss_above_baseline_over_weights"]
    out["peak_rss_le_1.3x_weights"] = {"value": rss, "met": rss <= 1.3, "absolute": ort["rss_over_weights"]}
    return out


def main(args: argparse.Namespace) -> int:
    if getattr(args, "streams", None) is not None:  # `bench --streams N`: the multi-stream benchmark
        from human3r_edge.benchmarks.bench_streams import main as streams_main

        return streams_main(args)
    s = settings_from_args(args)
    if args.prepare_only:
        assets = load_assets(s) or prepare_assets(s)
        print(f"bench | assets ready in {assets.directory} (bias shift {assets.info['bias_shift']:+.3f})")
        return 0
    r = run_bench(s)
    out = args.json or default_json_path(s)
    j, md, png = write_results(r, out)
    parts = [f"{n} {v['frame_ms']['p50']:.0f} ms" for n, v in r["backends"].items() if "skipped" not in v]
    extra = ""
    if "ort-cpu" in r.get("comparison", {}):
        extra = f", ort-cpu/torch {r['comparison']['ort-cpu']['frame_p50_ratio']:.2f}x"
    print(f"bench | {s.config} {s.width}x{s.height}: " + ", ".join(parts) + extra + f" -> {j}, {md}"
          + (f", {png}" if png else ""))
    return 0
