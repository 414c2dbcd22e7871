"""Write a run folder as one glTF 2.0 binary (.glb): skinned animated SMPL-X per track, camera path, point cloud.

Pure numpy + json, no dependency. Layout of the scene:

    world            rotation 180 deg about x: the run's OpenCV world (y down, z forward) -> glTF's Y-up
      camera           perspective camera; translation/rotation animated per frame (c2w, glTF looks down -z)
      points           the scene point cloud (POINTS primitive, COLOR_0), decimated to `max_points`
      track_NNNN       scale animated with STEP: 1 where the track is present, 0 in its gaps (hidden)
        pelvis ... right_thumb3   55 joints; the pelvis carries the root transform (c2w . Human3R's head-anchored
                                  global rotation + translation), the others their local rotations (LINEAR)
    track_NNNN_mesh  skinned mesh (at the scene root, as glTF asks): the track's baked shape (mean betas and
                     expression) in the rest pose, JOINTS_n/WEIGHTS_n sets holding every non-zero SMPL-X weight,
                     inverse bind matrices [I | -J_j]

glTF skinning is linear blend skinning: SMPL-X's pose-corrective blend shapes are not carried (the vertices equal
SMPL-X with correctives off; see docs/viewer-and-exports.md for the measured distance to the full mesh).
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from human3r_edge.runtime.geometry import matrix_to_quaternion
from human3r_edge.runtime.outputs.atomic import atomic_write
from human3r_edge.runtime.outputs.preview import track_color
from human3r_edge.runtime.smplx.constants import HUMAN3R_ROT_JOINTS, NUM_JOINTS
from human3r_edge.runtime.convert.body import CV_TO_YUP, JOINT_NAMES, baked_coeffs, rest_shape, world_transforms
from human3r_edge.runtime.convert.run_folder import RunFolder

# glTF enums
FLOAT, UBYTE, USHORT, UINT = 5126, 5121, 5123, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
_NP = {FLOAT: np.float32, UBYTE: np.uint8, USHORT: np.uint16, UINT: np.uint32}
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}
_ROT_JOINTS = sorted(set(HUMAN3R_ROT_JOINTS[1:].tolist()))  # joints with a rotation channel (not root, not eyes)


@dataclass
class GlbReport:
    """What was written: counts for the one-line summary."""

    path: Path
    tracks: int = 0
    frames: int = 0
    track_frames: int = 0
    points: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)


class _Builder:
    """Accumulates the JSON document and one binary buffer (4-byte aligned views)."""

    def __init__(self) -> None:
        self.doc: dict = {"asset": {"version": "2.0", "generator": "human3r-edge convert"},
                          "scene": 0, "scenes": [{"nodes": []}], "nodes": [], "meshes": [], "accessors": [],
                          "bufferViews": [], "buffers": []}
        self.chunks: list[bytes] = []
        self.offset = 0

    def accessor(self, a: np.ndarray, ctype: int, target: int | None = None, minmax: bool = False,
                 normalized: bool = False) -> int:
        """Add array `a` (N, k) or (N,) (MAT4: (N, 4, 4) column-major already) as one view + accessor."""
        arr = np.ascontiguousarray(a, _NP[ctype])
        n = arr.shape[0]
        k = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
        data = arr.tobytes()
        view: dict = {"buffer": 0, "byteOffset": self.offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.doc["bufferViews"].append(view)
        pad = (-len(data)) % 4
        self.chunks.append(data + b"\0" * pad)
        self.offset += len(data) + pad
        acc: dict = {"bufferView": len(self.doc["bufferViews"]) - 1, "componentType": ctype, "count": n,
                     "type": _TYPES[k]}
        if normalized:
            acc["normalized"] = True
        if minmax:
            flat = arr.reshape(n, k)
            acc["min"] = [v.item() for v in flat.min(0)]
            acc["max"] = [v.item() for v in flat.max(0)]
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    def node(self, **kw) -> int:
        self.doc["nodes"].append({k: v for k, v in kw.items() if v is not None})
        return len(self.doc["nodes"]) - 1

    def glb(self) -> bytes:
        binary = b"".join(self.chunks)
        self.doc["buffers"] = [{"byteLength": len(binary)}]
        for key in ("meshes", "accessors", "bufferViews", "skins", "animations", "cameras", "materials"):
            if key in self.doc and not self.doc[key]:
                del self.doc[key]
        js = json.dumps(self.doc, separators=(",", ":")).encode()
        js += b" " * ((-len(js)) % 4)
        total = 12 + 8 + len(js) + 8 + len(binary)
        return (struct.pack("<III", 0x46546C67, 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
                + struct.pack("<II", len(binary), 0x004E4942) + binary)


def _quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> glTF quaternions (..., 4) xyzw, sign-continuous along axis 0."""
    q = matrix_to_quaternion(R)[..., [1, 2, 3, 0]]
    for i in range(1, q.shape[0]):  # slerp takes the short way only if neighbours share a hemisphere
        flip = np.sum(q[i] * q[i - 1], axis=-1) < 0
        q[i][flip] *= -1
    return q


