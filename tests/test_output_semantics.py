"""docs/outputs.md, statement by statement: each test does exactly what the doc tells a user to do."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from support.run_cli import base_args, export_dir, fake_backend, run, write_video  # noqa: F401  (fixtures)


def _ply_vertices(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    n = int(next(line for line in data[:end].decode().splitlines() if line.startswith("element vertex")).split()[-1])
    return np.frombuffer(data[end:end + 12 * n], "<f4").reshape(n, 3)


def test_rebuilding_meshes_with_the_smplx_package(tmp_path, fake_backend, export_dir, synthetic_smplx):
    """docs/outputs.md "Rebuilding meshes": smplx.SMPLX(..., use_pca=False, flat_hand_mean=True) with the track's
    keys gives camera-frame vertices; c2w takes them to the world frame of meshes/. smplx's defaults crash
    (use_pca=True) or put the hands elsewhere (flat_hand_mean=False)."""
    smplx = pytest.importorskip("smplx")
    import torch

    out = tmp_path / "o"
    assert run(*base_args(write_video(tmp_path / "v.mp4", n=3), export_dir, synthetic_smplx, out), "--save-meshes",
               "--no-scene") == 0
    track = sorted((out / "people").glob("track_*.npz"))[0]
    tid = int(track.stem.split("_")[1])
    with np.load(track) as z:
        p = {k: z[k] for k in z.files}
    i = 0
    frame = int(p["frame_index"][i])
    keys = ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose", "betas", "expression",
            "transl")
    params = {k: torch.from_numpy(p[k][i:i + 1].astype(np.float32)) for k in keys}

    def world(model):
        v = model(**params).vertices[0].detach().numpy().astype(np.float64)
        c2w = p["c2w"][i].astype(np.float64)
        return v @ c2w[:3, :3].T + c2w[:3, 3]

    ref = _ply_vertices(out / "meshes" / f"{frame:06d}_track_{tid:04d}.ply")
    good = smplx.SMPLX(str(synthetic_smplx), gender="neutral", use_pca=False, flat_hand_mean=True, num_betas=10,
                       num_expression_coeffs=10)
    err = np.abs(world(good) - ref).max()
    assert err < 1e-4, err
    with pytest.raises(RuntimeError):  # use_pca=True (the default) expects 6 PCA coefficients per hand
        world(smplx.SMPLX(str(synthetic_smplx), gender="neutral", num_betas=10, num_expression_coeffs=10))
    off = np.abs(world(smplx.SMPLX(str(synthetic_smplx), gender="neutral", use_pca=False, num_betas=10,
                                   num_expression_coeffs=10)) - ref).max()
    assert off > 100 * err  # flat_hand_mean=False adds the mean hand pose
    print(f"smplx rebuild: {err:.2e} m with the documented arguments; flat_hand_mean=False: {off * 100:.2f} cm")


def test_intrinsics_map_to_source_pixels():
    """docs/outputs.md "Intrinsics": K is in model-image pixels; model_to_source_intrinsics maps it to the source
    frame. A dot in a 200x150 frame, preprocessed to 128x96, projects back onto itself."""
    from human3r_edge.runtime import preprocess as pp
    from human3r_edge.runtime.geometry import intrinsics, model_to_source_intrinsics

    src = np.zeros((150, 200, 3), np.uint8)
    sx, sy = 137, 41
    src[sy - 1:sy + 2, sx - 1:sx + 2] = 255  # a 3x3 dot centred on (137, 41)
    img = pp.preprocess_rgb(src, 128)  # (3, 96, 128) in [-1, 1]
    assert img.shape == (3, 96, 128)
    w = np.clip(img[0] + 1.0, 0, None)
    vs, us = np.mgrid[0:96, 0:128]
    u, v = (w * us).sum() / w.sum(), (w * vs).sum() / w.sum()  # the dot in model pixels
    K = intrinsics(100.0, 128, 96)
    Ks = model_to_source_intrinsics(K, 200, 150, 128)
    ray = np.linalg.solve(K.astype(np.float64), [u, v, 1.0])  # the same 3D ray through both cameras
    us_, vs_, ws_ = Ks @ ray
    assert abs(us_ / ws_ - sx) < 0.25 and abs(vs_ / ws_ - sy) < 0.25, (us_ / ws_, vs_ / ws_)
    assert Ks[0, 0] == pytest.approx(100.0 * 200 / 128)


def test_degenerate_focal_is_nan_or_zero_in_the_docstring_and_the_output(tmp_path):
    """weiszfeld_focal: NaN when no pixel has a finite x/z (all z = 0), 0 when the fit is negative; cameras.json
    writes NaN as null and 0 as 0 (docs/outputs.md "Degenerate focal")."""
    from human3r_edge.runtime.geometry import intrinsics, weiszfeld_focal
    from human3r_edge.runtime.outputs.writer import OutputOptions, OutputWriter
    from support.session_inputs import results

    assert np.isnan(weiszfeld_focal(np.zeros((6, 8, 3), np.float32)))
    vs, us = np.mgrid[0:6, 0:8].astype(np.float32)
    mirrored = np.stack([-(us - 4), -(vs - 3), np.ones_like(us)], -1)  # x/z = -(u - cx): a negative focal
    assert weiszfeld_focal(mirrored) == 0.0
    doc = weiszfeld_focal.__doc__
    assert "NaN when no pixel has a finite" in doc and "0 when the fit is" in doc
    rs = results(2)
    w, h = rs[0].image.shape[1], rs[0].image.shape[0]
    rs = [dataclasses.replace(r, focal=f, intrinsics=intrinsics(f, w, h)) for r, f in zip(rs, (float("nan"), 0.0))]
    with OutputWriter(tmp_path / "o", OutputOptions(scene=False)) as wr:
        for r in rs:
            wr.add(r)
    cams = json.loads((tmp_path / "o" / "cameras.json").read_text())["frames"]
    assert cams[0]["focal"] is None and cams[0]["K"][0][0] is None
    assert cams[1]["focal"] == 0.0 and cams[1]["K"][0][0] == 0.0


def test_corrupt_image_position_matches_the_doc(tmp_path):
    """docs/outputs.md "Incomplete input": `skipped[].position` is the file's position in natural order."""
    from human3r_edge.runtime.video import open_source

    d = tmp_path / "f"
    d.mkdir()
    for i in (1, 2, 10):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / f"img{i}.png")
    (d / "img2.png").write_bytes(b"broken")
    with open_source(d, skip_corrupt=True) as src:
        n = sum(1 for _ in src)
    assert n == 2 and src.skipped[0]["position"] == 1 and src.skipped[0]["file"] == "img2.png"
