"""`human3r-edge convert --to {glb,colmap,bvh}`: files that other tools read, and that reproduce our outputs.

The run folder comes from `human3r-edge run` over the fake export backend (tests/support/run_folder.py): not
real geometry, but every file a real run writes, with the same conventions.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from human3r_edge.cli import main
from support.ci import require
from support.run_folder import SRC_WH, make_run_folder

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = REPO / ".tools" / "node_modules" / "gltf-validator"
C = np.diag([1.0, -1.0, -1.0])  # the exporters' OpenCV world -> Y-up world


def _need(ok: bool, why: str) -> None:
    """Skip with the reason here; on CI (CI=true) the setup installs everything, so a missing tool fails."""
    require(ok, why + ": run `make setup`")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synthetic_smplx):
    return make_run_folder(tmp_path_factory.mktemp("convert"), synthetic_smplx)


@pytest.fixture(scope="module")
def models(synthetic_smplx):
    """(model, model with the pose correctives zeroed): our own skinning, with correctives on and off."""
    from human3r_edge.runtime.smplx import SMPLXModel, load_smplx_file

    data = load_smplx_file(synthetic_smplx)
    off = SMPLXModel(dataclasses.replace(data, posedirs=np.zeros_like(data.posedirs)), backend="numpy")
    return SMPLXModel(data, backend="numpy"), off


def convert(*argv) -> int:
    return main(["convert", *map(str, argv)])


def with_gap(run_dir: Path, tmp: Path) -> Path:
    """A copy of the run whose track 0 is absent in frames 4..6 (a gap)."""
    out = tmp / "gap"
    shutil.copytree(run_dir, out)
    p = out / "people" / "track_0000.npz"
    with np.load(p) as z:
        d = {k: z[k] for k in z.files}
    keep = ~np.isin(d["frame_index"], [4, 5, 6])
    np.savez(p, **{k: v[keep] for k, v in d.items()})
    return out


def tracks_of(path: Path) -> dict[int, dict]:
    out = {}
    for f in sorted((path / "people").glob("track_*.npz")):
        with np.load(f) as z:
            out[int(f.stem.split("_")[1])] = {k: z[k] for k in z.files}
    return out


# ---------------------------------------------------------------------------------------------- glb
def _gltf_globals(gl, blob: bytes, t: float):
    """Global 4x4 of every node at animation time t, and an accessor reader (no interpolation: t is a frame)."""
    from pygltflib import GLTF2  # noqa: F401  (the loader proves the file parses)

    def acc(i):
        a = gl.accessors[i]
        v = gl.bufferViews[a.bufferView]
        n = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[a.type]
        dt = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[a.componentType]
        return np.frombuffer(blob, dt, a.count * n, v.byteOffset + (a.byteOffset or 0)).reshape(a.count, n)

    trs = {i: [np.array(nd.translation or [0, 0, 0], float), np.array(nd.rotation or [0, 0, 0, 1], float),
               np.array(nd.scale or [1, 1, 1], float)] for i, nd in enumerate(gl.nodes)}
    for anim in gl.animations:
        for ch in anim.channels:
            s = anim.samplers[ch.sampler]
            times, vals = acc(s.input)[:, 0], acc(s.output)
            if s.interpolation == "STEP":
                k = max(int(np.searchsorted(times, t + 1e-6, side="right")) - 1, 0)
            else:  # the nearest key: the frames where a track is present are keys of its channels
                k = int(np.argmin(np.abs(times - t)))
            trs[ch.target.node][{"translation": 0, "rotation": 1, "scale": 2}[ch.target.path]] = vals[k]
    from human3r_edge.runtime.geometry import quaternion_to_matrix

    local = {}
    for i, (tt, q, s) in trs.items():
        m = np.eye(4)
        m[:3, :3] = quaternion_to_matrix(np.array([q[3], q[0], q[1], q[2]], float)) * s
        m[:3, 3] = tt
        local[i] = m
    G = np.zeros((len(gl.nodes), 4, 4))
    parent = {c: i for i, nd in enumerate(gl.nodes) for c in (nd.children or [])}
    for i in range(len(gl.nodes)):  # our writer adds parents before children
        G[i] = local[i] if i not in parent else G[parent[i]] @ local[i]
    return G, acc


def test_glb_validates_and_reproduces_our_skinning(run_dir, tmp_path, synthetic_smplx, models, capsys):
    from pygltflib import GLTF2

    gap = with_gap(run_dir, tmp_path)
    out = tmp_path / "run.glb"
    assert convert(gap, "--to", "glb", "--out", out, "--smplx-model", synthetic_smplx) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"human3r-edge convert | glb -> {out}: 3 tracks")

    _need(shutil.which("node") is not None and VALIDATOR.is_dir(), "node + npm gltf-validator in .tools/")
    rep = json.loads(subprocess.run(["node", str(REPO / "tests/support/gltf_validate.js"), str(out)],
                                    capture_output=True, text=True, check=True).stdout)
    print("gltf-validator:", rep["issues"]["numErrors"], "errors,", rep["issues"]["numWarnings"], "warnings")
    assert rep["issues"]["numErrors"] == 0, rep["issues"]["messages"][:5]

    gl = GLTF2().load(str(out))
    blob = gl.binary_blob()
    cams = json.loads((run_dir / "cameras.json").read_text())["frames"]
    t_of = {f["index"]: f["timestamp"] - cams[0]["timestamp"] for f in cams}
    on, off = models
    worst_off = worst_on = 0.0
    for tid, tr in tracks_of(gap).items():
        mesh_node = next(i for i, n in enumerate(gl.nodes) if n.name == f"track_{tid:04d}_mesh")
        skin = gl.skins[gl.nodes[mesh_node].skin]
        prim = gl.meshes[gl.nodes[mesh_node].mesh].primitives[0]
        betas, expr = tr["betas"].mean(0, keepdims=True), tr["expression"].mean(0, keepdims=True)
        for f, idx in enumerate(tr["frame_index"]):
            G, acc = _gltf_globals(gl, blob, t_of[int(idx)])
            ibm = acc(skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
            A = G[skin.joints] @ ibm  # (55, 4, 4) skinning matrices
            rest = acc(prim.attributes.POSITION).astype(np.float64)
            T = np.zeros((rest.shape[0], 4, 4))
            for s in range(4):
                jn, wn = getattr(prim.attributes, f"JOINTS_{s}", None), getattr(prim.attributes, f"WEIGHTS_{s}", None)
                if jn is None:
                    break
                J, W = acc(jn).astype(np.int64), acc(wn).astype(np.float64)
                T += np.einsum("vk,vkab->vab", W, A[J])
            v_glb = (np.einsum("vab,vb->va", T[:, :3, :3], rest) + T[:, :3, 3]) @ C  # back to the run's world
            args = (tr["rotmat"][f:f + 1], betas, expr, tr["transl_head_cam"][f:f + 1])
            ref = off.skin(*args, c2w=tr["c2w"][f]).v_world[0]
            full = on.skin(tr["rotmat"][f:f + 1], tr["betas"][f:f + 1], tr["expression"][f:f + 1],
                           tr["transl_head_cam"][f:f + 1], c2w=tr["c2w"][f]).v_world[0]
            worst_off = max(worst_off, float(np.abs(v_glb - ref).max()))
            worst_on = max(worst_on, float(np.linalg.norm(v_glb - full, axis=1).max()))
        absent = [i for i in t_of if i not in set(tr["frame_index"].tolist())]
        for idx in absent:  # gaps: the track node's scale is 0
            G, _ = _gltf_globals(gl, blob, t_of[idx])
            tnode = next(i for i, n in enumerate(gl.nodes) if n.name == f"track_{tid:04d}")
            assert np.allclose(G[tnode][:3, :3], 0)
    print(f"glb vs our skinning (correctives off): max |dv| = {worst_off:.2e} m; "
          f"vs the full mesh (correctives on, per-frame betas): max distance = {worst_on:.3e} m")
    assert worst_off < 1e-4
    assert 0 in tracks_of(gap) and 4 not in tracks_of(gap)[0]["frame_index"]


def test_glb_camera_and_points(run_dir, tmp_path, synthetic_smplx):
    from pygltflib import GLTF2

    out = tmp_path / "a.glb"
    assert convert(run_dir, "--to", "glb", "--out", out, "--smplx-model", synthetic_smplx, "--frames", "2:9") == 0
    gl = GLTF2().load(str(out))
    cams = [f for f in json.loads((run_dir / "cameras.json").read_text())["frames"] if 2 <= f["index"] < 9]
    names = [n.name for n in gl.nodes]
    assert "camera" in names and "points" in names and gl.cameras[0].perspective.yfov > 0
    G, acc = _gltf_globals(gl, gl.binary_blob(), cams[3]["timestamp"] - cams[0]["timestamp"])
    c2w = np.array(cams[3]["c2w"])
    cam = G[names.index("camera")]
    assert np.allclose(C.T @ cam[:3, 3], c2w[:3, 3], atol=1e-5)  # position; glTF looks down -z:
    assert np.allclose(C.T @ cam[:3, :3] @ C, c2w[:3, :3], atol=1e-5)


# ---------------------------------------------------------------------------------------------- colmap
def test_colmap_loads_and_reprojects_our_depth(run_dir, tmp_path, capsys):
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap (pip install -e '.[dev]')")
    out = tmp_path / "colmap"
    assert convert(run_dir, "--to", "colmap", "--out", out) == 0
    rec = pycolmap.Reconstruction(str(out))
    cams = json.loads((run_dir / "cameras.json").read_text())["frames"]
    assert rec.num_cameras() == rec.num_images() == len(cams)
    assert rec.num_points3D() > 0
    sx, sy = SRC_WH[0] / 128, SRC_WH[1] / 96  # 200x150 -> 128x96: resize only
    rng = np.random.default_rng(0)
    worst_z = worst_px = 0.0
    by_name = {im.name: im for im in rec.images.values()}
    for fr in cams:
        im = by_name[f"{fr['index']:06d}.png"]
        cam = rec.cameras[im.camera_id]
        assert (cam.width, cam.height) == SRC_WH and cam.model.name == "PINHOLE"
        depth = np.load(run_dir / "depth" / f"{fr['index']:06d}.npy")
        v, u = rng.integers(0, depth.shape[0], 50), rng.integers(0, depth.shape[1], 50)
        d = depth[v, u].astype(np.float64)
        K, c2w = np.array(fr["K"]), np.array(fr["c2w"])
        x_cam = np.linalg.solve(K, np.stack([u, v, np.ones_like(u)]).astype(np.float64)).T * d[:, None]
        X = x_cam @ c2w[:3, :3].T + c2w[:3, 3]  # our world points of those pixels
        cfw = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
        p = (cfw.matrix() @ np.c_[X, np.ones(len(X))].T).T
        worst_z = max(worst_z, float(np.max(np.abs(p[:, 2] - d) / np.abs(d))))
        px = cam.img_from_cam(p)
        want = np.stack([(u + 0.5) * sx, (v + 0.5) * sy], 1)  # COLMAP: top-left pixel centre at (0.5, 0.5)
        worst_px = max(worst_px, float(np.abs(px - want).max()))
    print(f"colmap reprojection: max relative depth error {worst_z:.2e}, max pixel error {worst_px:.2e} px")
    assert worst_z < 1e-3 and worst_px < 1e-2


# ---------------------------------------------------------------------------------------------- bvh
def _bvh_fk(path: Path) -> tuple[list[str], np.ndarray]:
    """Joint names and (frames, J, 3) world positions by forward kinematics of the parsed file (`bvh` package)."""
    from bvh import Bvh

    with open(path) as f:
        b = Bvh(f.read())
    names = b.get_joints_names()
    frames = np.array(b.frames, float)
    col = 0
    out = np.zeros((len(frames), len(names), 3))
    G = {}

    def rot(axis, deg):
        a = np.radians(deg)
        c, s = np.cos(a), np.sin(a)
        i, j = {"X": (1, 2), "Y": (2, 0), "Z": (0, 1)}[axis]
        m = np.broadcast_to(np.eye(3), a.shape + (3, 3)).copy()
        m[..., i, i], m[..., i, j], m[..., j, i], m[..., j, j] = c, -s, s, c
        return m

    for k, n in enumerate(names):
        chans = b.joint_channels(n)
        vals = frames[:, col:col + len(chans)]
        col += len(chans)
        R = np.broadcast_to(np.eye(3), (len(frames), 3, 3)).copy()
        pos = np.zeros((len(frames), 3))
        for c, ch in enumerate(chans):
            if ch.endswith("position"):
                pos[:, "XYZ".index(ch[0])] = vals[:, c]
            else:
                R = R @ rot(ch[0], vals[:, c])
        off = np.array(b.joint_offset(n), float)
        parent = b.joint_parent(n)
        if parent is None:
            G[n] = (R, pos + off)
        else:
            pr, pt = G[parent.name]
            G[n] = (pr @ R, pt + (pr @ off[:, None])[..., 0])
        out[:, k] = G[n][1]
    return names, out


def test_bvh_parses_and_reproduces_our_joints(run_dir, tmp_path, synthetic_smplx, models, capsys):
    gap = with_gap(run_dir, tmp_path)
    out = tmp_path / "bvh"
    assert convert(gap, "--to", "bvh", "--out", out, "--smplx-model", synthetic_smplx, "--hands") == 0
    err = capsys.readouterr().err
    assert "track 0: 3 of" in err and "gaps" in err
    on, _ = models
    from human3r_edge.runtime.convert.body import JOINT_NAMES

    worst = 0.0
    for tid, tr in tracks_of(gap).items():
        names, fk = _bvh_fk(out / f"track_{tid:04d}.bvh")
        assert len(names) == 52 and names[:2] == ["pelvis", "left_hip"]
        side = json.loads((out / f"track_{tid:04d}.json").read_text())
        ids = [JOINT_NAMES.index(n) for n in names]
        res = on.skin(tr["rotmat"], np.repeat(tr["betas"].mean(0, keepdims=True), len(tr["rotmat"]), 0),
                      np.repeat(tr["expression"].mean(0, keepdims=True), len(tr["rotmat"]), 0),
                      tr["transl_head_cam"], None)
        for f, idx in enumerate(tr["frame_index"]):
            k = side["frame_index"].index(int(idx))
            j_world = res.j_cam[f, ids] @ tr["c2w"][f][:3, :3].T + tr["c2w"][f][:3, 3]
            worst = max(worst, float(np.abs(fk[k] - j_world @ C.T).max()))
        if tid == 0:  # gap frames hold the last seen pose
            k3, k4 = side["frame_index"].index(3), side["frame_index"].index(4)
            assert side["present"][k4] is False and np.allclose(fk[k4], fk[k3])
    print(f"bvh forward kinematics vs our joints: max |dj| = {worst:.2e} m")
    assert worst < 1e-4


# ---------------------------------------------------------------------------------------------- bad input
def test_empty_and_interrupted_folders_convert_what_exists(run_dir, tmp_path, synthetic_smplx, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for fmt in ("glb", "colmap", "bvh"):
        assert convert(empty, "--to", fmt, "--smplx-model", synthetic_smplx) == 0
    cap = capsys.readouterr()
    assert "0 tracks" in cap.out and "0 images / 0 cameras" in cap.out and "no cameras.json" in cap.err
    # killed before the first flush of cameras.json: only the trajectory and the tracks
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(run_dir / "trajectory.tum", part)
    shutil.copytree(run_dir / "people", part / "people")
    (part / "people" / "track_0002.npz").write_bytes(b"PK\x03\x04 truncated")
    assert convert(part, "--to", "glb", "--smplx-model", synthetic_smplx) == 0
    cap = capsys.readouterr()
    assert "2 tracks" in cap.out and "12 camera frames" in cap.out
    assert "track_0002.npz: unreadable" in cap.err and "intrinsics are unknown" in cap.err
    assert "Traceback" not in cap.err


@pytest.mark.parametrize("extra, expect", [
    (["--tracks", "0", "7"], "--tracks | unknown track ids: [7]"),
    (["--frames", "9:3"], "--frames | empty range"),
    (["--frames", "x"], "--frames | not a frame range"),
    (["--frames", "100:200"], "--frames | holds none of the run's frames"),
    (["--source-size", "12"], "--source-size | not a size"),
])
def test_bad_selection_is_exit_2(run_dir, synthetic_smplx, capsys, extra, expect):
    assert convert(run_dir, "--to", "colmap", "--out", "/nonexistent/never", *extra) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err


def test_missing_folder_and_model_are_exit_2(run_dir, tmp_path, capsys):
    assert convert(tmp_path / "nope", "--to", "glb") == 2
    assert "does not exist" in capsys.readouterr().err
    assert convert(run_dir, "--to", "bvh", "--out", tmp_path / "b") == 2
    assert "pass --smplx-model FILE" in capsys.readouterr().err


def test_convert_is_torch_free(run_dir, tmp_path, synthetic_smplx):
    code = ("import sys; from human3r_edge.cli import main; "
            f"rc = main(['convert', {str(run_dir)!r}, '--to', 'bvh', '--out', {str(tmp_path / 'b')!r}, "
            f"'--smplx-model', {str(synthetic_smplx)!r}]); assert rc == 0; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_every_command_in_the_viewer_doc_parses():
    import re
    import shlex

    from human3r_edge.cli import build_parser

    doc = (REPO / "docs" / "viewer-and-exports.md").read_text()
    cmds = [shlex.split(ln.split("#", 1)[0]) for block in re.findall(r"```bash\n(.*?)```", doc, flags=re.S)
            for ln in block.replace("\\\n", " ").splitlines() if ln.split("#", 1)[0].strip()]
    assert len(cmds) >= 5
    for argv in cmds:
        assert argv[0] == "human3r-edge", argv
        build_parser(only=argv[1]).parse_args(argv[1:])  # SystemExit(2) on a flag the command does not have
    assert (REPO / "docs" / "viewer.png").is_file()
