"""Overhead of the GStreamer element: `human3r` in gst-launch against `human3r-edge run` on the same frames.

    python -m human3r_edge.benchmarks.gst_overhead --engines demo_out/export \
        --smplx-model demo_out/assets/SMPLX_NEUTRAL.npz --frames 240 --repeats 3

Both read the same PNG folder (the demo's synthetic video decoded once by `run`'s reader), on ort-cpu, with the
same outputs (`out=` / `--out`, scene included). `run` decodes in a reader thread; the pipeline is
`multifilesrc ! pngdec ! queue ! videoconvert ! human3r out=... ! fakesink`, where the queue gives decoding its
own thread too. FPS is each tool's summary.json `fps` (frames / seconds from the first frame to the end, outputs
finalised); wall is the whole process (interpreter, model loading, plugin scan). The two alternate, `--repeats`
times each, in one invocation, so machine load affects both alike; the median is reported. A benchmark, not a
test: nothing is asserted. Results: JSON + markdown under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from human3r_edge.benchmarks import machine


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", type=Path, required=True, help="export folder (ONNX)")
    p.add_argument("--smplx-model", type=Path, required=True)
    p.add_argument("--frames", type=int, default=240, help="frames of the synthetic demo video")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gst_overhead_ort-cpu.json"))


def _frames(folder: Path, n: int) -> int:
    import cv2

    from human3r_edge.runtime import video
    from human3r_edge.runtime.commands.demo import make_sample_video

    clip = make_sample_video(folder.parent / "clip.mp4", n)
    folder.mkdir()
    with video.open_source(str(clip)) as src:
        for f in src:
            if f.image is None:
                continue
            cv2.imwrite(str(folder / f"{f.index:06d}.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    return len(list(folder.glob("*.png")))


def _timed(cmd: list[str], env: dict[str, str], out: Path) -> dict:
    tic = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"gst_overhead | command failed: {' '.join(cmd)[:200]}: {(proc.stderr or proc.stdout)[-800:]}")
    s = json.loads((out / "summary.json").read_text())
    return {"fps": s["fps"], "frames": s["frames"], "seconds": s["seconds"], "wall_seconds": round(wall, 3),
            "stage_ms_mean": s["stage_ms_mean"]}


def main(args: argparse.Namespace) -> int:
    from human3r_edge.runtime.gst import environment

    env = {k: v for k, v in os.environ.items() if not k.startswith("GST_")}
    results: dict[str, list[dict]] = {"run": [], "gst": []}
    with tempfile.TemporaryDirectory(prefix="gst_overhead.") as tmp:
        d = Path(tmp)
        env.update(environment(env), GST_REGISTRY=str(d / "registry.bin"))
        subprocess.run(["gst-inspect-1.0", "human3r"], env=env, capture_output=True)  # plugin scan, not timed
        frames = d / "frames"
        n = _frames(frames, args.frames)
        for i in range(args.repeats):
            out = d / f"run{i}"
            results["run"].append(_timed([sys.executable, "-m", "human3r_edge", "run", str(frames), "--engines",
                                          str(args.engines), "--smplx-model", str(args.smplx_model), "--out", str(out),
                                          "--backend", "ort-cpu", "--no-progress"], env, out))
            out = d / f"gst{i}"
            pipeline = (f"multifilesrc location={frames}/%06d.png index=0 caps=image/png,framerate=30/1 ! pngdec ! "
                        f"queue ! videoconvert ! human3r engines={args.engines} smplx-model={args.smplx_model} "
                        f"backend=ort-cpu out={out} ! fakesink")
            results["gst"].append(_timed(["gst-launch-1.0", "-q", *pipeline.split()], env, out))
            print(f"repeat {i}: run {results['run'][-1]['fps']:.2f} FPS, element {results['gst'][-1]['fps']:.2f} FPS",
                  file=sys.stderr)
    med = {k: statistics.median(r["fps"] for r in v) for k, v in results.items()}
    wall = {k: statistics.median(r["wall_seconds"] for r in v) for k, v in results.items()}
    report = {
        "what": "human3r GStreamer element vs human3r-edge run, same PNG frames, ort-cpu, outputs on",
        "command": " ".join(["python -m human3r_edge.benchmarks.gst_overhead", "--engines", str(args.engines),
                             "--smplx-model", str(args.smplx_model), "--frames", str(args.frames), "--repeats",
                             str(args.repeats)]),
        "frames": n, "repeats": args.repeats, "fps_median": med, "wall_seconds_median": wall,
        "element_vs_run_fps": med["gst"] / med["run"] if med["run"] else None, "runs": results,
        "machine": {**machine.describe(), "load_average_end": [round(x, 2) for x in os.getloadavg()],
                    "gstreamer": subprocess.run(["gst-launch-1.0", "--version"], capture_output=True,
                                                text=True).stdout.splitlines()[1:2]},
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(_markdown(report))
    print(f"gst_overhead | element {med['gst']:.2f} FPS vs run {med['run']:.2f} FPS "
          f"({report['element_vs_run_fps']:.3f}x) over {n} frames -> {args.out}")
    return 0


def _markdown(r: dict) -> str:
    rows = "\n".join(f"| {i} | {a['fps']:.2f} | {b['fps']:.2f} | {a['wall_seconds']:.2f} | {b['wall_seconds']:.2f} |"
                     for i, (a, b) in enumerate(zip(r["runs"]["run"], r["runs"]["gst"])))
    m = r["machine"]
    return (f"# GStreamer element overhead: `human3r` vs `human3r-edge run` (ort-cpu)\n\n"
            f"Machine: {m['cpu']} ({m['cores']} cores, shared), {' '.join(m['gstreamer'])}, {r['date']}. "
            f"Command: `{r['command']}`\n\n"
            f"{r['frames']} frames (PNG folder, the demo's synthetic video), outputs on. FPS: frames / seconds from "
            "the first frame until the outputs are finalised (each tool's summary.json); wall: the whole process.\n\n"
            "| repeat | run FPS | element FPS | run wall s | element wall s |\n|---|---|---|---|---|\n"
            f"{rows}\n\nMedian: run {r['fps_median']['run']:.2f} FPS, element {r['fps_median']['gst']:.2f} FPS "
            f"(element / run = {r['element_vs_run_fps']:.3f}); wall {r['wall_seconds_median']['run']:.2f} s vs "
            f"{r['wall_seconds_median']['gst']:.2f} s. Load average at the end: {m['load_average_end']}.\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