def _skin_sets(weights_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SMPL-X weights (55, V) -> joints (V, 4n) uint8 and weights (V, 4n) float32 holding every non-zero weight
    (n = ceil(max non-zeros per vertex / 4)), largest first; unused slots are joint 0 with weight 0."""
    w = np.asarray(weights_t, np.float64).T  # (V, 55)
    nnz = int((w > 0).sum(1).max())
    slots = 4 * max(1, math.ceil(nnz / 4))
    order = np.argsort(-w, axis=1, kind="stable")[:, :slots]
    ww = np.take_along_axis(w, order, 1)
    jj = np.where(ww > 0, order, 0).astype(np.uint8)
    ww = ww / ww.sum(1, keepdims=True)  # float64 renormalisation, so the float32 sums stay within 1 +- 1e-7
    return jj, ww.astype(np.float32)


def write_glb(rf: RunFolder, model, out: Path, points: bool = True, max_points: int = 500_000) -> GlbReport:
    """Write `rf` (already restricted to the chosen tracks/frames) as a .glb at `out`. `model`: an SMPLXModel,
    needed when rf has tracks (None otherwise)."""
    b = _Builder()
    rep = GlbReport(out)
    times_all = rf.times()
    t0 = float(times_all[0]) if times_all.size else 0.0
    time_of = {f.index: float(t - t0) for f, t in zip(rf.frames, times_all)}
    world = b.node(name="world", rotation=[1.0, 0.0, 0.0, 0.0], children=[])
    b.doc["scenes"][0]["nodes"].append(world)
    channels: list[dict] = []
    samplers: list[dict] = []

    def animate(node: int, path: str, times: np.ndarray, values: np.ndarray, interp: str = "LINEAR") -> None:
        inp = b.accessor(times.astype(np.float32), FLOAT, minmax=True)
        outp = b.accessor(values.astype(np.float32), FLOAT)
        samplers.append({"input": inp, "output": outp, "interpolation": interp})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path}})

    # ---- camera path
    if rf.frames:
        rep.frames = len(rf.frames)
        ok = [f for f in rf.frames if f.focal_ok]
        if rf.height and ok:
            f_med = float(np.median([f.K[1, 1] for f in ok]))
            yfov = 2.0 * math.atan(rf.height / (2.0 * f_med))
        else:
            yfov = math.radians(60.0)
            rep.notes.append("no valid focal in cameras.json: the glTF camera has a 60-degree FOV")
        aspect = rf.width / rf.height if rf.height else 4.0 / 3.0
        b.doc["cameras"] = [{"type": "perspective", "name": "camera",
                             "perspective": {"yfov": yfov, "aspectRatio": aspect, "znear": 0.01}}]
        c2w = np.stack([f.c2w for f in rf.frames])
        rot = _quat_xyzw(c2w[:, :3, :3] @ CV_TO_YUP)  # glTF cameras look down -z with +y up
        cam = b.node(name="camera", camera=0, translation=c2w[0, :3, 3].tolist(), rotation=rot[0].tolist())
        b.doc["nodes"][world]["children"].append(cam)
        t = np.array([time_of[f.index] for f in rf.frames])
        if len(rf.frames) > 1:
            animate(cam, "translation", t, c2w[:, :3, 3])
            animate(cam, "rotation", t, rot)

    # ---- point cloud
    if points:
        pts, col = rf.scene_points()
        if pts.shape[0] > max_points:
            keep = np.sort(np.random.default_rng(0).choice(pts.shape[0], max_points, replace=False))
            rep.notes.append(f"point cloud decimated {pts.shape[0]} -> {max_points} (--max-points)")
            pts, col = pts[keep], col[keep]
        if pts.shape[0]:
            pos = b.accessor(pts, FLOAT, ARRAY_BUFFER, minmax=True)
            rgba = np.concatenate([col, np.full((col.shape[0], 1), 255, np.uint8)], 1)  # 4-byte aligned
            colr = b.accessor(rgba, UBYTE, ARRAY_BUFFER, normalized=True)
            b.doc["meshes"].append({"name": "points", "primitives": [
                {"attributes": {"POSITION": pos, "COLOR_0": colr}, "mode": 0}]})
            b.doc["nodes"][world]["children"].append(b.node(name="points", mesh=len(b.doc["meshes"]) - 1))
            rep.points = int(pts.shape[0])

    # ---- people
    if rf.tracks:
        faces = np.asarray(model.faces)
        idx = b.accessor(faces.reshape(-1), USHORT if faces.max() < 65535 else UINT, ELEMENT_ARRAY_BUFFER)
        jj, ww = _skin_sets(model.weights_t)
        attrs: dict[str, int] = {}
        for s in range(jj.shape[1] // 4):
            attrs[f"JOINTS_{s}"] = b.accessor(jj[:, 4 * s:4 * s + 4], UBYTE, ARRAY_BUFFER)
            attrs[f"WEIGHTS_{s}"] = b.accessor(ww[:, 4 * s:4 * s + 4], FLOAT, ARRAY_BUFFER)
        b.doc["skins"], b.doc["materials"] = [], []
        all_t = np.array([time_of[f.index] for f in rf.frames]) if rf.frames else None
        for tid, track in sorted(rf.tracks.items()):
            shape = rest_shape(model, baked_coeffs(track))
            R, W = world_transforms(model.parents, shape.joints, track)
            tnode = b.node(name=f"track_{tid:04d}", children=[])
            b.doc["nodes"][world]["children"].append(tnode)
            jnodes = []
            for j in range(NUM_JOINTS):  # parents precede children: node ids in SMPL-X order
                p = int(model.parents[j])
                tr = (shape.joints[j] - shape.joints[p]) if p >= 0 else W[0, 0, :3, 3]
                rq = _quat_xyzw(W[:1, 0, :3, :3])[0] if p < 0 else _quat_xyzw(R[:1, j])[0]
                n = b.node(name=f"track_{tid:04d}/{JOINT_NAMES[j]}", translation=tr.tolist(), rotation=rq.tolist())
                jnodes.append(n)
                parent = tnode if p < 0 else jnodes[p]
                b.doc["nodes"][parent].setdefault("children", []).append(n)
            t = np.array([time_of.get(int(i), np.nan) for i in track.frame_index])
            if np.isnan(t).any():  # track frames missing from cameras.json (interrupted run): own timestamps
                fps = rf.fps
                t = np.where(np.isnan(t), track.frame_index / fps - t0, t)
            if len(t) > 1:
                animate(jnodes[0], "translation", t, W[:, 0, :3, 3])
                animate(jnodes[0], "rotation", t, _quat_xyzw(W[:, 0, :3, :3]))
                for j in _ROT_JOINTS:
                    animate(jnodes[j], "rotation", t, _quat_xyzw(R[:, j]))
            # visibility: scale 1 at the track's frames, 0 elsewhere (STEP: no interpolation across a gap)
            if all_t is not None and all_t.size > 1:
                present = np.isin([f.index for f in rf.frames], track.frame_index).astype(np.float64)
                animate(tnode, "scale", all_t, np.repeat(present[:, None], 3, 1), "STEP")
                if not present[0]:
                    b.doc["nodes"][tnode]["scale"] = [0.0, 0.0, 0.0]
            ibm = np.broadcast_to(np.eye(4), (NUM_JOINTS, 4, 4)).copy()
            ibm[:, :3, 3] = -shape.joints
            b.doc["skins"].append({"name": f"track_{tid:04d}", "joints": jnodes, "skeleton": jnodes[0],
                                   "inverseBindMatrices": b.accessor(ibm.transpose(0, 2, 1), FLOAT)})
            r, g, bl = track_color(tid)
            b.doc["materials"].append({"name": f"track_{tid:04d}", "doubleSided": True, "pbrMetallicRoughness": {
                "baseColorFactor": [r / 255, g / 255, bl / 255, 1.0], "metallicFactor": 0.0,
                "roughnessFactor": 0.8}})
            pos = b.accessor(shape.vertices, FLOAT, ARRAY_BUFFER, minmax=True)
            b.doc["meshes"].append({"name": f"track_{tid:04d}", "primitives": [
                {"attributes": {"POSITION": pos, **attrs}, "indices": idx,
                 "material": len(b.doc["materials"]) - 1}]})
            mnode = b.node(name=f"track_{tid:04d}_mesh", mesh=len(b.doc["meshes"]) - 1,
                           skin=len(b.doc["skins"]) - 1)
            b.doc["scenes"][0]["nodes"].append(mnode)
            rep.tracks += 1
            rep.track_frames += int(track.frame_index.shape[0])
    if channels:
        b.doc["animations"] = [{"name": "run", "channels": channels, "samplers": samplers}]
    data = b.glb()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, data)
    rep.bytes = len(data)
    return rep
