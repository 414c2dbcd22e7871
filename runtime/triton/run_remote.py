"""`human3r-edge run SOURCE [SOURCE ...] --backend triton --url HOST:PORT --smplx-model FILE --out OUT`: the run
command with the model on a Triton server (`human3r-edge triton-server`), one sequence id per source.

One source writes OUT/ exactly as a local run (the same OutputWriter: trajectory.tum, cameras.json, people/,
scene.ply, ... and summary.json); several sources write OUT/stream_00/, OUT/stream_01/, ... (one folder per source,
in argument order) and OUT/summary.json (per-stream status, frames, latency, resets; aggregate FPS), as the local
multi-source run does. Each source streams from its own thread over its own connection; the server batches the
sequences (Oldest strategy). The SMPL-X model given here only provides the mesh faces (meshes, preview): vertices
come from the server. `summary.json` records `resets`: each restart of a sequence after the server restarted
mid-run (frame, reason). Exit codes as for `run`: 0, 2 bad input, 3 server unavailable, 128+N on a signal.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import BackendUnavailable, Human3RError, msg

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3


def add_remote_arguments(p: argparse.ArgumentParser) -> None:
    """Called by run.py's add_arguments: `--backend triton` and `--url`; --engines/--checkpoint become optional at
    parse time (a local run without either is refused by `check_local_model`)."""
    for action in p._actions:
        if action.dest == "backend" and action.choices is not None and "triton" not in action.choices:
            action.choices = tuple(action.choices) + ("triton",)
            action.help = (action.help or "") + "; triton: a Triton server (--url)"
    for group in p._mutually_exclusive_groups:
        if any(a.dest == "engines" for a in group._group_actions):
            group.required = False
    p.add_argument("--url", default=None, metavar="HOST:PORT",
                   help="--backend triton: the server's HTTP endpoint (`human3r-edge triton-server` prints it)")
    p.add_argument("--reconnect-timeout", type=float, default=60.0, metavar="S",
                   help="--backend triton: how long to wait for a restarted server before the run fails")


def check_local_model(args: argparse.Namespace) -> None:
    if getattr(args, "engines", None) is None and getattr(args, "checkpoint", None) is None:
        raise Human3RError(msg("run", "one of --engines DIR or --checkpoint CKPT is required", None,
                               hint="or --backend triton --url HOST:PORT to use a Triton server"))


def dispatch(args: argparse.Namespace, signals: Any) -> int | None:
    """run.py's hook: the exit code of a Triton run, or None for a local run (after checking it has a model)."""
    if getattr(args, "backend", None) != "triton":
        check_local_model(args)
        return None
    return run_remote(args, signals)


