"""`human3r-edge convert OUT_DIR --to {glb,colmap,bvh}`: a run folder to glTF binary, a COLMAP text model or BVH.

Torch-free, numpy only. An empty or interrupted run folder converts what exists and says how much; unknown
--tracks or a --frames range outside the run are bad input (exit 2).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from human3r_edge.errors import Human3RError, msg

FORMATS = ("glb", "colmap", "bvh")
DEFAULT_OUT = {"glb": "run.glb", "colmap": "colmap", "bvh": "bvh"}  # inside OUT_DIR when --out is not given


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, metavar="OUT_DIR", help="the --out folder of `human3r-edge run`")
    p.add_argument("--to", required=True, choices=FORMATS, help="glb: skinned animated meshes + camera + points; "
                   "colmap: cameras.txt/images.txt/points3D.txt; bvh: one skeleton animation per track")
    p.add_argument("--out", type=Path, default=None,
                   help="output file (glb) or folder (colmap, bvh); default OUT_DIR/run.glb, OUT_DIR/colmap, "
                        "OUT_DIR/bvh")
    p.add_argument("--tracks", type=int, nargs="+", default=None, metavar="ID", help="only these track ids")
    p.add_argument("--frames", default=None, metavar="A:B",
                   help="only source frames A <= index < B (cameras.json 'index'); either side may be left out")
    p.add_argument("--smplx-model", type=Path, default=None,
                   help="SMPL-X model file (.npz/.pkl) for glb and bvh (the rest shape); default: the run's "
                        "summary.json 'smplx_model' when it names one")
    p.add_argument("--no-points", action="store_true", help="glb: leave the scene point cloud out")
    p.add_argument("--max-points", type=int, default=500_000, help="glb/colmap: cap on the exported scene points "
                   "(random decimation, seeded)")
    p.add_argument("--hands", action="store_true", help="bvh: add the 30 finger joints under the wrists")
    p.add_argument("--source-size", default=None, metavar="WxH",
                   help="colmap: size of the source frames, when the run's summary.json source cannot be probed; "
                        "without it cameras are in model-image pixels")


def _source_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w > 0 and h > 0:
            return w, h
    except ValueError:
        pass
    raise Human3RError(msg("--source-size", "not a size", repr(text), "WxH in pixels, e.g. 1920x1080"))


def _model(args: argparse.Namespace, rf) -> object:
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    path = args.smplx_model or rf.summary.get("smplx_model")
    if path is None:
        raise Human3RError(msg(f"convert --to {args.to}", "needs the SMPL-X model file", "no --smplx-model",
                               "the SMPLX_NEUTRAL model the run used", "pass --smplx-model FILE"))
    if not Path(path).is_file():
        raise Human3RError(msg("--smplx-model", "no such file", str(path), hint="pass the SMPL-X .npz or .pkl"))
    return SMPLXModel.load(path, backend="numpy")


def main(args: argparse.Namespace) -> int:
    from human3r_edge.runtime.convert.run_folder import RunFolder, select

    tic = time.perf_counter()
    try:
        if args.max_points < 0:
            raise Human3RError(msg("--max-points", "negative", args.max_points, "a count >= 0"))
        rf = select(RunFolder.read(args.run_dir), args.tracks, args.frames)
        out = args.out or args.run_dir / DEFAULT_OUT[args.to]
        if args.to == "glb":
            from human3r_edge.runtime.convert.glb import write_glb

            model = _model(args, rf) if rf.tracks else None
            g = write_glb(rf, model, Path(out), points=not args.no_points, max_points=args.max_points)
            what = (f"{g.tracks} tracks ({g.track_frames} person-frames), {g.frames} camera frames, "
                    f"{g.points} points, {g.bytes / 1e6:.1f} MB")
            notes = g.notes
        elif args.to == "colmap":
            from human3r_edge.runtime.convert.colmap import write_colmap

            c = write_colmap(rf, Path(out), _source_size(args.source_size), args.max_points)
            what = f"{c.images} images / {c.cameras} cameras, {c.points} points ({c.pixels})"
            notes = c.notes
        else:
            from human3r_edge.runtime.convert.bvh import write_bvh

            model = _model(args, rf) if rf.tracks else None
            b = write_bvh(rf, model, Path(out), hands=args.hands)
            what = f"{b.tracks} tracks, {b.frames} frames, {len(b.files)} files"
            notes = b.notes
    except Human3RError as exc:
        print(f"human3r-edge convert: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(msg(f"human3r-edge convert: {getattr(exc, 'filename', None) or args.out}", "cannot write",
                  f"{type(exc).__name__}: {exc.strerror}", hint="choose another --out"), file=sys.stderr)
        return 2
    for note in rf.notes + notes:
        print(f"human3r-edge convert | note: {note}", file=sys.stderr)
    print(f"human3r-edge convert | {args.to} -> {out}: {what} in {time.perf_counter() - tic:.1f} s")
    return 0
