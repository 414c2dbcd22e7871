"""`human3r-edge run`: stream a video, an image folder or a camera through an export and write the outputs.

    human3r-edge run clip.mp4 --engines exports/896L --smplx-model SMPLX_NEUTRAL.npz --backend ort-cpu --out out/

`--checkpoint CKPT` instead of `--engines DIR` exports ONNX on the fly (through `human3r-edge export` in a
subprocess, cached under --cache-dir per checkpoint, resolution and slot count). Exit codes: 0 done, 2 bad input,
3 backend unavailable, 130 interrupted (the outputs then hold every finished frame).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .errors import BackendUnavailable, Human3RError, msg

BACKEND_CHOICES = ("torch", "ort-cpu", "ort-cuda", "ort-trt", "trt")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "human3r-edge" / "exports"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="video file, image folder, or camera index (0, 1, ...)")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--engines", type=Path, metavar="DIR", help="export directory (ONNX or TensorRT engines)")
    model.add_argument("--checkpoint", type=Path, metavar="CKPT", help="Human3R checkpoint: export on the fly")
    p.add_argument("--smplx-model", type=Path, required=True, metavar="FILE", help="SMPLX_NEUTRAL.npz (or .pkl)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="ort-cpu")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--reset-interval", type=int, default=None, metavar="N",
                   help="reset the recurrent state every N frames (the reference demo uses 100)")
    p.add_argument("--no-ttt3r", action="store_true", help="plain CUT3R state update (no TTT3R gating)")
    p.add_argument("--max-people", type=int, default=None, metavar="K", help="people per frame (<= export slots)")
    p.add_argument("--max-remembered", type=int, default=256, metavar="M",
                   help="people the tracker remembers; the least recently seen are forgotten beyond it "
                        "(0: never forget, as the reference, whose memory then grows with every new id)")
    p.add_argument("--save-depth", action="store_true", help="write depth/NNNNNN.npy (or .png, --depth-format)")
    p.add_argument("--depth-format", choices=("npy", "png"), default="npy")
    p.add_argument("--save-meshes", action="store_true", help="write meshes/NNNNNN_track_NNNN.ply (world frame)")
    p.add_argument("--mesh-format", choices=("ply", "obj"), default="ply")
    p.add_argument("--preview", action="store_true", help="write preview.mp4 with the meshes drawn")
    p.add_argument("--no-scene", action="store_true", help="do not write scene.ply")
    p.add_argument("--conf-threshold", type=float, default=2.0, help="scene points need confidence above this")
    p.add_argument("--mask-threshold", type=float, default=0.1,
                   help="scene points where the human mask exceeds this are removed (the demo's --msk_threshold)")
    p.add_argument("--voxel-size", type=float, default=None, help="scene voxel (model units); default automatic")
    p.add_argument("--fit", choices=("exact", "crop"), default="exact",
                   help="frames whose aspect does not give the export resolution: refuse (exact) or cover+crop")
    p.add_argument("--max-frames", type=int, default=None, metavar="N")
    p.add_argument("--stride", type=int, default=1, metavar="N", help="use every N-th frame")
    p.add_argument("--fps", type=float, default=None, help="frame rate for timestamps/preview when the source "
                   "has none (default: the video's, else 30)")
    p.add_argument("--size", type=int, default=512, help="long side of the model image for --checkpoint exports")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where --checkpoint exports are cached")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for ONNX Runtime backends")
    p.add_argument("--skinning", choices=("auto", "cpu", "gpu"), default="auto",
                   help="SMPL-X skinning: on the CPU (compiled kernels when a C compiler is present, else numpy), "
                   "or the CUDA kernels (auto: GPU with --backend trt)")
    p.add_argument("--preprocessing", choices=("auto", "cpu", "gpu"), default="auto",
                   help="frame preprocessing: PIL-exact on the CPU (in the reader thread), or the CUDA kernels "
                   "writing into the engine's inputs (auto: GPU on trt, ort-cuda and ort-trt when pycuda is installed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BackendUnavailable as exc:
        print(f"human3r-edge run | backend unavailable: {exc}", file=sys.stderr)
        return 3
    except Human3RError as exc:
        print(f"human3r-edge run | {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from . import video
    from .outputs import BackgroundWriter, OutputOptions, OutputWriter, ensure_writable_dir
    from .session import Session, SessionOptions

    t_start = time.perf_counter()
    _check_args(args)
    ensure_writable_dir(args.out)
    smplx_model = _load_smplx(args.smplx_model)
    probe = video.open_source(_source_arg(args.source), max_frames=1)
    first = probe.first_frame
    fps_src = float(getattr(probe, "fps", 0.0) or 0.0)
    frame_count = int(getattr(probe, "frame_count", 0) or 0) or len(getattr(probe, "files", [])) or None
    probe.close()
    export_dir = args.engines if args.engines is not None else _export_on_the_fly(args, first.shape[1],
                                                                                  first.shape[0])
    backend = _open_backend(args, export_dir)
    fps = args.fps or (fps_src if fps_src > 0 else 30.0)
    out_opts = OutputOptions(scene=not args.no_scene, conf_threshold=args.conf_threshold,
                             mask_threshold=args.mask_threshold, voxel_size=args.voxel_size,
                             save_depth=args.save_depth, depth_format=args.depth_format,
                             save_meshes=args.save_meshes, mesh_format=args.mesh_format, preview=args.preview,
                             fps=fps / args.stride)
    sess_opts = SessionOptions(ttt3r=not args.no_ttt3r, reset_interval=args.reset_interval,
                               max_people=args.max_people, dense=out_opts.needs_dense,
                               max_remembered=args.max_remembered or None,
                               human_mask=out_opts.needs_mask, fit=args.fit, preprocessing=args.preprocessing)
    total = frame_count
    if total is not None:
        total = -(-total // args.stride)
        if args.max_frames is not None:
            total = min(total, args.max_frames)
    stages: dict[str, float] = {}
    frames, tracks = 0, set()
    interrupted = False
    t_loop: float | None = None
    writer = BackgroundWriter(OutputWriter(args.out, out_opts, faces=smplx_model.faces))
    session = Session(backend, smplx_model, sess_opts)
    bar = _progress(total, args.no_progress)
    skinning_used = f"cpu-{smplx_model.backend}"  # cpu-native (compiled kernels) or cpu-numpy
    try:
        with session:
            skinner = _gpu_skinner(args, smplx_model, backend.spec.max_people)
            if skinner is not None:
                session.smplx = skinner
                skinning_used = "cuda"
            source = video.open_source(_source_arg(args.source), max_frames=args.max_frames, stride=args.stride,
                                       transform=session.reader_transform)
            t_loop = time.perf_counter()
            for r in session.run(source):
                tic = time.perf_counter()
                writer.add(r)  # drawn and written in the writer thread; this times the hand-off (back-pressure)
                r.timings["outputs_wait"] = (time.perf_counter() - tic) * 1e3
                for k, v in r.timings.items():
                    stages[k] = stages.get(k, 0.0) + v
                frames += 1
                tracks.update(r.track_ids)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{frames / (time.perf_counter() - t_loop):.2f} FPS, "
                                        f"{len(r.people)} people")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        t_end = time.perf_counter()
        loop_s = t_end - (t_loop if t_loop is not None else t_end)
        try:
            writer.close()  # every queued frame is written before the summary is taken
        finally:
            summary = _summary(args, backend, export_dir, frames, loop_s, t_end - t_start, stages, tracks,
                               interrupted, writer)
            summary["settings"]["skinning_used"] = skinning_used
            writer.writer.write_summary(summary)
    if frames == 0 and not interrupted:
        raise Human3RError(msg(f"source {args.source}", "produced no frames", hint="check --max-frames/--stride"))
    scene = f", scene {summary['scene_points']} points" if summary.get("scene_points") is not None else ""
    print(f"human3r-edge run | {frames} frames in {loop_s:.1f} s ({summary['fps']:.2f} FPS), {len(tracks)} tracks"
          f"{scene}, backend {args.backend} -> {args.out}" + (" (interrupted)" if interrupted else ""))
    return 130 if interrupted else 0


# ------------------------------------------------------------------------------------------------ helpers
def _check_args(args: argparse.Namespace) -> None:
    for name in ("reset_interval", "max_people", "max_frames", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise Human3RError(msg(f"--{name.replace('_', '-')}", "must be >= 1", v))
    if args.stride < 1:
        raise Human3RError(msg("--stride", "must be >= 1", args.stride))
    if args.max_remembered < 0:
        raise Human3RError(msg("--max-remembered", "must be >= 0 (0: unbounded)", args.max_remembered))
    if not args.smplx_model.is_file():
        raise Human3RError(msg(f"--smplx-model {args.smplx_model}", "file not found", None,
                               "an SMPL-X model file (SMPLX_NEUTRAL.npz)",
                               "download it from smpl-x.is.tue.mpg.de, or make a synthetic one with "
                               "`human3r-edge make-assets`"))
    if args.engines is not None and not (args.engines / "export.json").is_file():
        raise Human3RError(msg(f"--engines {args.engines}", "not an export directory (no export.json)", None,
                               "a directory written by `human3r-edge export` or `human3r-edge build`"))
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise Human3RError(msg(f"--checkpoint {args.checkpoint}", "file not found"))


def _source_arg(source: str) -> str | int:
    return int(source) if source.isdigit() and not Path(source).exists() else source


def _load_smplx(path: Path) -> Any:
    from .smplx.skinning import SMPLXModel

    return SMPLXModel.load(path)


def _gpu_skinner(args: argparse.Namespace, model: Any, max_people: int) -> Any:
    """A CudaSkinner when asked for (or auto on the TensorRT backend, whose CUDA context is current), else None."""
    if args.skinning == "cpu" or (args.skinning == "auto" and args.backend != "trt"):
        return None
    from .smplx.gpu import CudaSkinner

    try:
        if args.skinning == "gpu" and args.backend != "trt":
            import pycuda.driver as cuda

            if cuda.Context.get_current() is None:
                import pycuda.autoinit  # noqa: F401  (a context for the skinning kernels)
        return CudaSkinner(model, max_people)
    except (BackendUnavailable, ImportError) as exc:
        if args.skinning == "gpu":
            raise BackendUnavailable(msg("--skinning gpu", "CUDA skinning unavailable", str(exc)[:300])) from exc
        print(f"human3r-edge run | GPU skinning unavailable, using the CPU: {str(exc)[:200]}", file=sys.stderr)
        return None


def _open_backend(args: argparse.Namespace, export_dir: Path) -> Any:
    from .backends import open_backend

    from .session import streaming_backend_options

    opts: dict[str, Any] = {}
    if args.threads is not None and args.backend.startswith("ort"):
        opts["intra_op_threads"] = args.threads
    try:
        return open_backend(args.backend, export_dir, **streaming_backend_options(args.backend, opts))
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(msg(f"backend {args.backend}", "its module is not available", str(exc),
                                     hint="install the backend's libraries, or pick another --backend")) from exc


def _export_on_the_fly(args: argparse.Namespace, width0: int, height0: int) -> Path:
    """Export the checkpoint at the resolution the source's frames preprocess to, cached by file identity."""
    from .preprocess import output_shape

    h, w = output_shape(width0, height0, args.size)
    return export_cached(args.checkpoint, w, h, args.max_people or 16, args.cache_dir, lean=True)


