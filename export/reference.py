"""The torch reference streamer: runs Human3R online, one frame at a time, exactly like the reference's
`inference_recurrent_lighter` + `demo.prepare_output`, and replays golden folders under their key names."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from human3r_edge.errors import Human3RError, msg

from human3r_edge.export.model import Human3R
from human3r_edge.export.model.detection import DETECTION_THRESHOLD, find_humans, nms
from human3r_edge.export.model.postprocess import pose_to_c2w
from human3r_edge.export.model.scene import chain_poses, rotmat_to_rotvec, transform_points, unpad_image, weiszfeld_focal
from human3r_edge.export.model.smplx_layer import SmplxLayer
from human3r_edge.export.model.tracking import Tracker

GOLDEN_THREADS = 2  # the goldens were recorded with 2 intra-op threads


@dataclass(frozen=True)
class StreamSettings:
    """How a sequence is run (the demo's flags)."""

    use_ttt3r: bool = True  # gate the state update with the TTT3R logit mean
    reset_interval: int = 100  # frame i with (i+1) % reset_interval == 0 ends a segment
    record_inter: bool = False  # also return intermediate tensors (inter/* golden keys)


def reset_schedule(num_frames: int, reset_interval: int) -> tuple[list[bool], list[int]]:
    """Per model step: reset flags, and the kept step of each frame.

    After every frame that ends a segment the demo appends a duplicate of it (same image, fresh state, pose
    token) whose output is dropped. Returns (reset flag per step, index of the step kept for each frame).
    """
    if reset_interval < 1:
        raise Human3RError(msg("reset_interval", "must be >= 1", reset_interval))
    flags: list[bool] = []
    kept: list[int] = []
    for i in range(num_frames):
        reset = (i + 1) % reset_interval == 0
        kept.append(len(flags))
        flags.append(reset)
        if reset:
            flags.append(False)  # the duplicate view
    return flags, kept


class ReferenceStreamer:
    """Owns the recurrent state, pose memory and tracks of one sequence; `step` runs one view (CPU, fp32).

    Tensors returned by `step` are new tensors owned by the caller (never the streamer's state buffers).
    """

    def __init__(self, model: Human3R, settings: StreamSettings = StreamSettings()) -> None:
        self.model = model.eval()
        self.settings = settings
        self.step_index = 0
        self.after_reset = False
        self.tracker = Tracker()
        with torch.inference_mode():
            state, mem = model.initial_state()
        self.init_state, self.init_mem = state.detach().clone(), mem.detach().clone()
        self.state, self.mem = self.init_state, self.init_mem

    @torch.inference_mode()
    def step(self, img: torch.Tensor, img_mhmr: torch.Tensor, reset: bool = False) -> dict[str, Any]:
        """One model step.

        img (1, 3, H, W) float32 in [-1, 1]; img_mhmr (1, 3, R, R) its padded square; reset: this view ends a
        segment (state and memory return to their initial values after it).
        Returns a dict with the golden's per-step names (without the `step/` prefix); human arrays have n rows.
        """
        m, cfg, st = self.model, self.model.cfg, self.settings
        H, W = int(img.shape[-2]), int(img.shape[-1])
        R, g = cfg.mhmr_img_res, cfg.mhmr_grid
        p = cfg.patch_size
        if img.ndim != 4 or img.shape[:2] != (1, 3) or H % p or W % p:
            raise Human3RError(msg("step: img", "incompatible shape", tuple(img.shape),
                                   f"(1, 3, H, W) with H and W multiples of {p}"))
        if tuple(img_mhmr.shape) != (1, 3, R, R):
            raise Human3RError(msg("step: img_mhmr", "incompatible shape", tuple(img_mhmr.shape), (1, 3, R, R)))
        enc = m.encode_image(img)  # (1, N, Ce)
        dino = m.encode_human(img_mhmr)  # (1, g*g, bd)
        scores, offsets = m.detect(dino)  # (1, g, g), (1, g, g, 2)
        mask = m.human_mask(dino)  # (1, R, R)
        scores = nms(scores)
        det = find_humans(scores[0], offsets[0], R, H, W, cfg.backbone_spec.patch_size, cfg.patch_size,
                          DETECTION_THRESHOLD)
        n = int(det.h.numel())
        dino_h, enc_h, hpos = m.gather_humans(enc, dino, det.cells(g), det.patches(W // cfg.patch_size), W)
        prompts = m.fuse_humans(dino_h, enc_h)  # (1, n, D)

        first = self.step_index == 0 or self.after_reset
        state_in, mem_in = self.state, self.mem
        pose_q = m.pose_query(enc, mem_in, first)  # (1, 1, D)
        dec = m.decode(enc, pose_q, state_in, H, W, prompts, hpos, ttt3r=st.use_ttt3r)
        new_mem = m.update_mem(mem_in, enc, dec.final_tokens[:, 0:1])
        heads = m.heads(dec.hooks, H, W)
        out: dict[str, Any] = {
            "pts3d_in_self_view": heads["pts3d_self"][0], "conf_self": heads["conf_self"][0],
            "pts3d_in_other_view": heads["pts3d_other"][0], "conf": heads["conf_other"][0],
            "rgb": heads["rgb"][0], "camera_pose": heads["camera_pose"][0],
            "camera_pose_c2w_4x4": pose_to_c2w(heads["camera_pose"])[0],
            "smpl_scores": scores[0, :, :, None], "msk": mask[0, :, :, None], "n_humans": n,
            "smpl_loc": det.loc,
        }
        N = enc.shape[1]
        human_tokens = dec.final_tokens[:, 1 + N:]  # (1, n, D)
        if n > 0:
            rotmat, betas, expression, transl = m.smpl_heads(human_tokens, dino_h)
            out.update(smpl_rotmat=rotmat[0], smpl_shape=betas[0], smpl_expression=expression[0],
                       smpl_transl=transl[0], smpl_id=self.tracker.update(human_tokens))
        else:
            out.update(smpl_rotmat=torch.zeros(0, 53, 3, 3), smpl_shape=torch.zeros(0, 10),
                       smpl_expression=torch.zeros(0, 10), smpl_transl=torch.zeros(0, 3),
                       smpl_id=torch.zeros(0, dtype=torch.int64))
        gate = st.use_ttt3r and not first
        self.state = m.next_state(state_in, dec.new_state, dec.ttt3r_logit_mean, gate)
        self.mem = new_mem
        if reset:
            self.state, self.mem = self.init_state, self.init_mem
        self.after_reset = reset
        self.step_index += 1
        if st.record_inter:
            out["inter"] = {
                "enc_tokens": enc[0], "mhmr_tokens": dino[0], "state_in": state_in[0].clone(),
                "mem_in": mem_in[0].clone(),
                "decoder_new_state": dec.new_state[0].clone(), "pose_query": pose_q[0].clone(),
                "dec_last_tokens": dec.final_tokens[0], "smpl_query_fused": prompts[0],
                "smpl_pos": hpos[0],
            }
            if dec.ttt3r_logit_mean is not None:
                out["inter"]["ttt3r_gate_sigmoid"] = torch.sigmoid(dec.ttt3r_logit_mean)[0]
        return out

    def final_state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of (state (1, S, D), mem (1, M, 2D)) after the last step."""
        return self.state.clone(), self.mem.clone()


# ============================================================================================ sequences
def run_sequence(model: Human3R, imgs: torch.Tensor, imgs_mhmr: torch.Tensor, settings: StreamSettings,
                 smplx_layer: SmplxLayer | None = None, steps_given: bool = False) -> dict[str, np.ndarray]:
    """Run a whole sequence and return every golden key (`meta/`, `step/`, `demo/`, `smplx/`, `inter/`).

    imgs (F, 3, H, W), imgs_mhmr (F, 3, R, R): one per frame, or one per model step if `steps_given`
    (the golden's own inputs, duplicates included). Without an SMPL-X layer the smplx/* keys are omitted.
    """
    n_in = int(imgs.shape[0])
    if steps_given:
        flags, kept = _schedule_from_steps(n_in, settings.reset_interval)
        views = list(range(n_in))
    else:
        flags, kept = reset_schedule(n_in, settings.reset_interval)
        views = []
        for i in range(n_in):
            views.append(i)
            if (i + 1) % settings.reset_interval == 0:
                views.append(i)
    streamer = ReferenceStreamer(model, settings)
    steps = []
    for s, v in enumerate(views):
        steps.append(streamer.step(imgs[v:v + 1], imgs_mhmr[v:v + 1], reset=flags[s]))
    out = collect_steps(steps, flags, kept, settings)
    if settings.record_inter:
        state, mem = streamer.final_state()
        out["inter/state_final"] = state.numpy().copy()
        out["inter/mem_final"] = mem.numpy().copy()
        H, W = int(imgs.shape[-2]), int(imgs.shape[-1])
        out["inter/img_pos"] = model.image_positions(H, W).numpy()
        out["inter/state_pos"] = model.state_positions().numpy()
    out.update(demo_outputs(steps, flags, kept, smplx_layer))
    return out


def _schedule_from_steps(num_steps: int, reset_interval: int) -> tuple[list[bool], list[int]]:
    """The reset schedule of a sequence given as model steps (frames + duplicates)."""
    frames = 0
    while len(reset_schedule(frames, reset_interval)[0]) < num_steps:
        frames += 1
    flags, kept = reset_schedule(frames, reset_interval)
    if len(flags) != num_steps:
        raise Human3RError(msg("inputs", "step count does not fit the reset schedule", num_steps,
                               f"frames + one duplicate per reset (reset_interval={reset_interval})"))
    return flags, kept


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def collect_steps(steps: list[dict], flags: list[bool], kept: list[int], settings: StreamSettings
                  ) -> dict[str, np.ndarray]:
    """Stack per-step dicts into the golden's `meta/`, `step/` and `inter/` arrays."""
    out: dict[str, np.ndarray] = {
        "meta/num_model_steps": np.array(len(steps), np.int64),
        "meta/reset_flags_per_step": np.array(flags, bool),
        "meta/kept_step_index": np.array(kept, np.int64),
        "meta/use_ttt3r": np.array(settings.use_ttt3r, bool),
        "meta/detection_threshold": np.array(DETECTION_THRESHOLD, np.float32),
        "meta/reset_interval": np.array(settings.reset_interval, np.int64),
    }
    dense = ["pts3d_in_self_view", "conf_self", "pts3d_in_other_view", "conf", "rgb", "camera_pose",
             "smpl_scores", "msk", "camera_pose_c2w_4x4"]
    for k in dense:
        out[f"step/{k}"] = np.stack([_np(s[k]) for s in steps]).astype(np.float32)
    out["step/n_humans"] = np.array([s["n_humans"] for s in steps], np.int64)
    out["step/human_step_index"] = np.repeat(np.arange(len(steps)), out["step/n_humans"]).astype(np.int64)
    for k in ("smpl_loc", "smpl_shape", "smpl_transl", "smpl_rotmat", "smpl_expression"):
        out[f"step/{k}"] = np.concatenate([_np(s[k]) for s in steps]).astype(np.float32)
    out["step/smpl_id"] = np.concatenate([_np(s["smpl_id"]) for s in steps]).astype(np.int64)
    if settings.record_inter:
        inter = [s["inter"] for s in steps]
        for k in ("enc_tokens", "mhmr_tokens", "state_in", "mem_in", "decoder_new_state", "pose_query"):
            out[f"inter/{k}"] = np.stack([_np(d[k]) for d in inter]).astype(np.float32)
        out["inter/dec_last_tokens_concat"] = np.concatenate([_np(d["dec_last_tokens"]) for d in inter])
        out["inter/dec_last_tokens_len"] = np.array([d["dec_last_tokens"].shape[0] for d in inter], np.int64)
        out["inter/smpl_query_fused"] = np.concatenate([_np(d["smpl_query_fused"]) for d in inter])
        out["inter/smpl_pos"] = np.concatenate([_np(d["smpl_pos"]) for d in inter]).astype(np.int64)
        if all("ttt3r_gate_sigmoid" in d for d in inter):
            out["inter/ttt3r_gate_sigmoid"] = np.stack([_np(d["ttt3r_gate_sigmoid"]) for d in inter])
    return out


def _unpad(square: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(R, R, 1) map of the padded square -> (1, height, width)."""
    return unpad_image(square[None, None, :, :, 0], height, width)[0]


def demo_outputs(steps: list[dict], flags: list[bool], kept: list[int], smplx_layer: SmplxLayer | None
                 ) -> dict[str, np.ndarray]:
    """`demo.prepare_output` on the kept steps: chained poses, world points, Weiszfeld focal, intrinsics,
    unpadded maps, rotation vectors, and (with an SMPL-X layer) meshes in camera and world coordinates."""
    ks = [steps[i] for i in kept]
    reset = torch.tensor([flags[i] for i in kept], dtype=torch.bool)
    pts_self = torch.stack([s["pts3d_in_self_view"] for s in ks])  # (F, H, W, 3)
    F_, H, W, _ = pts_self.shape
    c2w = chain_poses(torch.stack([s["camera_pose_c2w_4x4"] for s in ks]), reset)  # (F, 4, 4)
    pp = torch.tensor([W // 2, H // 2]).float().repeat(F_, 1)  # (F, 2)
    focal = weiszfeld_focal(pts_self, pp)  # (F,)
    K = torch.eye(3).unsqueeze(0).repeat(F_, 1, 1)
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal
    K[:, 0, 2] = pp[:, 0]
    K[:, 1, 2] = pp[:, 1]
    world = torch.cat([transform_points(c2w[f:f + 1], pts_self[f:f + 1]) for f in range(F_)])
    out: dict[str, Any] = {
        "demo/pts3d_world": world, "demo/focal": focal, "demo/pp": pp, "demo/R_c2w": c2w[:, :3, :3],
        "demo/t_c2w": c2w[:, :3, 3], "demo/cam2world": c2w, "demo/intrinsics": K,
        "demo/msk": torch.cat([_unpad(s["msk"], H, W) for s in ks]),
        "demo/smpl_scores_fullres": torch.cat([_unpad(s["smpl_scores"], H, W) for s in ks]),
    }
    n_h = [int(s["n_humans"]) for s in ks]
    out["demo/n_humans"] = np.array(n_h, np.int64)
    out["demo/human_frame_index"] = np.repeat(np.arange(F_), n_h).astype(np.int64)
    out["demo/smpl_id"] = np.concatenate([_np(s["smpl_id"]) for s in ks]).astype(np.int64)
    rotvecs = [rotmat_to_rotvec(s["smpl_rotmat"]) if s["n_humans"] else torch.zeros(0, 53, 3) for s in ks]
    out["demo/smpl_rotvec"] = torch.cat(rotvecs)
    if smplx_layer is not None:
        meshes: dict[str, list[torch.Tensor]] = {k: [] for k in ("v3d_cam", "j3d_cam", "j2d", "transl_pelvis",
                                                                  "v3d_world", "j3d_world")}
        for f, s in enumerate(ks):
            n = n_h[f]
            if n == 0:
                continue
            with torch.inference_mode():
                res = smplx_layer(rotvecs[f], s["smpl_shape"], s["smpl_transl"], K[f].expand(n, -1, -1),
                                  s["smpl_expression"])
            meshes["v3d_cam"].append(res["v3d"])
            meshes["j3d_cam"].append(res["j3d"])
            meshes["j2d"].append(res["j2d"])
            meshes["transl_pelvis"].append(res["transl_pelvis"])
            meshes["v3d_world"].append(transform_points(c2w[f:f + 1], res["v3d"].unsqueeze(0))[0])
            meshes["j3d_world"].append(transform_points(c2w[f:f + 1], res["j3d"].unsqueeze(0))[0])
        nv = int(smplx_layer.model.get_num_verts())
        empty = {"v3d_cam": (0, nv, 3), "j3d_cam": (0, 127, 3), "j2d": (0, 127, 2), "transl_pelvis": (0, 3),
                 "v3d_world": (0, nv, 3), "j3d_world": (0, 127, 3)}
        for k, parts in meshes.items():
            out[f"smplx/{k}"] = torch.cat(parts) if parts else torch.zeros(empty[k])
        out["smplx/faces"] = smplx_layer.faces
    return {k: (_np(v).astype(np.float32) if _np(v).dtype == np.float64 else _np(v)) for k, v in out.items()}


# ============================================================================================ golden replay
def golden_settings(golden_dir: str | Path, reference_npz: str = "golden.npz") -> tuple[StreamSettings, dict]:
    """Settings of a golden run from its `meta/*` keys: (StreamSettings, meta dict of numpy values)."""
    path = Path(golden_dir) / reference_npz
    if not path.is_file():
        raise Human3RError(msg(f"golden {golden_dir}", "reference npz not found", str(path),
                               "golden.npz or golden_nottt3r.npz"))
    with np.load(path, allow_pickle=False) as z:
        meta = {k: z[k] for k in z.files if k.startswith("meta/")}
    need = ("meta/use_ttt3r", "meta/reset_interval", "meta/size_arg", "meta/mhmr_img_res")
    missing = [k for k in need if k not in meta]
    if missing:
        raise Human3RError(msg(str(path), "missing meta keys", missing))
    settings = StreamSettings(use_ttt3r=bool(meta["meta/use_ttt3r"]),
                              reset_interval=int(meta["meta/reset_interval"]), record_inter=True)
    return settings, meta


def default_smplx_model(golden_dir: str | Path) -> Path:
    """The synthetic SMPL-X model the goldens were made with: ../smplx_synthetic/SMPLX_NEUTRAL.npz."""
    return Path(golden_dir).resolve().parent / "smplx_synthetic" / "SMPLX_NEUTRAL.npz"


def _golden_inputs(golden_dir: Path, preprocessed: bool, size: int, side: int
                   ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(imgs, imgs_mhmr, per_step): the golden's own tensors (one per step) or freshly preprocessed frames."""
    if preprocessed:
        with np.load(golden_dir / "golden.npz", allow_pickle=False) as z:
            if "input/img" not in z.files or "input/img_mhmr" not in z.files:
                raise Human3RError(msg(f"golden {golden_dir}", "golden.npz lacks input/img or input/img_mhmr",
                                       hint="run without --preprocessed to preprocess the raw frames"))
            return torch.from_numpy(z["input/img"].copy()), torch.from_numpy(z["input/img_mhmr"].copy()), True
    try:
        from human3r_edge.runtime.preprocess import load_image, pad_image
    except ImportError as exc:
        raise Human3RError(msg("replay", "raw-frame preprocessing is unavailable", repr(exc),
                               hint="use --preprocessed")) from exc
    frames = sorted(p for p in (golden_dir / "frames").iterdir()
                    if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not frames:
        raise Human3RError(msg(f"golden {golden_dir}", "no frames", str(golden_dir / "frames")))
    imgs = np.stack([load_image(p, size) for p in frames])  # (F, 3, H, W)
    mhmr = np.stack([pad_image(im, side)[0] for im in imgs])  # (F, 3, R, R)
    return torch.from_numpy(imgs), torch.from_numpy(mhmr), False


def replay_golden(golden_dir: str | Path, backend: str = "torch", preprocessed: bool = False,
                  reference_npz: str = "golden.npz", smplx_model: str | Path | None = None,
                  model: Human3R | None = None) -> dict[str, np.ndarray]:
    """Replay a golden folder online and return every `meta/`, `step/`, `demo/`, `smplx/` and `inter/` key
    under the golden's names, shapes and dtypes (numpy arrays owned by the caller).

    Settings come from `reference_npz`'s meta keys. `model`: an already loaded model (else the folder's
    checkpoint.pth is loaded through the safe checkpoint loader).
    """
    if backend != "torch":
        raise Human3RError(msg("replay_golden", "only the torch backend runs here", repr(backend),
                               "'torch'", "other backends go through human3r_edge.runtime.commands.replay"))
    gdir = Path(golden_dir)
    settings, meta = golden_settings(gdir, reference_npz)
    if model is None:
        from human3r_edge.export.checkpoint import load_model

        loaded, _ = load_model(gdir / "checkpoint.pth")
        if not isinstance(loaded, Human3R):
            raise Human3RError(msg("replay_golden", "the loader returned another model type", type(loaded).__name__))
        model = loaded
    size, side = int(meta["meta/size_arg"]), int(meta["meta/mhmr_img_res"])
    if side != model.cfg.mhmr_img_res:
        raise Human3RError(msg(f"golden {gdir}", "MHMR resolution differs from the model's", side,
                               model.cfg.mhmr_img_res))
    imgs, imgs_mhmr, per_step = _golden_inputs(gdir, preprocessed, size, side)
    smplx_path = Path(smplx_model) if smplx_model is not None else default_smplx_model(gdir)
    layer = SmplxLayer(smplx_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(GOLDEN_THREADS)
    try:
        out = run_sequence(model, imgs, imgs_mhmr, settings, layer, steps_given=per_step)
    finally:
        torch.set_num_threads(threads)
    out["meta/size_arg"] = np.array(size, np.int64)
    out["meta/mhmr_img_res"] = np.array(side, np.int64)
    return out
