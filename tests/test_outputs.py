"""Output files: atomic writes, TUM/JSON/NPZ/PLY/MP4 contents, Ctrl-C leaves valid files, bad output dirs."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.geometry import quaternion_to_matrix
from human3r_edge.runtime.outputs.atomic import atomic_file, ensure_writable_dir
from human3r_edge.runtime.outputs.formats import obj_mesh_bytes, ply_mesh_bytes, tum_line
from human3r_edge.runtime.outputs.preview import draw_meshes
from human3r_edge.runtime.outputs.scene import VoxelScene
from human3r_edge.runtime.outputs.writer import OutputOptions, OutputWriter
from support.session_inputs import FACES, read_ply, results


def test_atomic_file_keeps_old_content_on_error(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(p) as f:
            f.write(b"new partial")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Human3RError, match="not writable"):
        ensure_writable_dir(blocker / "out")
    with pytest.raises(Human3RError, match="not writable"):
        OutputWriter("/proc/human3r-edge-out")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(Human3RError, match="not writable"):
            ensure_writable_dir(ro)
    finally:
        ro.chmod(0o755)


def test_tum_line_roundtrip():
    q = np.array([0.9, 0.1, -0.3, 0.2])
    q /= np.linalg.norm(q)
    c2w = np.eye(4)
    c2w[:3, :3] = quaternion_to_matrix(q)
    c2w[:3, 3] = [1.5, -2.0, 0.25]
    vals = [float(v) for v in tum_line(12.5, c2w).split()]
    assert len(vals) == 8 and vals[0] == 12.5
    np.testing.assert_allclose(vals[1:4], [1.5, -2.0, 0.25])
    qx, qy, qz, qw = vals[4:]
    np.testing.assert_allclose(quaternion_to_matrix(np.array([qw, qx, qy, qz])), c2w[:3, :3], atol=1e-7)


def test_all_files(tmp_path):
    res = results(4)
    opts = OutputOptions(save_depth=True, save_meshes=True, preview=True, fps=10.0, conf_threshold=1.0,
                         mask_threshold=2.0)  # the fake mask covers the frame: no masking here
    with OutputWriter(tmp_path / "out", opts, faces=FACES) as w:
        for r in res:
            w.add(r)
        w.close(summary={"frames": 4, "fps": 1.0})
    out = tmp_path / "out"
    # trajectory
    tum = np.loadtxt(out / "trajectory.tum")
    assert tum.shape == (4, 8)
    np.testing.assert_allclose(tum[:, 0], [0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(tum[:, 1:4], np.stack([r.c2w[:3, 3] for r in res]), atol=1e-6)
    # cameras
    cams = json.loads((out / "cameras.json").read_text())
    assert (cams["width"], cams["height"]) == (128, 96) and len(cams["frames"]) == 4
    np.testing.assert_allclose(cams["frames"][2]["K"], res[2].intrinsics, rtol=1e-6)
    np.testing.assert_allclose(cams["frames"][3]["c2w"], res[3].c2w, atol=1e-7)
    # people
    tracks = sorted((out / "people").iterdir())
    assert [t.name for t in tracks] == ["track_0000.npz", "track_0001.npz"]
    with np.load(tracks[0]) as z:
        assert set(z.files) == {"frame_index", "timestamp", "score", "global_orient", "body_pose", "left_hand_pose",
                                "right_hand_pose", "jaw_pose", "rotmat", "betas", "expression", "transl_head_cam",
                                "c2w"}
        np.testing.assert_array_equal(z["frame_index"], [0, 1, 2, 3])
        assert z["body_pose"].shape == (4, 63) and z["rotmat"].shape == (4, 53, 3, 3)
        assert z["left_hand_pose"].shape == (4, 45) and z["global_orient"].shape == (4, 3)
        np.testing.assert_array_equal(z["betas"][1], res[1].people[0].betas)
    # scene
    header, body = read_ply(out / "scene.ply")
    assert header[1] == "format binary_little_endian 1.0"
    n = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    assert n > 0 and len(body) == n * 15
    # depth and meshes
    assert sorted(p.name for p in (out / "depth").iterdir()) == [f"{i:06d}.npy" for i in range(4)]
    np.testing.assert_array_equal(np.load(out / "depth" / "000002.npy"), res[2].depth)
    meshes = sorted((out / "meshes").iterdir())
    assert len(meshes) == 8 and meshes[0].name == "000000_track_0000.ply"
    mh, mb = read_ply(meshes[0])
    assert "element vertex 20" in mh and "element face 18" in mh and len(mb) == 20 * 12 + 18 * 13
    # preview
    cap = cv2.VideoCapture(str(out / "preview.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 4 and frames[0].shape == (96 * 4, 128 * 4, 3)  # upscaled to >= 480 px wide
    assert json.loads((out / "summary.json").read_text())["frames"] == 4
    assert not [p for p in out.rglob(".*")], "no temp files left"


def test_scene_filters_confidence_and_people(tmp_path):
    r = results(1)[0]
    conf_hi = 1.0 + 0.25  # the fake's confidence is 1 + |u|/W: keeps the outer columns only
    with OutputWriter(tmp_path, OutputOptions(conf_threshold=conf_hi, mask_threshold=2.0, voxel_size=1e-4)) as w:
        w.add(r)
    _, body = read_ply(tmp_path / "scene.ply")
    rec = np.frombuffer(body, dtype=[("p", "<f4", (3,)), ("c", "u1", (3,))])
    expected = int(np.count_nonzero(r.confidence > conf_hi))
    assert 0 < rec.shape[0] <= expected
    # with the mask threshold below the fake mask everywhere, every point is a "person": empty scene
    with OutputWriter(tmp_path / "b", OutputOptions(conf_threshold=0.0, mask_threshold=-1.0)) as w:
        w.add(r)
    _, body = read_ply(tmp_path / "b" / "scene.ply")
    assert len(body) == 0


def test_voxel_scene_averages_and_caps():
    vs = VoxelScene(voxel_size=1.0, max_points=50)
    pts = np.array([[0.2, 0.2, 0.2], [0.4, 0.6, 0.8], [5.5, 0, 0]], np.float32)
    vs.add(pts, np.array([[0, 0, 0], [100, 100, 100], [255, 0, 0]], np.uint8))
    p, c = vs.points()
    assert p.shape == (2, 3)
    i = int(np.argmin(p[:, 0]))
    np.testing.assert_allclose(p[i], [0.3, 0.4, 0.5], atol=1e-6)
    np.testing.assert_array_equal(c[i], [50, 50, 50])
    rng = np.random.default_rng(0)
    big = rng.uniform(-20, 20, size=(100_000, 3)).astype(np.float32)
    for chunk in np.array_split(big, 4):
        vs.add(chunk, np.zeros_like(chunk, dtype=np.uint8))
    p, _ = vs.points()
    assert p.shape[0] <= 50 and vs.voxel > 1.0


def test_keyboard_interrupt_leaves_valid_files(tmp_path):
    res = results(3)
    with pytest.raises(KeyboardInterrupt):
        with OutputWriter(tmp_path, OutputOptions(preview=True, flush_seconds=1e9)) as w:
            for i, r in enumerate(res):
                w.add(r)
                if i == 1:
                    raise KeyboardInterrupt
    assert np.loadtxt(tmp_path / "trajectory.tum").shape == (2, 8)
    assert len(json.loads((tmp_path / "cameras.json").read_text())["frames"]) == 2
    with np.load(tmp_path / "people" / "track_0000.npz") as z:
        assert z["frame_index"].tolist() == [0, 1]
    cap = cv2.VideoCapture(str(tmp_path / "preview.mp4"))
    assert cap.isOpened() and cap.read()[0]


def test_periodic_flush_writes_during_the_run(tmp_path):
    res = results(2)
    w = OutputWriter(tmp_path, OutputOptions(flush_seconds=0.0, scene_flush_seconds=0.0))
    w.add(res[0])
    assert np.loadtxt(tmp_path / "trajectory.tum", ndmin=2).shape == (1, 8)
    assert (tmp_path / "scene.ply").is_file()
    w.close()


def test_depth_png_and_obj_meshes(tmp_path):
    r = results(1)[0]
    with OutputWriter(tmp_path, OutputOptions(scene=False, save_depth=True, depth_format="png", save_meshes=True,
                                              mesh_format="obj"), faces=FACES) as w:
        w.add(r)
    d = cv2.imread(str(tmp_path / "depth" / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert d.dtype == np.uint16
    np.testing.assert_allclose(d, np.rint(r.depth * 1000), atol=1)
    obj = (tmp_path / "meshes" / "000000_track_0000.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in obj) == 20 and sum(line.startswith("f ") for line in obj) == 18
    assert obj[-1] == "f 19 20 21" or obj[-1].startswith("f ")
    with pytest.raises(Human3RError, match="depth_format"):
        OutputOptions(depth_format="exr")


def test_mesh_byte_formats():
    v = np.zeros((3, 3), np.float32)
    f = np.array([[0, 1, 2]])
    assert ply_mesh_bytes(v, f).endswith(np.array([3], np.uint8).tobytes() + np.array([0, 1, 2], "<i4").tobytes())
    assert obj_mesh_bytes(v, f).decode().strip().splitlines()[-1] == "f 1 2 3"


def test_draw_meshes_colours_pixels():
    r = results(1)[0]
    img = draw_meshes(r.image, r.people, r.intrinsics, None, scale=2)
    assert img.shape == (192, 256, 3)
    nan_k = np.full((3, 3), np.nan)
    np.testing.assert_array_equal(draw_meshes(r.image, r.people, nan_k, None, 1), r.image)


def test_background_writer_writes_everything_and_reraises(tmp_path):
    from human3r_edge.runtime.outputs.writer import BackgroundWriter

    res = results(5)
    bw = BackgroundWriter(OutputWriter(tmp_path / "a", OutputOptions(flush_seconds=1e9)), queue_size=2)
    for r in res:
        bw.add(r)
    bw.close()
    assert np.loadtxt(tmp_path / "a" / "trajectory.tum").shape == (5, 8)

    class Boom(OutputWriter):
        def add(self, r):
            raise OSError("disk full")

    bw = BackgroundWriter(Boom(tmp_path / "b"), queue_size=1)
    bw.add(res[0])
    with pytest.raises(OSError, match="disk full"):
        for r in res:
            bw.add(r)
        bw.close()
    bw.close()
