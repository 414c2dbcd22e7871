"""How far the exported glb's skinned meshes are from our SMPL-X meshes: correctives off (must be ~0) and on.

    python -m human3r_edge.benchmarks.glb_fidelity RUN_DIR --smplx-model FILE [--out benchmarks/results/NAME.json]

Converts RUN_DIR to a glb (`human3r-edge convert --to glb`), reads it back with numpy only (no glTF library),
skins every track at every frame it appears in from the glb's joints, weights and inverse bind matrices, and
compares with SMPLXModel.skin of the same frame:
  - `off`: the track's baked shape (mean betas/expression) with the pose correctives zeroed: what linear blend
    skinning can carry; the exporter's contract is max < 1e-4 m;
  - `correctives_only`: the baked shape with the pose correctives on: what the correctives alone add;
  - `on`: the full mesh the run wrote (per-frame betas and expression, pose correctives on): what is lost.
With a synthetic or random-weight model the numbers show the machinery, not a real body's correctives.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _world(r: Any) -> np.ndarray:
    """(V, 3) world vertices of a one-person skinning result (skinned with c2w, so they exist)."""
    if r.v_world is None:
        raise ValueError("glb_fidelity | skinning returned no world vertices: c2w missing")
    return r.v_world[0]


def read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    n_json = struct.unpack_from("<I", data, 12)[0]
    doc = json.loads(data[20:20 + n_json])
    n_bin = struct.unpack_from("<I", data, 20 + n_json)[0]
    return doc, data[28 + n_json:28 + n_json + n_bin]


def accessor(doc: dict, blob: bytes, i: int) -> np.ndarray:
    a = doc["accessors"][i]
    v = doc["bufferViews"][a["bufferView"]]
    n = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[a["type"]]
    dt = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[a["componentType"]]
    return np.frombuffer(blob, dt, a["count"] * n, v.get("byteOffset", 0) + a.get("byteOffset", 0)).reshape(-1, n)


def node_globals(doc: dict, blob: bytes, t: float) -> np.ndarray:
    """(nodes, 4, 4) global transforms at time t, taking the key nearest t (t is a frame time)."""
    from human3r_edge.runtime.geometry import quaternion_to_matrix

    trs = [[np.array(n.get("translation", [0, 0, 0]), float), np.array(n.get("rotation", [0, 0, 0, 1]), float),
            np.array(n.get("scale", [1, 1, 1]), float)] for n in doc["nodes"]]
    for anim in doc.get("animations", []):
        for ch in anim["channels"]:
            s = anim["samplers"][ch["sampler"]]
            times, vals = accessor(doc, blob, s["input"])[:, 0], accessor(doc, blob, s["output"])
            k = (max(int(np.searchsorted(times, t + 1e-6, side="right")) - 1, 0) if s["interpolation"] == "STEP"
                 else int(np.argmin(np.abs(times - t))))
            trs[ch["target"]["node"]][{"translation": 0, "rotation": 1, "scale": 2}[ch["target"]["path"]]] = vals[k]
    parent = {c: i for i, n in enumerate(doc["nodes"]) for c in n.get("children", [])}
    G = np.zeros((len(doc["nodes"]), 4, 4))
    for i, (tt, q, s) in enumerate(trs):
        m = np.eye(4)
        m[:3, :3] = quaternion_to_matrix(np.array([q[3], q[0], q[1], q[2]])) * s
        m[:3, 3] = tt
        G[i] = m if i not in parent else G[parent[i]] @ m
    return G


def skin_from_glb(doc: dict, blob: bytes, mesh_node: int, G: np.ndarray) -> np.ndarray:
    """(V, 3) glTF-world vertices of a skinned mesh node."""
    node = doc["nodes"][mesh_node]
    skin = doc["skins"][node["skin"]]
    prim = doc["meshes"][node["mesh"]]["primitives"][0]["attributes"]
    A = G[skin["joints"]] @ accessor(doc, blob, skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    rest = accessor(doc, blob, prim["POSITION"]).astype(np.float64)
    T = np.zeros((rest.shape[0], 4, 4))
    s = 0
    while f"JOINTS_{s}" in prim:
        J = accessor(doc, blob, prim[f"JOINTS_{s}"]).astype(np.int64)
        W = accessor(doc, blob, prim[f"WEIGHTS_{s}"]).astype(np.float64)
        T += np.einsum("vk,vkab->vab", W, A[J])
        s += 1
    return np.einsum("vab,vb->va", T[:, :3, :3], rest) + T[:, :3, 3]


def measure(run_dir: Path, smplx_model: Path) -> dict:
    from human3r_edge.cli import main as cli
    from human3r_edge.runtime.convert.body import CV_TO_YUP
    from human3r_edge.runtime.convert.run_folder import RunFolder
    from human3r_edge.runtime.smplx import SMPLXModel, load_smplx_file

    with tempfile.TemporaryDirectory() as tmp:
        glb = Path(tmp) / "run.glb"
        if cli(["convert", str(run_dir), "--to", "glb", "--out", str(glb), "--smplx-model", str(smplx_model),
                "--no-points"]) != 0:
            raise SystemExit("convert failed")
        doc, blob = read_glb(glb)
        size = glb.stat().st_size
    data = load_smplx_file(smplx_model)
    on = SMPLXModel(data, backend="numpy")
    off = SMPLXModel(dataclasses.replace(data, posedirs=np.zeros_like(data.posedirs)), backend="numpy")
    rf = RunFolder.read(run_dir)
    t0 = rf.times()[0]
    t_of = {f.index: float(t - t0) for f, t in zip(rf.frames, rf.times())}
    names = {n.get("name"): i for i, n in enumerate(doc["nodes"])}
    d_off, d_on, d_on_mean, d_corr = [], [], [], []
    for tid, tr in sorted(rf.tracks.items()):
        betas, expr = tr.betas.mean(0, keepdims=True), tr.expression.mean(0, keepdims=True)
        for f, idx in enumerate(tr.frame_index):
            v = skin_from_glb(doc, blob, names[f"track_{tid:04d}_mesh"], node_globals(doc, blob, t_of[int(idx)]))
            v = v @ CV_TO_YUP  # glTF Y-up world -> the run's world
            sl = slice(f, f + 1)
            ref = _world(off.skin(tr.rotmat[sl], betas, expr, tr.transl_head_cam[sl], c2w=tr.c2w[f]))
            full = _world(on.skin(tr.rotmat[sl], tr.betas[sl], tr.expression[sl], tr.transl_head_cam[sl],
                                  c2w=tr.c2w[f]))
            d_off.append(float(np.abs(v - ref).max()))
            corr = _world(on.skin(tr.rotmat[sl], betas, expr, tr.transl_head_cam[sl], c2w=tr.c2w[f]))
            d_corr.append(float(np.linalg.norm(v - corr, axis=1).max()))
            dist = np.linalg.norm(v - full, axis=1)
            d_on.append(float(dist.max()))
            d_on_mean.append(float(dist.mean()))
    return {"run": str(run_dir), "smplx_model": str(smplx_model), "glb_bytes": size, "tracks": len(rf.tracks),
            "person_frames": len(d_off),
            "correctives_off_max_abs_m": max(d_off, default=0.0),
            "correctives_only_max_dist_m": max(d_corr, default=0.0),
            "correctives_on_max_dist_m": max(d_on, default=0.0),
            "correctives_on_mean_dist_m": float(np.mean(d_on_mean)) if d_on_mean else 0.0,
            "correctives_on_p95_of_per_frame_max_m": float(np.percentile(d_on, 95)) if d_on else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--smplx-model", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    res = measure(args.run_dir, args.smplx_model)
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0 if res["correctives_off_max_abs_m"] < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