def export_cached(checkpoint: Path, width: int, height: int, max_people: int, cache_dir: Path, lean: bool = True
                  ) -> Path:
    """`human3r-edge export` of `checkpoint` in a subprocess (the runtime never imports the exporter), cached
    under cache_dir by the checkpoint's path, size and mtime plus resolution, slots and leanness."""
    from .graphs import check_resolution

    check_resolution(width, height)
    st = checkpoint.stat()
    ident = f"{checkpoint.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    out = cache_dir / f"{checkpoint.stem}-{key}-{width}x{height}-k{max_people}{'-lean' if lean else ''}"
    if (out / "export.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    cmd = [sys.executable, "-m", "human3r_edge", "export", "--checkpoint", str(checkpoint), "--resolution",
           f"{width}x{height}", "--out", str(tmp), "--max-people", str(max_people)] + (["--lean"] if lean else [])
    print(f"human3r-edge | exporting {checkpoint.name} at {width}x{height} (cached in {out})", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (tmp / "export.json").is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise Human3RError(msg(f"export of {checkpoint}", "on-the-fly export failed",
                               " / ".join(tail) or proc.returncode, "a successful `human3r-edge export`",
                               "run `human3r-edge export --checkpoint CKPT --resolution "
                               f"{width}x{height} --out DIR{' --lean' if lean else ''}` yourself and pass "
                               "--engines DIR"))
    os.replace(tmp, out)
    return out


def _progress(total: int | None, disabled: bool) -> Any:
    if disabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr)


