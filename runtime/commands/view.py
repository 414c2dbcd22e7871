"""`human3r-edge view OUT_DIR [--port] [--host]`: replay a run folder in a viser web viewer (the `[viewer]` extra).

Binds 127.0.0.1 by default (this machine only); `--host 0.0.0.0` serves it to other machines, e.g. a headless
Jetson to a laptop's browser. A port in use is an error with a hint (exit 2); viser missing is exit 3.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from human3r_edge.errors import BackendUnavailable, Human3RError, msg


def add_arguments(p: argparse.ArgumentParser) -> None:
    from human3r_edge.runtime.viewer.scene import DEFAULT_HOST, DEFAULT_PORT

    p.add_argument("run_dir", type=Path, metavar="OUT_DIR", help="the --out folder of `human3r-edge run` "
                   "(finished or interrupted)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port of the web viewer")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to bind: 127.0.0.1 = this machine only; 0.0.0.0 = every interface (exposes it)")
    p.add_argument("--smplx-model", type=Path, default=None,
                   help="SMPL-X model to skin the tracks with where the run saved no meshes/ (default: none)")
    p.add_argument("--play", action="store_true", help="start playing")


def main(args: argparse.Namespace) -> int:
    from human3r_edge.runtime.convert.run_folder import RunFolder

    try:
        rf = RunFolder.read(args.run_dir)
        streams = sorted(d.name for d in args.run_dir.iterdir() if d.is_dir() and (
            (d / "trajectory.tum").is_file() or (d / "cameras.json").is_file()))
        if not rf.frames and streams:  # a multi-stream output: one run folder per stream
            raise Human3RError(msg(f"OUT_DIR {args.run_dir}", "holds one run folder per stream", ", ".join(streams),
                                   "a run folder", f"view one stream: human3r-edge view {args.run_dir / streams[0]}; "
                                   "for side by side, start one viewer per stream with its own --port"))
        model = None
        if args.smplx_model is not None:
            if not args.smplx_model.is_file():
                raise Human3RError(msg("--smplx-model", "no such file", str(args.smplx_model)))
            from human3r_edge.runtime.smplx.skinning import SMPLXModel

            model = SMPLXModel.load(args.smplx_model)
        from human3r_edge.runtime.viewer.replay import ReplayViewer
        from human3r_edge.runtime.viewer.scene import SceneView

        view = SceneView(args.host, args.port)
    except Human3RError as exc:
        print(f"human3r-edge view: {exc}", file=sys.stderr)
        return 2
    except BackendUnavailable as exc:
        print(f"human3r-edge view: {exc}", file=sys.stderr)
        return 3
    try:
        viewer = ReplayViewer(rf, view, model)
        viewer.playing.value = bool(args.play)
        for note in rf.notes:
            print(f"human3r-edge view | note: {note}", file=sys.stderr)
        print(f"human3r-edge view | {len(rf.frames)} frames, {len(rf.tracks)} tracks, {viewer.n_points} points "
              f"at {view.url} (Ctrl-C to stop)", flush=True)
        viewer.run()
    except KeyboardInterrupt:
        print("human3r-edge view | stopped", file=sys.stderr)
    finally:
        view.stop()
    return 0
