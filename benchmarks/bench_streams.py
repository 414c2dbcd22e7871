"""`human3r-edge bench --streams N`: N camera streams batched through one export vs N sequential single sessions.

    human3r-edge bench --streams 4 --config 672S --resolution 512x288 --frames 3 --warmup 1
    human3r-edge bench --streams 2 --config tiny --resolution 128x96 --frames 2 --warmup 1   (seconds: a smoke run)

A benchmark, never a test: on `ort-cpu`, with the same seeded RANDOM weights as `human3r-edge bench` (untrained;
the detection bias is shifted so `--people` people pass on frame 0), and for every B in 1, 2, 4, ... N:

* batched: one `MultiSession` over the `export --streams N` export runs B streams, one batch of B frames per step;
* sequential: B independent single-stream `Session`s (each its own backend over the `--streams 1` export, as
  before multi-stream support) stepped one after another, round-robin, in the same run;
* aggregate FPS = B x timed steps / their wall time (after `--warmup` untimed steps), per-step p50 latency;
* memory: each configuration runs in a FRESH child process (peak RSS = that process's VmHWM, so nothing leaks
  from one to the next): RSS after loading (weights + initial state), peak RSS, and the memory each added stream
  costs ((peak(B) - peak(1)) / (B - 1)), next to the per-stream state bytes from export.json and the fp32 weight
  bytes of the graphs; the issue's check "peak RSS of 4 streams < 1.5x that of 1 stream" is reported measured.
* a GPU PROJECTION (not a measurement) of how many 15 FPS streams fit an AGX Orin and an RTX 4090, from the
  per-frame projections in benchmarks/results/projection_512x288.json (see `project_streams`).

Results: benchmarks/results/bench_streams.json and .md (or --json PATH), with the machine and its load.
`--engines DIR` (a `--streams 1` lean export) and `--streams-engines DIR` (an `--streams >= N` export of the SAME
weights) skip the asset and export steps (a synthetic SMPL-X model is then written into the cache).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.benchmarks import machine
from human3r_edge.benchmarks.bench_settings import BenchSettings, settings_from_args
from human3r_edge.errors import Human3RError, msg

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_FPS = 15.0
_MARK = "BENCH_STREAMS_RESULT "


def batch_sizes(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    if n < 1:
        raise Human3RError(msg("--streams", "must be >= 1", n))
    out, b = [], 1
    while b <= n:
        out.append(b)
        b *= 2
    if out[-1] != n:
        out.append(n)
    return out


# ------------------------------------------------------------------------------------------------ exports
def multi_export_dir(s: BenchSettings, assets: Any, n: int) -> Path:
    return assets.directory / f"lean_k{s.max_people}_s{n}"


def ensure_multi_export(s: BenchSettings, assets: Any, n: int) -> Path:
    """The lean `--streams n` export of the cached checkpoint (`human3r-edge export`, in a child process)."""
    out = multi_export_dir(s, assets, n)
    stamp = out / "bench_source.json"
    want = {"checkpoint": str(assets.checkpoint), "bias_shift": assets.info.get("bias_shift"),
            "max_people": s.max_people, "streams": n}
    if (out / "export.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    cmd = [sys.executable, "-m", "human3r_edge", "export", "--checkpoint", str(assets.checkpoint), "--resolution",
           f"{s.width}x{s.height}", "--out", str(out), "--lean", "--max-people", str(s.max_people),
           "--streams", str(n), "--no-trt-check"]
    print(f"bench | exporting: {' '.join(cmd[2:])}", file=sys.stderr)
    res = subprocess.run(cmd)
    if res.returncode != 0 or not (out / "export.json").is_file():
        raise Human3RError(msg("bench --streams export", "failed", f"exit {res.returncode}", hint=" ".join(cmd)))
    stamp.write_text(json.dumps(want))
    return out


def export_facts(directory: Path) -> dict:
    """N, per-stream state bytes (one row of every state tensor) and the graphs' weight bytes of an export."""
    from human3r_edge.runtime.iospec import ExportSpec

    spec = ExportSpec.load(directory)
    n = int(getattr(spec, "streams", 1))
    state = 0
    for g in spec.graphs:
        for pair in g.state:
            t = g.input(pair.input)
            state += t.nbytes // (t.shape[0] if t.batched else 1)
    weights = sum(p.stat().st_size for p in Path(directory).iterdir()
                  if p.is_file() and (p.suffix in (".onnx", ".data", ".bin") or p.name.endswith(".onnx.data")))
    return {"streams": n, "state_bytes_per_stream": int(state), "model_file_bytes": int(weights),
            "resolution": list(spec.resolution), "max_people": spec.max_people, "config": spec.config.get("name")}


