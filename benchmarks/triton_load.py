"""Triton load benchmark: S concurrent sequences x F frames of the tiny export through the bundled tritonserver
(python flavour, ort-cpu inside), against the same S streams run locally in one process.

    python -m human3r_edge.benchmarks.triton_load [--onnx-dir DIR | --golden DIR] [--streams 8] [--frames 100]

Every stream gets its own frames (tiny_a's 6 golden frames in a stream-specific order, each with a stream- and
frame-specific brightness shift), so a lost or misrouted frame changes that stream's results. Checks: every stream
returns F results, frame indices 0..F-1 in order, identical track ids and every pose / SMPL-X parameter within
3e-5 * max|ref| of its local run. Timings: per-request latency p50/p99 (client-side, round trip) and aggregate FPS
(all frames / wall time), and the local per-step latency and aggregate FPS (streams stepped round robin in one
process: the same CPUs doing the same work without the server). Bounded: a stream stops at --time-limit seconds
(then the run is reported incomplete). Results: benchmarks/results/triton_load_tiny.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.benchmarks import machine

RESULTS = Path(__file__).resolve().parent / "results"
TOL = 3e-5


def stream_frames(golden_frames: np.ndarray, stream: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + stream)
    order = rng.permutation(len(golden_frames))
    out = np.empty((n,) + golden_frames.shape[1:], np.uint8)
    for i in range(n):
        shift = int(rng.integers(-12, 13))
        out[i] = np.clip(golden_frames[order[i % len(order)]].astype(np.int16) + shift, 0, 255).astype(np.uint8)
    return out


def export_golden(golden: Path, cache: Path, streams: int = 1) -> Path:
    """The golden's checkpoint exported to ONNX at its resolution, `--streams N` (cached)."""
    out = cache / f"export_{golden.name}_streams{streams}"
    if (out / "export.json").is_file():
        return out
    from human3r_edge.export.onnx_export import ExportOptions, export_model, load_source

    with np.load(golden / "golden.npz") as z:
        _, _, h, w = z["input/img"].shape
    model, sha, source = load_source(golden / "checkpoint.pth", None, False)
    export_model(model, out, ExportOptions(int(w), int(h), 4, streams=streams), sha, source, quiet=True)
    return out


def run_local(export: Path, streams: list[np.ndarray], limit_s: float) -> dict[str, Any]:
    from human3r_edge.runtime.session import Session

    sessions = [Session.open(export, "ort-cpu") for _ in streams]
    for s in sessions:
        s.start()
    results: list[list] = [[] for _ in streams]
    lat: list[float] = []
    tic = time.perf_counter()
    try:
        for i in range(len(streams[0])):
            if time.perf_counter() - tic > limit_s:
                break
            for k, s in enumerate(sessions):
                t = time.perf_counter()
                results[k].append(s.step(streams[k][i]))
                lat.append((time.perf_counter() - t) * 1e3)
    finally:
        for s in sessions:
            s.close()
    wall = time.perf_counter() - tic
    n = sum(len(r) for r in results)
    return {"results": results, "latency_ms": _pct(lat), "frames": n, "wall_s": wall, "fps": n / wall}


def run_local_batched(export: Path, streams: list[np.ndarray], limit_s: float) -> dict[str, Any]:
    """The same streams through one MultiSession in this process: every step one batch of all streams."""
    from human3r_edge.runtime.multistream import MultiSession

    results: list[list] = [[] for _ in streams]
    lat: list[float] = []
    with MultiSession.open(export, "ort-cpu", len(streams)) as ms:
        tic = time.perf_counter()
        for i in range(len(streams[0])):
            if time.perf_counter() - tic > limit_s:
                break
            t = time.perf_counter()
            out = ms.step({k: streams[k][i] for k in range(len(streams))})
            lat.append((time.perf_counter() - t) * 1e3)
            for k in range(len(streams)):
                results[k].append(out[k])
    wall = time.perf_counter() - tic
    n = sum(len(r) for r in results)
    return {"results": results, "latency_ms": _pct(lat), "frames": n, "wall_s": wall, "fps": n / wall}


def run_triton(url: str, streams: list[np.ndarray], limit_s: float) -> dict[str, Any]:
    from human3r_edge.runtime.triton.client import RemoteSession

    results: list[list] = [[] for _ in streams]
    lat: list[list[float]] = [[] for _ in streams]
    errors: list[str] = []
    sessions: list[Any] = [None] * len(streams)
    start = threading.Barrier(len(streams) + 1)
    tic = 0.0

    def work(k: int) -> None:
        s = sessions[k] = RemoteSession(url, vertices=False).start()  # its HTTP client is bound to this thread
        start.wait()
        try:
            for f in streams[k]:
                if time.perf_counter() - tic > limit_s:
                    break
                results[k].append(s.step(f))
            lat[k] = list(s.latencies_ms)
        except Exception as exc:  # reported in the results
            errors.append(f"stream {k}: {exc}")
        finally:
            s.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(streams))]
    for t in threads:
        t.start()
    tic = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - tic
    n = sum(len(r) for r in results)
    return {"results": results, "latency_ms": _pct([x for la in lat for x in la]),
            "latency_ms_after_first": _pct([x for la in lat for x in la[1:]]), "frames": n, "wall_s": wall,
            "fps": n / wall, "errors": errors, "sequence_ids": [s.sequence_id for s in sessions],
            "resets": sum(len(s.resets) for s in sessions)}


