"""Write each track of a run folder as a BVH skeleton animation (pure text, no dependency).

One file per track, `track_NNNN.bvh`, plus `track_NNNN.json` (which frames are real):
  - skeleton: the 22 SMPL-X body joints (pelvis root, 21 body joints), with `hands` also the 30 finger joints
    under the wrists; OFFSETs are the rest-joint offsets of the track's baked shape (mean betas and
    expression), in metres, in SMPL-X model axes (y up: the rest pose stands upright);
  - motion: the root has `Xposition Yposition Zposition Zrotation Xrotation Yrotation`, every other joint
    `Zrotation Xrotation Yrotation` (degrees; R = Rz . Rx . Ry, as BVH applies channels in order);
    the root position is the pelvis and the root rotation maps the body into a Y-up world
    (the run's OpenCV world turned 180 degrees about x: x right, y up, z toward the first camera);
  - frames: every run frame from the track's first to its last appearance (within --frames), Frame Time =
    the run's frame interval. Gaps (frames where the track is absent) HOLD the last seen pose; the sidecar
    JSON lists `frame_index` (source frame number of each BVH frame) and `present` (false in the gaps).
Forward kinematics of the file gives our skeleton joints (SMPL-X with the baked shape) in that Y-up world.
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from human3r_edge.runtime.outputs.atomic import atomic_write
from human3r_edge.runtime.convert.body import BODY_JOINTS, CV_TO_YUP, HAND_JOINTS, JOINT_NAMES, baked_coeffs, rest_shape, world_transforms
from human3r_edge.runtime.convert.run_folder import RunFolder


@dataclass
class BvhReport:
    path: Path
    tracks: int = 0
    frames: int = 0
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def euler_zxy(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> (..., 3) angles (z, x, y) in degrees with R = Rz(z) . Rx(x) . Ry(y)."""
    x = np.arcsin(np.clip(R[..., 2, 1], -1.0, 1.0))
    z = np.arctan2(-R[..., 0, 1], R[..., 1, 1])
    y = np.arctan2(-R[..., 2, 0], R[..., 2, 2])
    near_lock = np.abs(R[..., 2, 1]) > 1.0 - 1e-9  # cos x ~ 0: z and y mix; put it all in z
    if near_lock.any():
        z = np.where(near_lock, np.arctan2(R[..., 1, 0], R[..., 0, 0]), z)
        y = np.where(near_lock, 0.0, y)
    return np.degrees(np.stack([z, x, y], -1))


def skeleton_joints(parents: np.ndarray, hands: bool) -> list[int]:
    """SMPL-X joint ids in the BVH, parents first (model order)."""
    return list(range(BODY_JOINTS)) + (list(HAND_JOINTS) if hands else [])


def _hierarchy(joints: list[int], parents: np.ndarray, rest: np.ndarray) -> str:
    children: dict[int, list[int]] = {j: [] for j in joints}
    for j in joints[1:]:
        children[int(parents[j])].append(j)
    buf = io.StringIO()
    buf.write("HIERARCHY\n")

    def emit(j: int, depth: int) -> None:
        ind = "  " * depth
        p = int(parents[j])
        off = np.zeros(3) if p < 0 else rest[j] - rest[p]
        buf.write(f"{ind}{'ROOT' if p < 0 else 'JOINT'} {JOINT_NAMES[j]}\n{ind}{{\n")
        buf.write(f"{ind}  OFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}\n")
        chans = ("6 Xposition Yposition Zposition " if p < 0 else "3 ") + "Zrotation Xrotation Yrotation"
        buf.write(f"{ind}  CHANNELS {chans}\n")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:  # a leaf: an end site half the joint's own offset further on
            e = 0.5 * off if np.linalg.norm(off) > 0 else np.array([0.0, 0.05, 0.0])
            buf.write(f"{ind}  End Site\n{ind}  {{\n{ind}    OFFSET {e[0]:.6f} {e[1]:.6f} {e[2]:.6f}\n{ind}  }}\n")
        buf.write(f"{ind}}}\n")

    emit(joints[0], 0)
    return buf.getvalue()


def write_bvh(rf: RunFolder, model, out: Path, hands: bool = False) -> BvhReport:
    """Write one BVH (+ sidecar JSON) per track of `rf` into the folder `out`. `model`: an SMPLXModel."""
    rep = BvhReport(out)
    if not rf.tracks:
        rep.notes.append("no tracks to write")
        return rep
    out.mkdir(parents=True, exist_ok=True)
    run_idx = np.array([f.index for f in rf.frames], np.int64)
    frame_time = 1.0 / rf.fps
    if run_idx.size >= 2:
        frame_time *= float(np.median(np.diff(run_idx)))  # --stride runs: one BVH frame per processed frame
    joints = skeleton_joints(model.parents, hands)
    for tid, track in sorted(rf.tracks.items()):
        shape = rest_shape(model, baked_coeffs(track))
        R, W = world_transforms(model.parents, shape.joints, track)
        lo, hi = int(track.frame_index.min()), int(track.frame_index.max())
        frames = run_idx[(run_idx >= lo) & (run_idx <= hi)]
        frames = np.union1d(frames, track.frame_index)  # frames the cameras.json flush missed
        # for each BVH frame, the last track frame at or before it (hold in gaps)
        src = np.searchsorted(track.frame_index, frames, side="right") - 1
        present = np.isin(frames, track.frame_index)
        root_rot = CV_TO_YUP @ W[src, 0, :3, :3]  # (N, 3, 3)
        root_pos = W[src, 0, :3, 3] @ CV_TO_YUP.T
        ang = euler_zxy(R[src][:, joints])  # (N, J, 3), root entry replaced below
        ang[:, 0] = euler_zxy(root_rot)
        motion = np.concatenate([root_pos, ang.reshape(len(frames), -1)], 1)
        buf = io.StringIO()
        buf.write(_hierarchy(joints, model.parents, shape.joints))
        buf.write(f"MOTION\nFrames: {len(frames)}\nFrame Time: {frame_time:.8f}\n")
        np.savetxt(buf, motion, fmt="%.6f")
        name = out / f"track_{tid:04d}.bvh"
        atomic_write(name, buf.getvalue())
        side = {"track_id": tid, "frame_index": frames.tolist(), "present": present.tolist(),
                "gaps": "hold the last seen pose", "units": "metres", "world": "y up (OpenCV world rotated 180 "
                "degrees about x)", "betas": shape.coeffs[:10].tolist(), "expression": shape.coeffs[10:].tolist()}
        atomic_write(name.with_suffix(".json"), json.dumps(side, indent=1))
        rep.files += [name, name.with_suffix(".json")]
        rep.tracks += 1
        rep.frames += len(frames)
        if not present.all():
            rep.notes.append(f"track {tid}: {int((~present).sum())} of {len(frames)} frames are gaps (last pose "
                             "held; see the .json sidecar)")
    if not math.isfinite(frame_time) or frame_time <= 0:
        rep.notes.append("frame time unknown")
    return rep
