"""Soak test of the streaming runtime: many frames through one Session, watching memory, state and latency.

    python -m human3r_edge.benchmarks.soak --engines EXPORT_DIR --backend ort-cpu --frames 10000

Frames are a ring of synthetic frames (no decoder in the loop) at 2.5x the export resolution, preprocessed every
frame like real input; TTT3R on, reset every 100 frames (the reference demo's settings), SMPL-X skinning on. Every
`--check-every` frames it records the resident set size (from /proc), checks the recurrent state and the outputs
are finite, and the tracker's memory size. Results: JSON + markdown under benchmarks/results/.

Pass criteria reported (not asserted): RSS drift after warm-up < 2 %, state finite throughout, per-frame latency
stable (median of the last window within 15 % of the first window after warm-up). Wall-clock latency also moves
with other processes' load on the machine, so the process CPU time per frame (all threads) is reported too, and
the latency floor: the best window median of the second half of the run against that of the first half (other
load only ever adds time, so a growing floor means the runtime itself slows down).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from human3r_edge.benchmarks import machine
from human3r_edge.benchmarks.frames import synthetic_frames
from human3r_edge.benchmarks.memory import rss_bytes

RESULTS = Path(__file__).resolve().parent / "results"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engines", type=Path, required=True, help="export directory")
    p.add_argument("--backend", default="ort-cpu")
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=500, help="frames before the RSS baseline")
    p.add_argument("--window", type=int, default=500, help="frames per latency window")
    p.add_argument("--check-every", type=int, default=50)
    p.add_argument("--reset-interval", type=int, default=100)
    p.add_argument("--max-remembered", type=int, default=256, help="tracker memory bound (0: unbounded)")
    p.add_argument("--smplx-model", type=Path, default=None, help="default: a synthetic model in a temp dir")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/...)")
    p.add_argument("--no-progress", action="store_true")


def soak(args: argparse.Namespace) -> dict:
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.pipeline import PipelineOptions
    from human3r_edge.runtime.session import Session, SessionOptions
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    smplx_path = args.smplx_model
    tmpdir = None
    if smplx_path is None:
        from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx

        tmpdir = tempfile.TemporaryDirectory()
        smplx_path = write_synthetic_smplx(Path(tmpdir.name) / "SMPLX_NEUTRAL.npz")
    from human3r_edge.runtime.session import streaming_backend_options

    opts = {"intra_op_threads": args.threads} if args.threads and args.backend.startswith("ort") else {}
    backend = open_backend(args.backend, args.engines, **streaming_backend_options(args.backend, opts))
    w, h = backend.spec.resolution
    frames = synthetic_frames(int(w * 2.5), int(h * 2.5), 32)
    state_names = [p.input for g in backend.spec.graphs for p in g.state]
    lat = np.zeros(args.frames, np.float64)
    cpu = np.zeros(args.frames, np.float64)
    checks: list[dict] = []
    finite = True
    people = 0
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=args.frames, unit="frame", file=sys.stderr)
    session = Session(backend, SMPLXModel.load(smplx_path),
                      SessionOptions(pipeline=PipelineOptions(ttt3r=True, reset_interval=args.reset_interval,
                                     max_remembered=args.max_remembered or None)))
    host, cpu_before = machine.describe(args.threads), machine.cpu_snapshot()
    t0 = time.perf_counter()
    with session:
        for i in range(args.frames):
            tic, ctic = time.perf_counter(), time.process_time()
            r = session.step(frames[i % len(frames)])
            lat[i] = (time.perf_counter() - tic) * 1e3
            cpu[i] = (time.process_time() - ctic) * 1e3
            people += len(r.people)
            ok = bool(np.all(np.isfinite(r.c2w)))
            for p in r.people:
                ok &= p.vertices_world is not None and bool(np.all(np.isfinite(p.vertices_world)))
            if i % args.check_every == 0 or i == args.frames - 1:
                st = {n: backend.read_state(n) for n in state_names}
                st_ok = all(bool(np.all(np.isfinite(v))) for v in st.values())
                tracker = session.pipeline.tracker if session.pipeline else None
                checks.append({"frame": i, "rss_mb": rss_bytes() / 2**20, "state_finite": st_ok,
                               "state_absmax": {n: float(np.max(np.abs(v))) for n, v in st.items()},
                               "tracker_remembered": 0 if tracker is None or tracker.tokens is None
                               else int(tracker.tokens.shape[0]),
                               "track_ids": 0 if tracker is None else int(tracker.next_id)})
                ok &= st_ok
            finite &= ok
            if bar is not None:
                bar.update(1)
                if i % 20 == 0:
                    bar.set_postfix_str(f"{lat[max(0, i - 99):i + 1].mean():.1f} ms, "
                                        f"RSS {rss_bytes() / 2**20:.0f} MB")
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    if tmpdir is not None:
        tmpdir.cleanup()
    return _report(args, backend, lat, cpu, checks, finite, people, wall, machine.finish(host, cpu_before))


def _report(args: argparse.Namespace, backend, lat: np.ndarray, cpu: np.ndarray, checks: list[dict], finite: bool,
            people: int, wall: float, host: dict) -> dict:
    n = lat.shape[0]
    warm = min(args.warmup, max(n - 1, 0))
    base = next((c for c in checks if c["frame"] >= warm), checks[-1])
    end = checks[-1]
    drift = (end["rss_mb"] - base["rss_mb"]) / base["rss_mb"] * 100 if base["rss_mb"] else float("nan")
    windows = []
    for s in range(warm, n, args.window):
        seg = lat[s:s + args.window]
        cseg = cpu[s:s + args.window]
        if seg.size:
            windows.append({"start": s, "frames": int(seg.size), "p50_ms": float(np.median(seg)),
                            "p95_ms": float(np.percentile(seg, 95)), "mean_ms": float(seg.mean()),
                            "cpu_p50_ms": float(np.median(cseg))})
    stable = (abs(windows[-1]["p50_ms"] / windows[0]["p50_ms"] - 1) * 100) if windows else float("nan")
    cpu_stable = (abs(windows[-1]["cpu_p50_ms"] / windows[0]["cpu_p50_ms"] - 1) * 100) if windows else float("nan")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    floor = latency_floor_drift(windows)
    spec = backend.spec
    return {
        "what": "soak: one Session streaming synthetic frames (preprocess + models + host logic + SMPL-X)",
        "config": spec.config.get("name"), "resolution": list(spec.resolution), "max_people": spec.max_people,
        "backend": args.backend, "frames": n, "warmup_frames": warm, "wall_s": wall, "fps": n / wall,
        "settings": {"ttt3r": True, "reset_interval": args.reset_interval, "threads": args.threads,
                     "max_remembered": args.max_remembered or None},
        "rss_mb": {"after_warmup": base["rss_mb"], "end": end["rss_mb"],
                   "peak": max(c["rss_mb"] for c in checks), "drift_percent": drift},
        "state_finite": finite, "people_total": people,
        "tracker": {"remembered_end": end["tracker_remembered"], "ids_end": end["track_ids"]},
        "latency_windows": windows, "latency_drift_percent": stable, "cpu_time_drift_percent": cpu_stable,
        "load_average_at_end": list(load), "latency_floor_drift_percent": floor,
        "pass": {"rss_drift_lt_2pct": bool(drift < 2.0), "state_finite": finite,
                 "latency_stable_15pct": bool(stable < 15.0), "latency_floor_stable_15pct": bool(floor < 15.0)},
        "machine": host,
        "checks": checks,
        "command": "python -m human3r_edge.benchmarks.soak " + " ".join(sys.argv[1:]),
    }


def latency_floor_drift(windows: list[dict]) -> float:
    """|best p50 of the second half / best p50 of the first half - 1| in percent (NaN with < 2 windows)."""
    if len(windows) < 2:
        return float("nan")
    half = len(windows) // 2
    first = min(w["p50_ms"] for w in windows[:half])
    second = min(w["p50_ms"] for w in windows[half:])
    return abs(second / first - 1) * 100


def write_results(result: dict, out: Path) -> tuple[Path, Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    md = out.with_suffix(".md")
    r = result
    lines = [f"# Soak: {r['config']} {r['resolution'][0]}x{r['resolution'][1]} on {r['backend']}", "",
             f"Machine: {r['machine']['cpu']} ({r['machine']['cores']} cores). Command: `{r['command']}`", "",
             ("Machine quiet during the run." if r["machine"].get("quiet") else
              f"**The machine was busy: other processes used {100 * r['machine'].get('foreign_cpu_share', 0.0):.0f} %"
              " of the CPU during the run; latencies are not representative, the RSS drift and state checks are.**"),
             "",
             "| frames | FPS | RSS after warm-up | RSS end | drift | peak | state finite | latency drift | CPU-time "
             "drift |", "|---|---|---|---|---|---|---|---|---|",
             f"| {r['frames']} | {r['fps']:.1f} | {r['rss_mb']['after_warmup']:.1f} MB | {r['rss_mb']['end']:.1f} MB "
             f"| {r['rss_mb']['drift_percent']:+.2f} % | {r['rss_mb']['peak']:.1f} MB | {r['state_finite']} "
             f"| {r['latency_drift_percent']:.1f} % | {r['cpu_time_drift_percent']:.1f} % |", "",
             "| window start | frames | p50 ms | p95 ms | mean ms | CPU p50 ms |", "|---|---|---|---|---|---|"]
    lines += [f"| {w['start']} | {w['frames']} | {w['p50_ms']:.2f} | {w['p95_ms']:.2f} | {w['mean_ms']:.2f} "
              f"| {w['cpu_p50_ms']:.2f} |" for w in r["latency_windows"]]
    lines += ["", f"Load average at the end (other processes share this machine): "
              f"{', '.join(f'{x:.2f}' for x in r['load_average_at_end'])}. Latency floor drift (best window "
              f"median, second half vs first half): {r['latency_floor_drift_percent']:.1f} %."]
    lines += ["", f"Tracker at the end: {r['tracker']['remembered_end']} remembered tokens, "
              f"{r['tracker']['ids_end']} ids assigned. Pass: {r['pass']}"]
    md.write_text("\n".join(lines) + "\n")
    return out, md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m human3r_edge.benchmarks.soak", description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    result = soak(args)
    out = args.out or RESULTS / f"soak_{result['config']}_{args.backend}.json"
    j, md = write_results(result, out)
    r = result
    print(f"soak | {r['frames']} frames, {r['fps']:.1f} FPS, RSS drift {r['rss_mb']['drift_percent']:+.2f} %, "
          f"state finite {r['state_finite']}, latency drift {r['latency_drift_percent']:.1f} % -> {j}, {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
