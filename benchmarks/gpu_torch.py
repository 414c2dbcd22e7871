"""The PyTorch reference on a GPU, per stage: ms and peak allocated memory, fp32 and fp16 autocast (gpu_check.sh).

    python -m human3r_edge.benchmarks.gpu_torch [--configs 672S,896L] [--resolution 512x288]
                                                [--precisions fp32,fp16] [--frames 5] [--warmup 2] [--out DIR]
                                                [--device cuda|cpu]

Each config is the seeded random-weight model (timing does not depend on training; detection is not calibrated,
so the number of people is reported with each frame). Every model stage (encode_image, detect, decode, ...) is
timed with CUDA events after a warm-up, and `torch.cuda.max_memory_allocated` is read per stage (peak reset
before it). The table puts the paper's figure (Human3R: 15 FPS in 8 GB, RTX 4090 per the deployment notes) and
our projection for an RTX 4090 (benchmarks/results/projection_512x288.json) beside the measured rows.
`--device cpu` (with the tiny config) is the dry run tested on machines without a GPU: same code, no CUDA figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

PAPER = {"fps": 15.0, "memory_gb": 8.0, "gpu": "RTX 4090", "source": "Human3R abstract: 15 FPS, 8 GB (the abstract "
         "names neither GPU nor resolution; issue 13 gives the RTX 4090)"}
STAGES = ("encode_image", "encode_human", "detect", "human_mask", "gather_humans", "fuse_humans", "pose_query",
          "decode", "update_mem", "heads", "next_state", "smpl_heads")
PROJECTION = Path(__file__).resolve().parent / "results" / "projection_512x288.json"


def _projection_4090() -> dict[str, Any]:
    try:
        rows = json.loads(PROJECTION.read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return {}
    return {r["variant"]: r for r in rows if r.get("device") == "RTX 4090"}


def bench_config(name: str, width: int, height: int, precision: str, frames: int, warmup: int,
                 device: str) -> dict[str, Any]:
    """One config at one precision: per-stage mean ms and peak MB, frame ms, people per frame."""
    import contextlib

    import numpy as np
    import torch

    from human3r_edge.export.assets import random_model
    from human3r_edge.export.reference import ReferenceStreamer, StreamSettings
    from human3r_edge.runtime import preprocess as pp
    from human3r_edge.runtime.config import get_config

    cuda = device.startswith("cuda")
    cfg = get_config(name)
    model, _ = random_model(cfg, seed=0, calibrate=False)
    model = model.to(device).eval()
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    peaks: dict[str, int] = {s: 0 for s in STAGES}

    def wrap(stage: str, fn: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn(*a, **k)
                end.record()
                torch.cuda.synchronize()
                times[stage].append(start.elapsed_time(end))
                peaks[stage] = max(peaks[stage], int(torch.cuda.max_memory_allocated()))
                return out
            t0 = time.perf_counter()
            out = fn(*a, **k)
            times[stage].append((time.perf_counter() - t0) * 1e3)
            return out
        return run

    for stage in STAGES:
        if hasattr(model, stage):
            setattr(model, stage, wrap(stage, getattr(model, stage)))
    streamer = ReferenceStreamer(model, StreamSettings(use_ttt3r=True, reset_interval=10 ** 9))
    rng = np.random.default_rng(0)
    R = model.cfg.mhmr_img_res
    frame_ms, people = [], []
    amp = torch.autocast("cuda", dtype=torch.float16) if (cuda and precision == "fp16") else contextlib.nullcontext()
    with torch.inference_mode(), amp:
        for i in range(warmup + frames):
            if i == warmup:
                for v in times.values():
                    v.clear()
            frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            img = pp.preprocess_rgb(frame, max(width, height))
            mhmr, _ = pp.pad_image(img, R)
            x, xm = (torch.from_numpy(a)[None].to(device) for a in (img, mhmr))
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = streamer.step(x, xm)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                frame_ms.append((time.perf_counter() - t0) * 1e3)
                people.append(int(out["n_humans"]))
    stages = {s: {"ms": float(np.mean(v)), "peak_mb": peaks[s] / 2 ** 20 if cuda else None}
              for s, v in times.items() if v}
    del streamer, model
    if cuda:
        torch.cuda.empty_cache()
    mean = float(np.mean(frame_ms))
    return {"config": name, "precision": precision, "device": device, "frames": frames, "frame_ms": mean,
            "fps": 1e3 / mean if mean > 0 else 0.0, "people": people, "stages": stages,
            "peak_mb": max((s["peak_mb"] or 0.0) for s in stages.values()) if cuda else None}


def markdown(r: dict[str, Any]) -> str:
    proj = r.get("projection_rtx4090", {})
    lines = [f"# PyTorch reference on {r['gpu']} ({r['resolution']}, random weights)", "",
             f"Measured: {r['date']}; `{r['command']}`. Paper: {PAPER['fps']} FPS in {PAPER['memory_gb']} GB on "
             f"an {PAPER['gpu']} ({PAPER['source']}). Projection: our FP16 TensorRT estimate for an RTX 4090 "
             "(benchmarks/results/projection_512x288.md; a projection, not a measurement).", "",
             "| config | precision | ms/frame | FPS | peak MB | paper FPS (4090) | projected FPS (4090, TRT FP16) |",
             "|---|---|---|---|---|---|---|"]
    for row in r["results"]:
        if "error" in row:
            lines.append(f"| {row['config']} | {row['precision']} | error: {row['error'][:80]} | | | | |")
            continue
        p = proj.get(row["config"], {})
        pf = p.get("realistic_fps")
        lines.append(f"| {row['config']} | {row['precision']} | {row['frame_ms']:.1f} | {row['fps']:.2f} | "
                     f"{row['peak_mb'] or 0:.0f} | {PAPER['fps']:.0f} | "
                     + (f"{pf[0]:.0f}-{pf[1]:.0f}" if pf else "n/a") + " |")
    lines += ["", "Per stage (mean ms / peak allocated MB):", ""]
    for row in r["results"]:
        if "stages" in row:
            parts = ", ".join(f"{k} {v['ms']:.2f} ms" + (f" / {v['peak_mb']:.0f} MB" if v["peak_mb"] else "")
                              for k, v in row["stages"].items())
            lines.append(f"* {row['config']} {row['precision']}: {parts}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m human3r_edge.benchmarks.gpu_torch", description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="672S,896L")
    ap.add_argument("--resolution", default="512x288")
    ap.add_argument("--precisions", default="fp32,fp16")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_torch | torch is not installed: pip install 'human3r-edge[export]'", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_torch | no CUDA device visible to torch (use --device cpu for the dry run)", file=sys.stderr)
        return 3
    w, h = (int(v) for v in args.resolution.lower().split("x"))
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU (dry run)"
    results, status = [], 0
    for name in [c for c in args.configs.split(",") if c]:
        for prec in [p for p in args.precisions.split(",") if p]:
            try:
                row = bench_config(name, w, h, prec, args.frames, args.warmup, args.device)
            except Exception as exc:  # noqa: BLE001  one config failing must not lose the others' figures
                row, status = {"config": name, "precision": prec, "error": repr(exc)[:500]}, 1
            results.append(row)
            print(f"gpu_torch | {name} {prec}: " + (f"{row['frame_ms']:.1f} ms/frame, peak {row['peak_mb']} MB"
                                                     if "error" not in row else row["error"]), flush=True)
    r = {"gpu": gpu, "resolution": f"{w}x{h}", "date": time.strftime("%Y-%m-%d"), "paper": PAPER,
         "command": "python -m human3r_edge.benchmarks.gpu_torch " + " ".join(argv if argv is not None
                                                                            else sys.argv[1:]),
         "projection_rtx4090": _projection_4090(), "results": results}
    slug = gpu.lower().replace(" ", "-").replace("(", "").replace(")", "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"gpu_torch_{slug}.json").write_text(json.dumps(r, indent=1))
    (args.out / f"gpu_torch_{slug}.md").write_text(markdown(r))
    print(f"gpu_torch | -> {args.out / f'gpu_torch_{slug}.md'}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
