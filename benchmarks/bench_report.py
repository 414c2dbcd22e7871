"""`human3r-edge bench` results as files: the JSON, a markdown report and a PNG chart under benchmarks/results/."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.benchmarks.bench_settings import GPU_BACKENDS, GRAPH_STAGES, STAGES, BenchSettings
from human3r_edge.benchmarks.machine import QUIET_FOREIGN, QUIET_LOAD

RESULTS = Path(__file__).resolve().parent / "results"


def default_json_path(s: BenchSettings) -> Path:
    kind = "gpu" if any(b in GPU_BACKENDS for b in s.backends) else "cpu"
    return RESULTS / f"{s.config}_{s.width}x{s.height}_{kind}.json"


def markdown(r: Mapping[str, Any]) -> str:
    """The result as a markdown report (tables of p50 per stage, ratios, efficiency, memory, targets)."""
    m = r["machine"]
    b = {k: v for k, v in r["backends"].items() if "skipped" not in v}
    w, h = r["resolution"]
    lines = [f"# human3r-edge bench: {r['config']} at {w}x{h}", "",
             f"{r['date']} on {m['cpu']} ({m['cores']} cores, {m['threads']} threads, "
             f"{m.get('memory_bytes', 0) / 2**30:.0f} GiB); load average before {m['loadavg_before'][0]:.2f}, "
             f"after {m['loadavg_after'][0]:.2f} (the run's own threads included); other processes used "
             f"{100 * m.get('foreign_cpu_share', 0.0):.1f} % of the CPU during the run. Measured sgemm peak **{m['sgemm_peak_gflops']:.1f} GFLOP/s** "
             f"({m['sgemm']['peak_library']}, {m['sgemm']['size']}^3, best of {m['sgemm']['repeats']}). "
             f"{r['warmup']} warm-up + {r['frames']} timed frames per backend, synthetic "
             f"{r['source_frame_size'][0]}x{r['source_frame_size'][1]} frames, random weights "
             f"(detection bias shifted so {r['people_frame0']} people pass on frame 0).", "",
             f"Command: `{r['command']}`" + (f" (ONNX Runtime options {r['ort_options']})" if r.get("ort_options")
                                              else ""), ""]
    if not m.get("quiet", True):
        lines += [f"**WARNING: the machine was busy (1-minute load average {m['loadavg_before'][0]:.2f} before the "
                  f"run, limit {QUIET_LOAD}; other processes used {100 * m.get('foreign_cpu_share', 0.0):.1f} % of "
                  f"the CPU during it, limit {100 * QUIET_FOREIGN:.0f} %): these timings, the sgemm peak and the "
                  "efficiencies are not representative; re-run on a quiet machine.**", ""]
    if b:
        names = list(b)
        lines += ["| stage (p50 ms) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k in STAGES:
            lines.append(f"| {k} | " + " | ".join(f"{b[n]['stages'][k]['p50']:.1f}" for n in names) + " |")
        lines.append("| **frame p50** | " + " | ".join(f"**{b[n]['frame_ms']['p50']:.1f}**" for n in names) + " |")
        lines.append("| frame p90 / p99 | " + " | ".join(f"{b[n]['frame_ms']['p90']:.1f} / "
                                                         f"{b[n]['frame_ms']['p99']:.1f}" for n in names) + " |")
        lines.append("| FPS | " + " | ".join(f"{b[n]['fps']:.3f}" for n in names) + " |")
        lines.append("| GFLOP per frame (counted) | " + " | ".join(f"{b[n]['flops']['total'] / 1e9:.1f}"
                                                                  for n in names) + " |")
        lines.append("| efficiency total (graphs only) | " + " | ".join(
            f"{100 * b[n]['efficiency']['total']:.1f} % ({100 * b[n]['efficiency']['graphs']:.1f} %)"
            for n in names) + " |")
        for k in GRAPH_STAGES:
            lines.append(f"| efficiency {k} | " + " | ".join(f"{100 * b[n]['efficiency'][k]:.1f} %"
                                                            for n in names) + " |")
        lines.append("| time outside graphs | " + " | ".join(
            f"{100 * b[n]['overhead']['outside_graphs_fraction_p50']:.1f} %" for n in names) + " |")
        lines.append("| peak RSS (GiB): absolute / above pre-load baseline | " + " | ".join(
            f"{b[n]['peak_rss_bytes'] / 2**30:.2f} / {b[n]['peak_rss_above_baseline_bytes'] / 2**30:.2f}"
            for n in names) + " |")
        lines.append("| peak RSS during load (GiB) | " + " | ".join(f"{b[n]['load_peak_rss_bytes'] / 2**30:.2f}"
                                                                  for n in names) + " |")
        lines.append("| fp32 weights of executed graphs (GiB) | " + " | ".join(
            f"{b[n]['weights_fp32_bytes'] / 2**30:.2f}" for n in names) + " |")
        lines.append("| people per frame | " + " | ".join(
            ",".join(str(p) for p in b[n]["people_per_frame"]) for n in names) + " |")
        if r.get("comparison"):
            lines.append("| frame p50 vs torch | " + " | ".join(
                f"{r['comparison'][n]['frame_p50_ratio']:.3f}x" for n in names) + " |")
    for n, v in r["backends"].items():
        if "skipped" in v:
            lines.append(f"\n{n}: skipped: {v['skipped']}")
    if r.get("targets"):
        lines += ["", "| ort-cpu target | measured | met |", "|---|---|---|"]
        for k, t in r["targets"].items():
            lines.append(f"| {k} | {t['value']:.3f} | {'yes' if t['met'] else 'NO'} |")
    lines += ["", f"FLOPs (from {r['flops_info']['source']}): " + ", ".join(
        f"{k} {r['flops'][k] / 1e9:.1f} G" for k in GRAPH_STAGES) + f"; total {r['flops']['total'] / 1e9:.1f} GFLOP. "
        "Only MatMul/Gemm/Conv/ConvTranspose/attention are counted.", ""]
    for n in b:
        lines.append(f"- {n}: {b[n]['what']}; FLOPs: {b[n]['flops_source']}")
    prof = b.get("ort-cpu", {}).get("profile")
    if prof:
        lines += ["", "ort-cpu profile (ONNX Runtime profiler, last of 2 frames, kernel time per op category; "
                  "efficiency = counted FLOPs of the category / its kernel time / sgemm peak):", "",
                  "| graph | run ms | matmul ms (share, eff.) | conv ms (share, eff.) | other ms (share) | top ops |",
                  "|---|---|---|---|---|---|"]
        for g, p in prof.items():
            if not p:
                continue
            c = p["categories"]

            def cell(k: str) -> str:
                e = c[k]["efficiency"]
                return f"{c[k]['ms']:.0f} ({100 * c[k]['share']:.0f} %" + (f", {100 * e:.0f} %)" if e else ")")
            top = ", ".join(f"{k} {v:.0f}" for k, v in list(p["by_op_ms"].items())[:6])
            lines.append(f"| {g} | {p['run_ms']:.0f} | {cell('matmul')} | {cell('conv')} | {cell('other')} | {top} |")
    return "\n".join(lines) + "\n"


def chart(r: Mapping[str, Any], path: Path) -> Path | None:
    """Stacked bars of the p50 stage times per backend (PNG); None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    b = {k: v for k, v in r["backends"].items() if "skipped" not in v}
    if not b:
        return None
    names = list(b)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.6 * len(names)))
    left = np.zeros(len(names))
    cmap = plt.get_cmap("tab10")
    for i, k in enumerate(STAGES):
        vals = np.array([b[n]["stages"][k]["p50"] for n in names]) / 1e3
        ax.barh(names, vals, left=left, color=cmap(i % 10), label=k)
        left += vals
    ax.set_xlabel("seconds per frame (p50 per stage)")
    w, h = r["resolution"]
    ax.set_title(f"{r['config']} {w}x{h}, {r['machine']['threads']} threads, {r['machine']['cpu'][:40]}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(r: Mapping[str, Any], json_path: Path) -> tuple[Path, Path, Path | None]:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(r, indent=1))
    os.replace(tmp, json_path)
    md = json_path.with_suffix(".md")
    md.write_text(markdown(r))
    return json_path, md, chart(r, json_path.with_suffix(".png"))