def _exec_stats(metrics_url: str) -> dict[str, float]:
    """Triton's counters of the model: requests, model executions (batches) and their ratio."""
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    vals = {}
    for line in text.splitlines():
        for key in ("nv_inference_count", "nv_inference_exec_count", "nv_inference_request_success"):
            if line.startswith(key + "{") and 'model="human3r"' in line:
                vals[key] = float(line.rsplit(" ", 1)[1])
    if vals.get("nv_inference_exec_count"):
        vals["mean_batch"] = vals.get("nv_inference_count", 0.0) / vals["nv_inference_exec_count"]
    return vals


def _pct(v: list[float]) -> dict[str, float]:
    a = np.asarray(v, np.float64)
    if not a.size:
        return {}
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "max": float(a.max())}


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    if ref.size == 0:
        return 0.0
    scale = float(np.max(np.abs(ref))) or 1.0
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref))) / scale


def check(remote: list[list], local: list[list], frames: int) -> dict[str, Any]:
    per_stream = []
    for k, (g, r) in enumerate(zip(remote, local)):
        ok_count = len(g) == frames == len(r)
        ok_index = [x.index for x in g] == list(range(len(g)))
        ids = [x.track_ids for x in g] == [x.track_ids for x in r[:len(g)]]
        worst = 0.0
        for a, b in zip(g, r):
            worst = max(worst, _rel(a.c2w, b.c2w), _rel(a.intrinsics, b.intrinsics))
            for p, q in zip(a.people, b.people):
                for name in ("rotmat", "betas", "expression", "transl"):
                    worst = max(worst, _rel(getattr(p, name), getattr(q, name)))
        per_stream.append({"stream": k, "frames": len(g), "indices_in_order": ok_index, "track_ids_equal": ids,
                           "max_rel_err": worst, "people": sum(len(x.people) for x in g),
                           "pass": ok_count and ok_index and ids and worst <= TOL})
    return {"streams": per_stream, "pass": all(s["pass"] for s in per_stream)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m human3r_edge.benchmarks.triton_load",
                                description=__doc__.splitlines()[0])
    p.add_argument("--onnx-dir", type=Path, default=None, help="single-stream ONNX export (default: export "
                   "--golden's checkpoint)")
    p.add_argument("--batched-onnx-dir", type=Path, default=None, help="the same model exported with --streams "
                   "STREAMS (the server batches sequences through it; default: export --golden's checkpoint)")
    p.add_argument("--golden", type=Path, default=Path(os.environ.get(
                   "HUMAN3R_GOLDENS", Path(__file__).resolve().parents[2] / "shared" / "goldens")) / "tiny_a",
                   help="golden folder: its frames (and its checkpoint when --onnx-dir is not given)")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds per phase (local, triton)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "human3r-edge" / "triton_load")
    p.add_argument("--out", type=Path, default=RESULTS / "triton_load_tiny.json")
    args = p.parse_args(argv)

    from human3r_edge.runtime.triton.repo import PythonRepoOptions, write_python_repo
    from human3r_edge.runtime.triton.server import TritonServer

    export = args.onnx_dir or export_golden(args.golden, args.cache)
    batched_export = args.batched_onnx_dir or export_golden(args.golden, args.cache, args.streams)
    with np.load(args.golden / "golden.npz") as z:
        golden_frames = np.array(z["input/raw_frames_uint8"])
    streams = [stream_frames(golden_frames, k, args.frames) for k in range(args.streams)]
    host, cpu_before = machine.describe(), machine.cpu_snapshot()

    local = run_local(export, streams, args.time_limit)
    local_b = run_local_batched(batched_export, streams, args.time_limit)
    repo = write_python_repo(batched_export, args.cache / "repo", PythonRepoOptions(
        max_sequences=args.streams, max_batch_size=args.streams, idle_seconds=120))
    t = time.perf_counter()
    with TritonServer(repo, log_file=args.cache / "tritonserver.log") as server:
        ready_s = time.perf_counter() - t
        remote = run_triton(server.url, streams, args.time_limit)
        stats = _exec_stats(server.metrics_url)
    checks = check(remote["results"], local["results"], args.frames)
    checks_b = check(local_b["results"], local["results"], args.frames)
    result = {
        "command": "python -m human3r_edge.benchmarks.triton_load " + " ".join(argv if argv is not None
                                                                              else sys.argv[1:]),
        "export": str(export), "batched_export": str(batched_export), "streams": args.streams,
        "frames_per_stream": args.frames,
        "server": {"flavor": "python", "backend_in_model": "ort-cpu", "instances": 1, "strategy": "oldest",
                   "max_batch_size": args.streams, "ready_s": ready_s, "multi_stream_export": args.streams,
                   "tritonserver": "2.51 (nvidia-pytriton 0.7.0)"},
        "local": {k: v for k, v in local.items() if k != "results"},
        "local_batched": {k: v for k, v in local_b.items() if k != "results"},
        "local_batched_matches_local": checks_b["pass"], "server_stats": stats,
        "triton": {k: v for k, v in remote.items() if k != "results"},
        "checks": checks, "machine": machine.finish(host, cpu_before),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    md = args.out.with_suffix(".md")
    md.write_text(report(result))
    print(f"triton_load | triton {remote['fps']:.1f} FPS (p50 {remote['latency_ms'].get('p50', 0):.1f} ms, p99 "
          f"{remote['latency_ms'].get('p99', 0):.1f} ms) vs local {local['fps']:.1f} FPS; checks pass: "
          f"{checks['pass']} -> {args.out}, {md}")
    return 0 if checks["pass"] and not remote["errors"] else 1


def report(r: dict[str, Any]) -> str:
    m, lo, tr = r["machine"], r["local"], r["triton"]
    quiet = ("Machine quiet during the run." if m.get("quiet") else
             f"**The machine was busy (other processes used {100 * m.get('foreign_cpu_share', 0.0):.0f} % of the "
             "CPU; load average before "
             f"{m['loadavg_before'][0]:.2f}): timings are not representative; the routing checks are.** (The share "
             "is machine CPU time minus this process's and its reaped children's, so it may also count the "
             "server's Python-backend stub, a grandchild process.)")
    lines = [f"# Triton load: {r['streams']} concurrent sequences x {r['frames_per_stream']} frames (tiny export)", "",
             f"Machine: {m['cpu']} ({m['cores']} cores). Command: `{r['command']}`", "", quiet, "",
             "Server: the tritonserver 2.51 bundled in nvidia-pytriton 0.7.0, python flavour over the "
             f"`--streams {r['streams']}` export (each execute's batch of sequences is one MultiSession step, ort-cpu "
             "inside the model), sequence batching Oldest, 1 instance, on the same machine as the clients (loopback "
             "HTTP). Local: the same streams in one process, as single Sessions stepped round robin, and as one "
             f"MultiSession stepping all {r['streams']} at once (latency = one batch).", "",
             f"Server counters: {r['server_stats'].get('nv_inference_count', 0):.0f} requests (frames + ENDs) in "
             f"{r['server_stats'].get('nv_inference_exec_count', 0):.0f} model executions (mean batch "
             f"{r['server_stats'].get('mean_batch', 0):.2f}). Local MultiSession results equal the single "
             f"Sessions': {r['local_batched_matches_local']}.", "",
             "| | frames | wall s | aggregate FPS | latency p50 ms | latency p99 ms |", "|---|---|---|---|---|---|",
             f"| local, single Sessions (round robin) | {lo['frames']} | {lo['wall_s']:.1f} | {lo['fps']:.1f} | "
             f"{lo['latency_ms']['p50']:.1f} | {lo['latency_ms']['p99']:.1f} |",
             f"| local, one MultiSession (batches of {r['streams']}) | {r['local_batched']['frames']} | "
             f"{r['local_batched']['wall_s']:.1f} | {r['local_batched']['fps']:.1f} | "
             f"{r['local_batched']['latency_ms']['p50']:.1f} | {r['local_batched']['latency_ms']['p99']:.1f} |",
             f"| triton ({r['streams']} client threads) | {tr['frames']} | {tr['wall_s']:.1f} | {tr['fps']:.1f} | "
             f"{tr['latency_ms']['p50']:.1f} | {tr['latency_ms']['p99']:.1f} |", "",
             "Local latency is one `Session.step`; Triton latency is a client's round trip (HTTP, queueing behind "
             "the other sequences' requests, the model step), the first request of each sequence "
             f"included; without it p50 {tr['latency_ms_after_first']['p50']:.1f} ms, p99 "
             f"{tr['latency_ms_after_first']['p99']:.1f} ms.", "",
             f"Routing: {sum(s['frames'] for s in r['checks']['streams'])} frames returned, errors "
             f"{len(tr['errors'])}, resets {tr['resets']}. Pass (every stream: all frames, indices in order, "
             f"identical track ids, max rel. error <= {TOL:g}): **{r['checks']['pass']}**", "",
             "| stream | frames | indices in order | track ids equal | people | max rel err |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {s['stream']} | {s['frames']} | {s['indices_in_order']} | {s['track_ids_equal']} | {s['people']} | "
              f"{s['max_rel_err']:.2e} |" for s in r["checks"]["streams"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