# ------------------------------------------------------------------------------------------------ workers
def worker(job: dict) -> dict:
    """One configuration in this (fresh) process: `mode` batched or sequential, `streams` B."""
    from human3r_edge.benchmarks.frames import synthetic_frames
    from human3r_edge.benchmarks.memory import peak_rss_bytes, rss_bytes
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.pipeline import PipelineOptions
    from human3r_edge.runtime.session import Session, SessionOptions, streaming_backend_options
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    b, mode = int(job["streams"]), job["mode"]
    w0, h0 = job["source_size"]
    steps = int(job["warmup"]) + int(job["frames"])
    frames = [synthetic_frames(w0, h0, steps, int(job["seed"]) + k) for k in range(b)]  # a different video each
    rss0 = rss_bytes()
    opts = streaming_backend_options("ort-cpu", {"intra_op_threads": int(job["threads"]), **job["ort_options"]})
    smplx = SMPLXModel.load(job["smplx"])
    sess_opts = SessionOptions(pipeline=PipelineOptions(ttt3r=True), dense=True)
    tic = time.perf_counter()
    closers: list[Any] = []
    if mode == "batched":
        from human3r_edge.runtime.multistream import MultiSession

        ms = MultiSession.open(job["export"], backend="ort-cpu", streams=b, smplx_model=smplx, options=sess_opts,
                               **opts)
        ms.start()
        closers.append(ms.shutdown)

        def step(t: int) -> int:
            out = ms.step({k: frames[k][t] for k in range(b)})
            return sum(len(r.people) for r in out.values())
    elif mode == "sequential":
        sessions = []
        for _ in range(b):
            s = Session(open_backend("ort-cpu", job["export"], **opts), smplx, sess_opts)
            s.start()
            sessions.append(s)
            closers.append(s.close)

        def step(t: int) -> int:
            return sum(len(s.step(frames[k][t]).people) for k, s in enumerate(sessions))
    else:
        raise Human3RError(msg("bench worker", "unknown mode", mode, "batched or sequential"))
    load_s = time.perf_counter() - tic
    rss_loaded = rss_bytes()
    step_ms, people = [], []
    try:
        for t in range(steps):
            t0 = time.perf_counter()
            people.append(step(t))
            step_ms.append((time.perf_counter() - t0) * 1e3)
    finally:
        for close in closers:
            close()
    timed = step_ms[int(job["warmup"]):]
    total_s = sum(timed) / 1e3
    return {"mode": mode, "streams": b, "load_s": load_s, "rss_start_bytes": rss0, "rss_loaded_bytes": rss_loaded,
            "peak_rss_bytes": peak_rss_bytes(), "step_ms": step_ms, "timed_steps": len(timed),
            "step_ms_p50": float(np.median(timed)) if timed else None,
            "aggregate_fps": b * len(timed) / total_s if total_s > 0 else 0.0,
            "per_stream_fps": len(timed) / total_s if total_s > 0 else 0.0, "people_per_step": people}


def run_worker(job: dict, nice: int = 0) -> dict:
    """`worker(job)` in a fresh child process (so its peak RSS is its own)."""
    cmd = [sys.executable, "-m", "human3r_edge.benchmarks.bench_streams", "--worker", json.dumps(job)]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        tail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        return {"mode": job["mode"], "streams": job["streams"], "error": f"exit {proc.returncode}: {tail[-1500:]}"}
    out = json.loads(lines[-1][len(_MARK):])
    out["process_wall_s"] = time.perf_counter() - tic
    return out


