"""`human3r-edge replay`: run a golden folder through a backend and write its outputs under the golden's keys.

    human3r-edge replay --golden DIR [--reference golden.npz|golden_nottt3r.npz] [--smplx-model FILE]
                        --backend torch|ort-cpu|ort-cuda|ort-trt|trt [--engines DIR] --out OUT.npz [--preprocessed]

The torch backend is the reference streamer in `human3r_edge.export.reference` (imported only when asked
for; the runtime itself never imports torch). Every other backend runs the torch-free runtime pipeline
(`runtime.commands.replay.replay_golden`) over `--engines DIR`: a NON-lean export (ONNX for ort-*, engines for trt) of the
golden's checkpoint at the golden's resolution; without it the golden's checkpoint is exported on the fly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from human3r_edge.runtime.backends import BACKENDS
from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.runtime.backends.capabilities import CudaContextProvider, Skinner, takes_device_feeds
from human3r_edge.runtime.commands.run import DEFAULT_CACHE, export_cached

# backend -> "module:function" with the signature of `replay` below (minus `backend`), imported lazily.
REPLAYERS: dict[str, str] = {
    "torch": "human3r_edge.export.reference:replay_golden",
    # the torch-free runtime pipeline (exports the golden's checkpoint on the fly, non-lean, cached)
    **{name: "human3r_edge.runtime.commands.replay:replay_golden" for name in ("ort-cpu", "ort-cuda", "ort-trt", "trt")},
}
REFERENCES = ("golden.npz", "golden_nottt3r.npz")


def replayer(backend: str) -> Callable[..., dict[str, np.ndarray]]:
    """The replay function of `backend`; a clear error for unknown or not-yet-wired backends."""
    if backend not in BACKENDS and backend not in REPLAYERS:
        raise Human3RError(msg("replay", "unknown backend", repr(backend), "one of " + ", ".join(BACKENDS)))
    if backend not in REPLAYERS:
        raise Human3RError(msg("replay", f"backend {backend} not wired yet", None,
                               "a REPLAYERS entry in human3r_edge/runtime/replay.py",
                               "use --backend torch, or register the runtime pipeline's replay function"))
    module, func = REPLAYERS[backend].split(":")
    return getattr(importlib.import_module(module), func)


def replay(golden: str | os.PathLike, backend: str = "torch", reference: str = "golden.npz",
           smplx_model: str | os.PathLike | None = None, preprocessed: bool = False,
           engines: str | os.PathLike | None = None, **options: Any) -> dict[str, np.ndarray]:
    """Replay golden folder `golden` with `backend` -> {golden key: array} (arrays owned by the caller).

    reference: which npz's meta/* settings to use (use_ttt3r, reset_interval, size, R).
    smplx_model: SMPL-X model file (default: the synthetic model next to the goldens).
    preprocessed: feed the golden's own preprocessed tensors instead of preprocessing the raw frames.
    engines: export / engine directory for the non-torch backends (default: export the golden's checkpoint).
    """
    gdir = Path(golden)
    if not gdir.is_dir():
        raise Human3RError(msg(f"golden {gdir}", "not a folder", hint="pass --golden path/to/goldens/tiny_a"))
    if reference not in REFERENCES:
        raise Human3RError(msg("replay", "unknown reference npz", repr(reference), " or ".join(REFERENCES)))
    if engines is not None:
        if backend == "torch":
            raise Human3RError(msg("replay --engines", "not used by the torch backend", str(engines),
                                   hint="the torch backend loads the golden's checkpoint.pth; drop --engines"))
        if not (Path(engines) / "export.json").is_file():
            raise Human3RError(msg(f"--engines {engines}", "not an export directory (no export.json)", None,
                                   "a folder written by `human3r-edge export` (without --lean) or `build`"))
        options["engines"] = Path(engines)
    return replayer(backend)(gdir, backend=backend, preprocessed=preprocessed, reference_npz=reference,
                             smplx_model=smplx_model, **options)


def save_outputs(path: str | os.PathLike, outputs: dict[str, np.ndarray]) -> Path:
    """Write `outputs` to an .npz atomically (temporary file, then rename)."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp.npz")
    savez: Any = np.savez  # numpy's stub types **kwds against allow_pickle
    savez(tmp, **outputs)
    os.replace(tmp, p)
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--golden", required=True, help="golden folder (holds checkpoint.pth, frames/, golden.npz)")
    parser.add_argument("--reference", default="golden.npz", choices=REFERENCES,
                        help="npz whose meta/* settings to replay (default golden.npz: TTT3R on)")
    parser.add_argument("--smplx-model", default=None,
                        help="SMPL-X model file (default: ../smplx_synthetic/SMPLX_NEUTRAL.npz next to the golden)")
    parser.add_argument("--backend", default="torch", choices=sorted(BACKENDS), help="backend (default torch)")
    parser.add_argument("--engines", default=None, metavar="DIR",
                        help="non-torch backends: a non-lean export (ONNX) or engine folder of the golden's "
                             "checkpoint at its resolution (default: exported on the fly, cached)")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--preprocessed", action="store_true",
                        help="feed the golden's preprocessed input/img and input/img_mhmr instead of raw frames")


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        outputs = replay(args.golden, args.backend, args.reference, args.smplx_model, args.preprocessed,
                         getattr(args, "engines", None))
        path = save_outputs(args.out, outputs)
    except Human3RError as exc:
        print(f"human3r-edge replay: error: {exc}", file=sys.stderr)
        return 2
    except BackendUnavailable as exc:
        print(f"human3r-edge replay: backend unavailable: {exc}", file=sys.stderr)
        return 3
    n_steps = int(outputs.get("meta/num_model_steps", -1))
    n_humans = int(np.asarray(outputs.get("step/n_humans", np.zeros(0))).sum())
    print(f"replay {args.golden} ({args.reference}, backend {args.backend}): {n_steps} steps, {n_humans} humans, "
          f"{len(outputs)} keys -> {path} in {time.perf_counter() - t0:.1f} s")
    return 0


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

    from human3r_edge.runtime import preprocess as pp
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.backends.base import ON_DEVICE
    from human3r_edge.runtime.geometry import rotmat_to_axis_angle, transform_points
    from human3r_edge.runtime.pipeline import FramePipeline, PipelineOptions
    from human3r_edge.runtime.smplx.skinning import SMPLXModel, project_points

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
        from human3r_edge.runtime.session import streaming_backend_options

        be_obj = open_backend(backend, export_dir, **streaming_backend_options(backend, backend_options))
    if isinstance(smplx_model, Skinner):
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
        if use_gpu and not takes_device_feeds(be):
            raise Human3RError(msg("replay: gpu_kernels", "backend has no device buffers", be.name,
                                   "trt, ort-cuda or ort-trt"))
        if use_gpu and isinstance(be, CudaContextProvider):
            be.ensure_cuda_context()  # the ORT GPU backends: pycuda in the context ONNX Runtime uses
        if use_gpu and not preprocessed:
            from human3r_edge.runtime.device_frames import GpuFramePreparer
            from human3r_edge.runtime.preprocess import read_rgb

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
            from human3r_edge.runtime.smplx.gpu import CudaSkinner

            skinner = be.adopt(CudaSkinner(model, be.spec.max_people))  # freed before the context goes
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
    from human3r_edge.runtime.geometry import pose_to_c2w

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

    from human3r_edge.runtime.preprocess import load_image

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