def _stream(source: str, out: Path, args: argparse.Namespace, faces: Any, sequence_id: int | None,
            stop: threading.Event) -> dict[str, Any]:
    from human3r_edge.runtime import video
    from human3r_edge.runtime.outputs.folder import claim_output_dir
    from human3r_edge.runtime.outputs.writer import OutputOptions, OutputWriter
    from human3r_edge.runtime.triton.client import RemoteSession

    out_opts = OutputOptions(scene=not args.no_scene, conf_threshold=args.conf_threshold,
                             mask_threshold=args.mask_threshold, voxel_size=args.voxel_size,
                             save_depth=args.save_depth, depth_format=args.depth_format,
                             save_meshes=args.save_meshes, mesh_format=args.mesh_format, preview=args.preview,
                             fps=(args.fps or 30.0) / args.stride)
    rs = RemoteSession(args.url, sequence_id, dense=False, reconnect_timeout=args.reconnect_timeout)
    tic = time.perf_counter()
    summary: dict[str, Any] = {"source": source, "out": str(out), "backend": "triton", "url": args.url,
                               "status": "running"}
    writer = None
    error: BaseException | None = None
    try:
        rs.start()
        summary["sequence_id"] = rs.sequence_id
        if out_opts.needs_dense:
            if "DEPTH" in rs.served:
                rs.want_dense = True
                rs.outputs += [n for n in ("DEPTH", "CONFIDENCE", "POINTS_CAM") if n not in rs.outputs]
            else:  # the repository serves no dense outputs: no scene / depth files (said in summary.json)
                out_opts = dataclasses.replace(out_opts, scene=False, save_depth=False)
                summary["note"] = ("the server's repository has no dense outputs (triton-repo --dense): "
                                   "scene.ply and depth are not written")
        claim_output_dir(out, args.overwrite)
        writer = OutputWriter(out, out_opts, faces=faces)
        writer.write_summary(summary)
        arg = int(source) if source.isdigit() and not Path(source).exists() else source
        with video.open_source(arg, max_frames=args.max_frames, stride=args.stride, skip_corrupt=True) as src:
            for item in src:
                if stop.is_set():
                    summary["status"] = "interrupted"
                    break
                writer.add(rs.step(item.image, item.timestamp))
    except BaseException as exc:
        error = exc
    finally:
        rs.close()
    wall = time.perf_counter() - tic
    frames = rs.index
    summary.update(rs.summary())
    summary.update(frames=frames, wall_s=wall, fps=frames / wall if wall > 0 else 0.0,
                   restarts=len(rs.resets))
    if error is not None:
        summary["status"] = "failed"
        summary["error"] = {"type": type(error).__name__, "message": str(error)[:2000]}
        summary["exit_code"] = (EXIT_BAD_INPUT if isinstance(error, Human3RError) else EXIT_UNAVAILABLE
                                if isinstance(error, BackendUnavailable) else EXIT_INTERNAL)
    else:
        if summary["status"] == "running":
            summary["status"] = "complete"
        summary["exit_code"] = EXIT_OK if summary["status"] == "complete" else 130
    if writer is not None:
        writer.close(summary)
    return summary


def run_remote(args: argparse.Namespace, signals: Any = None) -> int:
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    if not args.url:
        raise Human3RError(msg("--backend triton", "needs --url HOST:PORT", None,
                               hint="the HTTP endpoint `human3r-edge triton-server` prints"))
    sources = list(getattr(args, "sources", None) or [args.source])
    if len(set(sources)) != len(sources):
        raise Human3RError(msg("run", "the same source twice", sources))
    faces = None
    if getattr(args, "smplx_model", None) is not None:
        faces = SMPLXModel.load(args.smplx_model).faces
    outs = [Path(args.out)] if len(sources) == 1 else [Path(args.out) / f"stream_{i:02d}" for i in range(len(sources))]
    stop = threading.Event()
    results: list[dict[str, Any] | None] = [None] * len(sources)

    def work(i: int) -> None:
        results[i] = _stream(sources[i], outs[i], args, faces, None, stop)

    threads = [threading.Thread(target=work, args=(i,), name=f"triton-stream-{i}", daemon=True)
               for i in range(len(sources))]
    tic = time.perf_counter()
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
    wall = time.perf_counter() - tic
    done = [r for r in results if r is not None]
    codes = [int(r.get("exit_code", EXIT_INTERNAL)) for r in done]
    code = 130 if stop.is_set() else max(codes, key=lambda c: (c == EXIT_INTERNAL, c)) if codes else EXIT_INTERNAL
    for r in done:
        if r.get("error"):
            print(f"human3r-edge run | {r['source']}: {r['error']['message']}", file=sys.stderr)
        if r.get("resets"):
            print(f"human3r-edge run | {r['source']}: sequence restarted {len(r['resets'])}x (server restart)",
                  file=sys.stderr)
    if len(sources) > 1:
        frames = sum(int(r.get("frames", 0)) for r in done)
        agg = {"backend": "triton", "url": args.url, "streams": done, "frames": frames, "wall_s": wall,
               "aggregate_fps": frames / wall if wall > 0 else 0.0, "exit_code": code,
               "status": "complete" if code == 0 else "interrupted" if stop.is_set() else "failed"}
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "summary.json").write_text(json.dumps(agg, indent=1, default=_json))
    total = sum(int(r.get("frames", 0)) for r in done)
    print(f"human3r-edge run | {total} frames from {len(sources)} source(s) through triton {args.url} -> {args.out} "
          f"({total / wall if wall > 0 else 0:.1f} FPS)", file=sys.stderr)
    return code


def _json(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