# ------------------------------------------------------------------------------------------------ projection
def project_streams(projection: dict | None, config: str, facts: dict) -> dict:
    """PROJECTION: 15 FPS streams per GPU for `config`, from benchmarks/results/projection_<WxH>.json.

    Batched, B streams cost B x the per-frame compute (FLOPs grow linearly with B) while the weights are read
    once per batch, so with t_c = the per-frame compute time (realistic band: counted FLOPs / (0.6 .. 0.4 x the
    dense FP16 peak)) and t_w = FP16 weight bytes / memory bandwidth:
        batch time(B) = max(B x t_c, t_w)  ->  streams at 15 FPS: B_max = floor((1000 / 15) / t_c)
    capped by memory: weights once + B x (state + activations) <= device memory. Host work, preprocessing and
    skinning are assumed to overlap the GPU (their own kernels are sub-millisecond, see gpu_kernels_*.md)."""
    out: dict[str, Any] = {"label": "PROJECTION, not a measurement", "target_fps": TARGET_FPS,
                           "formula": "B_max = floor((1000 / target_fps) / t_frame_ms), t_frame_ms = GFLOP per "
                                      "frame / (efficiency x dense FP16 TFLOPS); memory: FP16 weights + B x "
                                      "(state + activations) <= device memory", "devices": {}}
    if not projection:
        out["skipped"] = "no benchmarks/results/projection_*.json for this resolution"
        return out
    rows = [r for r in projection.get("rows", []) if r.get("variant") == config]
    if not rows:
        out["skipped"] = f"no projection rows for config {config}"
        return out
    budget_ms = 1e3 / TARGET_FPS
    for r in rows:
        dev = r["device"]
        if not any(k in dev for k in ("AGX Orin", "RTX 4090")):
            continue
        lo_ms, hi_ms = r["realistic_ms"]  # 60 % and 40 % of the peak
        floor_ms = r["compute_floor_ms"]
        per_stream_gb = (r["state_bytes"] + r["activation_bytes"]) / 1e9
        mem_cap = int((r["device_memory_gb"] - r["weights_fp16_bytes"] / 1e9) // per_stream_gb) if per_stream_gb else 0
        out["devices"][dev] = {
            "inputs": {"gflop_per_frame": r["gflop"], "compute_floor_ms": floor_ms, "realistic_ms_60_40": [lo_ms, hi_ms],
                       "bandwidth_floor_ms": r["bandwidth_floor_ms"], "fp16_weights_gb": r["weights_fp16_bytes"] / 1e9,
                       "per_stream_state_plus_activations_gb": per_stream_gb, "device_memory_gb": r["device_memory_gb"]},
            "streams_at_15fps_realistic": [int(budget_ms // lo_ms), int(budget_ms // hi_ms)],
            "streams_at_15fps_compute_floor": int(budget_ms // floor_ms),
            "streams_memory_cap": mem_cap,
        }
    return out


def _projection_rows(res: tuple[int, int]) -> dict | None:
    """The projection JSON for this resolution (benchmarks/results/projection_WxH.json), rows with device memory."""
    p = RESULTS / f"projection_{res[0]}x{res[1]}.json"
    if not p.is_file():
        return None
    data = json.loads(p.read_text())
    mem = {d["name"]: d["memory_gb"] for d in data.get("devices", [])}
    rows = [{**r, "device_memory_gb": mem.get(r["device"], 0.0), "weights_fp16_bytes": r.get("fp16_weight_bytes", 0)}
            for r in data.get("rows", [])]
    return {"source": f"benchmarks/results/{p.name}", "rows": rows, "date": data.get("date")}


# ------------------------------------------------------------------------------------------------ main
def _mem_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_streams_bench(args: argparse.Namespace) -> dict:
    s = settings_from_args(args)
    n = int(args.streams)
    sizes = batch_sizes(n)
    cpu_before = machine.cpu_snapshot()
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "what": "human3r-edge bench --streams: aggregate FPS and memory of B streams batched through one export "
                "vs B sequential single-stream sessions, ort-cpu, RANDOM (untrained, seeded) weights",
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "config": s.config,
        "resolution": [s.width, s.height], "streams": n, "batch_sizes": sizes, "frames": s.frames,
        "warmup": s.warmup, "threads": s.threads, "max_people": s.max_people, "seed": s.seed, "backend": "ort-cpu",
        "machine": machine.describe(s.threads), "versions": machine.versions(),
        "command": "human3r-edge bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
    }
    if s.engines is not None:
        single = s.engines
        multi = Path(args.streams_engines) if args.streams_engines else None
        if multi is None:
            raise Human3RError(msg("bench --streams --engines", "needs --streams-engines DIR too", None,
                                   "an `export --streams N` export of the same weights"))
        from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx

        smplx = s.cache / "streams_smplx" / "SMPLX_NEUTRAL.npz"
        if not smplx.is_file():
            smplx.parent.mkdir(parents=True, exist_ok=True)
            write_synthetic_smplx(smplx)
        result["weights"] = {"note": "the exports passed with --engines / --streams-engines"}
    else:
        from human3r_edge.benchmarks.bench_assets import ensure_assets, ensure_export

        assets = ensure_assets(s)
        single = ensure_export(s, assets)
        multi = Path(args.streams_engines) if args.streams_engines else ensure_multi_export(s, assets, n)
        smplx = assets.smplx_model
        result["weights"] = {"checkpoint": str(assets.checkpoint), **assets.info}
    facts_single, facts_multi = export_facts(single), export_facts(multi)
    if facts_multi["streams"] < n:
        raise Human3RError(msg(f"--streams-engines {multi}", "batches fewer streams than --streams",
                               facts_multi["streams"], f">= {n}"))
    result["exports"] = {"single": {"dir": str(single), **facts_single}, "batched": {"dir": str(multi), **facts_multi}}
    base = {"source_size": list(s.source_size), "warmup": s.warmup, "frames": s.frames, "seed": s.seed,
            "threads": s.threads, "ort_options": dict(s.ort_options), "smplx": str(smplx)}
    runs: list[dict] = []
    weights = facts_single["model_file_bytes"]
    peak1: dict[str, int] = {}  # measured peak RSS of B = 1 per mode: what the next configurations will need
    for b in sizes:
        for mode, export in (("batched", multi), ("sequential", single)):
            one = peak1.get(mode, int(weights * 1.4))
            need = (b * one if mode == "sequential" else one * (1 + 0.25 * (b - 1))) + 1.5 * 2**30
            avail = _mem_available()
            if avail and need > avail:
                r: dict[str, Any] = {"mode": mode, "streams": b, "skipped": f"not enough memory: ~{need / 2**30:.1f} GiB needed, "
                                                             f"{avail / 2**30:.1f} GiB available"}
            else:
                print(f"bench --streams | {mode} B={b} ...", file=sys.stderr)
                r = run_worker({**base, "mode": mode, "streams": b, "export": str(export)})
            runs.append(r)
            if b == 1 and "peak_rss_bytes" in r:
                peak1[mode] = int(r["peak_rss_bytes"])
            if "aggregate_fps" in r:
                print(f"bench --streams | {mode} B={b}: {r['aggregate_fps']:.3f} FPS aggregate, peak RSS "
                      f"{r['peak_rss_bytes'] / 2**30:.2f} GiB", file=sys.stderr)
            else:
                print(f"bench --streams | {mode} B={b}: {r.get('error') or r.get('skipped')}", file=sys.stderr)
    result["runs"] = runs
    result["comparison"] = compare(runs, facts_multi, weights)
    result["projection"] = project_streams(_projection_rows((s.width, s.height)), s.config, facts_multi)
    proj_src = _projection_rows((s.width, s.height))
    if proj_src is not None:
        result["projection"]["source"] = proj_src["source"]
    result["machine"] = machine.finish(result["machine"], cpu_before)
    result["wall_s"] = time.perf_counter() - t_start
    return result


def compare(runs: list[dict], facts: dict, weights: int) -> dict:
    ok = {(r["mode"], r["streams"]): r for r in runs if "aggregate_fps" in r}
    rows = []
    for (mode, b), r in sorted(ok.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if mode != "batched":
            continue
        seq = ok.get(("sequential", b))
        rows.append({"streams": b, "batched_fps": r["aggregate_fps"],
                     "sequential_fps": seq["aggregate_fps"] if seq else None,
                     "speedup": r["aggregate_fps"] / seq["aggregate_fps"] if seq and seq["aggregate_fps"] else None,
                     "batched_peak_rss_bytes": r["peak_rss_bytes"],
                     "sequential_peak_rss_bytes": seq["peak_rss_bytes"] if seq else None})
    out: dict[str, Any] = {"rows": rows}
    b1 = ok.get(("batched", 1))
    if b1:
        per = []
        for (mode, b), r in ok.items():
            if mode == "batched" and b > 1:
                per.append({"streams": b, "added_peak_rss_per_stream_bytes": (r["peak_rss_bytes"] - b1["peak_rss_bytes"])
                            / (b - 1), "added_loaded_rss_per_stream_bytes": (r["rss_loaded_bytes"]
                                                                             - b1["rss_loaded_bytes"]) / (b - 1)})
        out["memory_per_added_stream"] = sorted(per, key=lambda x: x["streams"])
        out["weights_model_file_bytes"] = weights
        out["state_bytes_per_stream"] = facts["state_bytes_per_stream"]
        out["batched_1_loaded_rss_bytes"] = b1["rss_loaded_bytes"]
        out["batched_1_peak_rss_bytes"] = b1["peak_rss_bytes"]
    one = ok.get(("sequential", 1))
    four = ok.get(("batched", 4))
    if one and four:
        ratio = four["peak_rss_bytes"] / one["peak_rss_bytes"]
        out["peak_rss_4_streams_over_1_stream"] = {
            "value": ratio, "met_lt_1.5": ratio < 1.5, "four": "batched, 4 streams, --streams N export",
            "one": "one single-stream Session, --streams 1 export (what one stream costs without batching)"}
        if b1:
            out["peak_rss_4_streams_over_batched_1"] = four["peak_rss_bytes"] / b1["peak_rss_bytes"]
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    w, h = r["resolution"]
    gib = 2 ** 30
    lines = [f"# human3r-edge bench --streams {r['streams']}: {r['config']} at {w}x{h}, ort-cpu", "",
             f"{r['date']} on {m['cpu']} ({m['cores']} cores, {r['threads']} threads, "
             f"{m.get('memory_bytes', 0) / gib:.0f} GiB); load average before {m['loadavg_before'][0]:.2f}, after "
             f"{m['loadavg_after'][0]:.2f}; other processes used {100 * m.get('foreign_cpu_share', 0.0):.1f} % of "
             f"the CPU during the run{'' if m.get('quiet') else ' (**the machine was busy: noisy figures**)'}. "
             f"**Random (untrained, seeded) weights**; synthetic frames, a different video per stream; "
             f"{r['warmup']} warm-up + {r['frames']} timed steps per configuration, each configuration in a fresh "
             f"child process. Total wall time {r.get('wall_s', 0):.0f} s.", "",
             f"Command: `{r['command']}`", ""]
    if not m.get("quiet"):
        lines += [f"**WARNING: other processes used {100 * m.get('foreign_cpu_share', 0.0):.0f} % of the CPU during "
                  "this run, and not evenly over time: the FPS figures below measure that contention as much as the "
                  "runtime (compare batched with sequential only with care; the memory figures are not affected). "
                  "Rerun on a quiet machine for speed.**", ""]
    lines += ["| streams B | batched aggregate FPS | sequential aggregate FPS | batched / sequential | batched peak RSS "
             "GiB | sequential peak RSS GiB |", "|---|---|---|---|---|---|"]
    for row in r["comparison"]["rows"]:
        seq, sp, srss = row["sequential_fps"], row["speedup"], row["sequential_peak_rss_bytes"]
        seq_s = "-" if seq is None else f"{seq:.4f}"
        sp_s = "-" if sp is None else f"{sp:.3f}x"
        srss_s = "-" if srss is None else f"{srss / gib:.2f}"
        lines.append(f"| {row['streams']} | {row['batched_fps']:.4f} | {seq_s} | {sp_s} | "
                     f"{row['batched_peak_rss_bytes'] / gib:.2f} | {srss_s} |")
    lines.append("")
    lines.append("Per-step wall times (s), warm-up first: " + "; ".join(
        f"{x['mode']} B={x['streams']}: " + ", ".join(f"{v / 1e3:.1f}" for v in x["step_ms"])
        for x in r["runs"] if "step_ms" in x) + ".")
    skipped = [x for x in r["runs"] if "aggregate_fps" not in x]
    for x in skipped:
        lines.append(f"\n- {x['mode']} B={x['streams']}: not measured ({x.get('skipped') or x.get('error')})")
    c = r["comparison"]
    lines += ["", "## Memory", ""]
    if "memory_per_added_stream" in c:
        lines.append(f"- weights (model files): {c['weights_model_file_bytes'] / gib:.2f} GiB; batched B=1 RSS after "
                     f"loading {c['batched_1_loaded_rss_bytes'] / gib:.2f} GiB, peak {c['batched_1_peak_rss_bytes'] / gib:.2f} GiB")
        lines.append(f"- recurrent state per stream (export.json): {c['state_bytes_per_stream'] / 2**20:.2f} MiB")
        for x in c["memory_per_added_stream"]:
            lines.append(f"- B={x['streams']}: each added stream adds {x['added_peak_rss_per_stream_bytes'] / 2**20:.0f} MiB "
                         f"of peak RSS ({x['added_loaded_rss_per_stream_bytes'] / 2**20:.0f} MiB after loading): state "
                         "and activations, not weights (the weights are loaded once)")
    if "peak_rss_4_streams_over_1_stream" in c:
        q = c["peak_rss_4_streams_over_1_stream"]
        lines.append(f"- **peak RSS of 4 batched streams / 1 stream (single session): {q['value']:.3f}x** "
                     f"(issue: < 1.5x: {'met' if q['met_lt_1.5'] else 'NOT met'}); vs batched B=1: "
                     f"{c.get('peak_rss_4_streams_over_batched_1', float('nan')):.3f}x")
    p = r["projection"]
    lines += ["", "## GPU PROJECTION (not a measurement)", "", p["label"] + ". " + p["formula"] + ".", ""]
    if p.get("skipped"):
        lines.append(f"Not projected: {p['skipped']}.")
    else:
        lines += [f"Inputs from `{p.get('source')}` (per-frame FLOPs of the lean export, device peaks of "
                  "docs/deployment.md section 5, realistic TensorRT FP16 efficiency 40-60 %).", "",
                  "| device | realistic ms/frame (60-40 %) | 15 FPS streams (realistic) | at the compute floor | "
                  "memory cap (streams) |", "|---|---|---|---|---|"]
        for dev, d in p["devices"].items():
            lo, hi = d["inputs"]["realistic_ms_60_40"]
            a, b = d["streams_at_15fps_realistic"]
            lines.append(f"| {dev} | {lo:.1f}-{hi:.1f} | {b}-{a} | {d['streams_at_15fps_compute_floor']} | "
                         f"{d['streams_memory_cap']} |")
    return "\n".join(lines) + "\n"


def write(r: dict, path: Path) -> tuple[Path, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=1))
    md = path.with_suffix(".md")
    md.write_text(markdown(r))
    return path, md


def main(args: argparse.Namespace) -> int:
    r = run_streams_bench(args)
    j, md = write(r, Path(args.json) if args.json else RESULTS / "bench_streams.json")
    parts = [f"B={x['streams']} {x['batched_fps']:.3f} vs {x['sequential_fps'] or 0:.3f} FPS"
             for x in r["comparison"]["rows"]]
    print(f"bench --streams | {r['config']} {r['resolution'][0]}x{r['resolution'][1]}: " + ", ".join(parts)
          + f" -> {j}, {md}")
    return 0


def _worker_main(argv: list[str]) -> int:
    job = json.loads(argv[argv.index("--worker") + 1])
    out = worker(job)
    sys.stdout.write(_MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


_ = (math, os)

if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv))