def _versions(backend_name: str) -> dict[str, str]:
    import numpy as np

    from human3r_edge import __version__

    v = {"human3r_edge": __version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import cv2

        v["opencv"] = cv2.__version__
    except ImportError:
        pass
    if backend_name.startswith("ort") and "onnxruntime" in sys.modules:
        v["onnxruntime"] = sys.modules["onnxruntime"].__version__
    if backend_name in ("trt", "ort-trt") and "tensorrt" in sys.modules:
        v["tensorrt"] = sys.modules["tensorrt"].__version__
    return v


def _summary(args: argparse.Namespace, backend: Any, export_dir: Path, frames: int, loop_s: float, wall_s: float,
             stages: dict[str, float], tracks: set, interrupted: bool, writer: Any) -> dict:
    scene = writer.scene
    n_scene = None
    if scene is not None:
        n_scene = int(scene.points()[0].shape[0])
    spec = backend.spec
    return {
        "source": str(args.source), "out": str(args.out), "frames": frames, "interrupted": interrupted,
        "seconds": round(loop_s, 4), "wall_seconds": round(wall_s, 4),
        "fps": frames / loop_s if loop_s > 0 else 0.0,
        "stage_ms_mean": {k: round(v / max(frames, 1), 4) for k, v in sorted(stages.items())},
        "backend": args.backend, "export_dir": str(export_dir), "resolution": list(spec.resolution),
        "config": spec.config.get("name"), "max_people": spec.max_people, "tracks": len(tracks),
        "scene_points": n_scene, "settings": {"ttt3r": not args.no_ttt3r, "reset_interval": args.reset_interval,
                                              "max_people": args.max_people, "stride": args.stride,
                                              "max_remembered": args.max_remembered or None,
                                              "skinning": args.skinning,
                                              "preprocessing": args.preprocessing, "fit": args.fit},
        "versions": _versions(args.backend),
    }


# ------------------------------------------------------------------------------------------------ golden replay
def replay_golden(golden_dir: str | Path, backend: Any = "ort-cpu", preprocessed: bool = False,
                  reference_npz: str = "golden.npz", smplx_model: Any = None,
                  engines: str | Path | None = None, cache_dir: str | Path | None = None,
                  gpu_kernels: bool | None = None, **backend_options: Any) -> dict[str, Any]:
    """Replay a golden folder through the runtime (any backend but torch) -> the golden's meta/step/demo/smplx keys.

    engines: a NON-lean export of the golden's checkpoint at its resolution; by default it is exported on the fly
    (cached under cache_dir). `backend` is a backend name or an (inactive) Backend instance; `smplx_model` a model
    file or a loaded SMPLXModel (default: the goldens' synthetic model). Settings (TTT3R,
    reset interval, size, R) come from `reference_npz`'s meta keys. Arrays are new numpy arrays owned by the caller.
    gpu_kernels: run the CUDA kernels of kernels/ as `run` does on the GPU: SMPL-X skinning, and (without
    `preprocessed`) frame preprocessing straight into the engine's input buffers. None: when the backend takes
    device feeds natively (trt); on ort-cuda / ort-trt pass True (needs pycuda).
    """
    import numpy as np

    from . import preprocess as pp
    from .backends import open_backend
    from .backends.base import ON_DEVICE
    from .geometry import rotmat_to_axis_angle, transform_points
    from .pipeline import FramePipeline, PipelineOptions
    from .smplx.skinning import SMPLXModel, project_points

    gdir = Path(golden_dir)
    ref = gdir / reference_npz
    if not ref.is_file():
        raise Human3RError(msg(f"golden {gdir}", "reference npz not found", str(ref)))
    with np.load(ref, allow_pickle=False) as z:
        meta = {k: z[k] for k in z.files if k.startswith("meta/")}
    size, side = int(meta["meta/size_arg"]), int(meta["meta/mhmr_img_res"])
    reset_interval = int(meta["meta/reset_interval"])
    if preprocessed:
        imgs = _golden_frames(gdir, preprocessed, size)
        h, w = imgs[0].shape[1:]
    else:  # raw frames are preprocessed below, on the CPU or by the GPU kernels (not both)
        h0, w0 = pp.read_rgb(_golden_frame_files(gdir)[0]).shape[:2]
        h, w = pp.output_shape(w0, h0, size)
    if not isinstance(backend, str):
        be_obj = backend
    else:
        if engines is None:
            export_dir = export_cached(gdir / "checkpoint.pth", w, h, 16, Path(cache_dir or DEFAULT_CACHE),
                                       lean=False)
        else:
            export_dir = Path(engines)
        from .session import streaming_backend_options

        be_obj = open_backend(backend, export_dir, **streaming_backend_options(backend, backend_options))
    if smplx_model is not None and hasattr(smplx_model, "skin"):
        model: Any = smplx_model  # an already loaded SMPLXModel
    else:
        model = SMPLXModel.load(Path(smplx_model) if smplx_model else gdir.resolve().parent / "smplx_synthetic"
                                / "SMPLX_NEUTRAL.npz")
    opts = PipelineOptions(ttt3r=bool(meta["meta/use_ttt3r"]), reset_interval=reset_interval, human_mask=True,
                           max_remembered=None,
                           extra_decoder_outputs=("pts3d_other", "conf_other", "rgb"), record=True)
    with be_obj as be:
        if be.spec.config.get("mhmr_img_res") != side:
            raise Human3RError(msg(f"export {be.directory}", "MHMR resolution differs from the golden's",
                                   be.spec.config.get("mhmr_img_res"), side))
        pipe = FramePipeline(be, opts)
        use_gpu = be.name == "trt" if gpu_kernels is None else gpu_kernels
        if use_gpu and not getattr(be, "accepts_device_feeds", False):
            raise Human3RError(msg("replay: gpu_kernels", "backend has no device buffers", be.name,
                                   "trt, ort-cuda or ort-trt"))
        if use_gpu and hasattr(be, "ensure_cuda_context"):
            be.ensure_cuda_context()  # the ORT GPU backends: pycuda in the context ONNX Runtime uses
        if use_gpu and not preprocessed:
            from .device_frames import GpuFramePreparer
            from .preprocess import read_rgb

            preparer = GpuFramePreparer(be, size, side)
            frames = []
            for path in _golden_frame_files(gdir):
                if preparer.prepare(read_rgb(path), "RGB") is None:
                    raise Human3RError(msg(f"golden frame {path}", "does not preprocess to the export size"))
                frames.append(pipe.step(ON_DEVICE, ON_DEVICE))
        else:
            if not preprocessed:
                imgs = _golden_frames(gdir, preprocessed, size)
            frames = [pipe.step(img, pp.pad_image(img, side)[0]) for img in imgs]
        steps = pipe.steps
        skinner: Any = model
        if use_gpu:
            from .smplx.gpu import CudaSkinner

            skinner = CudaSkinner(model, be.spec.max_people)
        skins = [skinner.skin(f.smpl["smpl_rotmat"], f.smpl["smpl_shape"], f.smpl["smpl_expression"],
                              f.smpl["smpl_transl"], f.c2w) if f.detections.count else None for f in frames]
    out: dict[str, Any] = dict(meta)
    out["meta/num_model_steps"] = np.int64(len(steps))
    flags: list[bool] = []
    kept: list[int] = []
    for i, s in enumerate(steps):
        flags.append(False if s.duplicate else bool(frames[len(kept)].reset_after))
        if not s.duplicate:
            kept.append(i)
    out["meta/reset_flags_per_step"] = np.array(flags, bool)
    out["meta/kept_step_index"] = np.array(kept, np.int64)
    # step/*: every model step
    f32 = np.float32
    cat = lambda xs, shape: np.concatenate(xs).astype(f32) if xs else np.zeros((0,) + shape, f32)  # noqa: E731
    out["step/pts3d_in_self_view"] = np.stack([s.decoder["pts3d_self"] for s in steps])
    out["step/conf_self"] = np.stack([s.decoder["conf_self"] for s in steps])
    out["step/pts3d_in_other_view"] = np.stack([s.decoder["pts3d_other"] for s in steps])
    out["step/conf"] = np.stack([s.decoder["conf_other"] for s in steps])
    out["step/rgb"] = np.stack([s.decoder["rgb"] for s in steps])
    out["step/camera_pose"] = np.stack([s.decoder["camera_pose"] for s in steps]).astype(f32)
    out["step/smpl_scores"] = np.stack([s.det_scores for s in steps])[..., None]
    masks = [s.human_mask for s in steps]
    if any(m is None for m in masks):
        raise Human3RError(msg("replay", "the export has no human_mask output", hint="re-export"))
    out["step/msk"] = np.stack(masks)[..., None]  # type: ignore[arg-type]
    out["step/n_humans"] = np.array([s.detections.count for s in steps], np.int64)
    out["step/human_step_index"] = np.repeat(np.arange(len(steps)), out["step/n_humans"]).astype(np.int64)
    out["step/smpl_loc"] = cat([s.detections.loc_square for s in steps], (2,))
    for key, name, shape in (("smpl_shape", "smpl_shape", (10,)), ("smpl_transl", "smpl_transl", (3,)),
                             ("smpl_rotmat", "smpl_rotmat", (53, 3, 3)),
                             ("smpl_expression", "smpl_expression", (10,))):
        out[f"step/{key}"] = cat([s.smpl[name] for s in steps], shape)
    out["step/smpl_id"] = np.concatenate([s.track_ids for s in steps]).astype(np.int64)
    from .geometry import pose_to_c2w

    out["step/camera_pose_c2w_4x4"] = pose_to_c2w(out["step/camera_pose"])
    # demo/*: kept frames, chained poses
    c2w = np.stack([f.c2w for f in frames])
    out["demo/pts3d_world"] = np.stack([transform_points(f.c2w, f.pts3d_self) for f in frames])
    out["demo/focal"] = np.array([f.focal for f in frames], f32)
    out["demo/pp"] = np.tile(np.array([w // 2, h // 2], f32), (len(frames), 1))
    out["demo/R_c2w"] = c2w[:, :3, :3].copy()
    out["demo/t_c2w"] = c2w[:, :3, 3].copy()
    out["demo/msk"] = np.stack([pp.unpad_image(out["step/msk"][k, :, :, 0], h, w) for k in kept]).astype(f32)
    out["demo/cam2world"] = c2w
    out["demo/intrinsics"] = np.stack([f.K for f in frames])
    out["demo/smpl_scores_fullres"] = np.stack([pp.unpad_image(steps[k].det_scores, h, w) for k in kept])
    out["demo/n_humans"] = np.array([f.detections.count for f in frames], np.int64)
    out["demo/human_frame_index"] = np.repeat(np.arange(len(frames)), out["demo/n_humans"]).astype(np.int64)
    rot = cat([f.smpl["smpl_rotmat"] for f in frames], (53, 3, 3))
    out["demo/smpl_rotvec"] = rotmat_to_axis_angle(rot).astype(f32)
    out["demo/smpl_id"] = np.concatenate([f.track_ids for f in frames]).astype(np.int64)
    # smplx/*: skinned bodies of the kept frames
    parts: dict[str, list] = {k: [] for k in ("v3d_cam", "j3d_cam", "j2d", "transl_pelvis", "v3d_world",
                                              "j3d_world")}
    for f, r in zip(frames, skins):
        if r is None:
            continue
        parts["v3d_cam"].append(r.v_cam)
        parts["j3d_cam"].append(r.j_cam)
        parts["j2d"].append(project_points(r.j_cam, f.K))
        parts["transl_pelvis"].append(r.transl_pelvis)
        parts["v3d_world"].append(r.v_world)
        parts["j3d_world"].append(r.j_world)
    for k, v in parts.items():
        out[f"smplx/{k}"] = np.concatenate(v).astype(f32) if v else np.zeros((0,), f32)
    out["smplx/faces"] = np.asarray(model.faces, np.int64)
    return out


def _golden_frames(gdir: Path, preprocessed: bool, size: int) -> list:
    """Model images (3, H, W) float32 per input frame: the golden's own (kept steps) or preprocessed raw frames."""
    import numpy as np

    from .preprocess import load_image

    if preprocessed:
        with np.load(gdir / "golden.npz", allow_pickle=False) as z:
            if "input/img" not in z.files:
                raise Human3RError(msg(f"golden {gdir}", "golden.npz lacks input/img",
                                       hint="replay without --preprocessed"))
            kept = z["meta/kept_step_index"]
            return [np.ascontiguousarray(x) for x in z["input/img"][kept]]
    return [load_image(p, size) for p in _golden_frame_files(gdir)]


def _golden_frame_files(gdir: Path) -> list[Path]:
    files = sorted((gdir / "frames").glob("*.png"))
    if not files:
        raise Human3RError(msg(f"golden {gdir}", "no frames/*.png"))
    return files
