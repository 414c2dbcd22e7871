"""Session end to end on a golden: raw frames -> preprocessing -> (replayed model outputs) -> host logic ->
SMPL-X skinning, compared with the reference's demo outputs; and smplx-compatible parameters."""
from __future__ import annotations

import numpy as np
import pytest

from human3r_edge.runtime.pipeline import PipelineOptions
from human3r_edge.runtime.session import Session, SessionOptions
from support.fake_gpu import fake_gpu, primary_gpu  # noqa: F401  (fixtures)
from support.goldens import golden
from support.doubles import GoldenReplayBackend

TOL = 3e-5


def close(got, ref, tol=TOL):
    ref = np.asarray(ref, np.float64)
    err = float(np.max(np.abs(np.asarray(got, np.float64) - ref)))
    scale = float(np.max(np.abs(ref)))
    assert err <= tol * scale, f"max abs err {err:.3g} > {tol} * {scale:.3g} (rel {err / scale:.3g})"
    return err / scale


@pytest.fixture
def golden_run(golden_dir, require_golden, synthetic_smplx):
    g = golden(golden_dir)
    gb = GoldenReplayBackend(golden_dir)
    z = gb.z
    pipe = PipelineOptions(ttt3r=g.use_ttt3r, reset_interval=g.reset_interval, max_remembered=None)
    opts = SessionOptions(pipeline=pipe, dense=True, human_mask=True)
    with Session(gb, str(synthetic_smplx), opts) as s:
        res = [s.step(f) for f in z["input/raw_frames_uint8"]]
    return z, res, g


def test_golden_session_end_to_end(golden_run):
    z, res, g = golden_run
    from human3r_edge.runtime import preprocess as pp

    assert len(res) == g.frames
    np.testing.assert_array_equal(np.stack([pp.u8_to_unit(r.image) for r in res]), z["input/img"][g.kept_step_index])
    people = [p for r in res for p in r.people]
    np.testing.assert_array_equal([p.track_id for p in people], z["demo/smpl_id"])
    close(np.stack([r.c2w for r in res]), z["demo/cam2world"])
    close(np.stack([r.intrinsics for r in res]), z["demo/intrinsics"])
    close(np.stack([r.points_world for r in res]), z["demo/pts3d_world"])
    close(np.stack([r.human_mask for r in res]), z["demo/msk"])
    close(np.stack([p.vertices_cam for p in people]), z["smplx/v3d_cam"])
    close(np.stack([p.joints_cam for p in people]), z["smplx/j3d_cam"])
    close(np.stack([p.vertices_world for p in people]), z["smplx/v3d_world"])
    close(np.stack([p.joints_world for p in people]), z["smplx/j3d_world"])


def test_smplx_params_reproduce_vertices_with_the_smplx_package(golden_run, synthetic_smplx):
    """The parameters under smplx's names, fed to the smplx package itself, give the same camera-frame body."""
    import smplx
    import torch

    _, res, _ = golden_run
    people = [p for r in res for p in r.people][:3]
    model = smplx.create(str(synthetic_smplx), model_type="smplx", gender="neutral", use_pca=False,
                         flat_hand_mean=True, num_betas=10, num_expression_coeffs=10)
    for rotation in ("axis_angle",):  # smplx 0.1.28's SMPLX.forward cannot take matrices (it reshapes as (.., 3))
        for p in people:
            prm = p.smplx_params(rotation)
            kw = {k: torch.from_numpy(np.asarray(prm[k], np.float32)).reshape(1, -1) if rotation == "axis_angle"
                  else torch.from_numpy(np.asarray(prm[k], np.float32))[None]
                  for k in ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose")}
            with torch.no_grad():
                out = model(betas=torch.from_numpy(prm["betas"])[None], expression=torch.from_numpy(
                    prm["expression"])[None], transl=torch.from_numpy(prm["transl"])[None],
                    pose2rot=rotation == "axis_angle", **kw)
            # the reference itself feeds smplx axis-angle; |angle| near pi loses ~1e-6 in the round trip
            close(out.vertices[0].numpy(), p.vertices_cam, tol=2e-5)


def test_session_with_the_cuda_skinner_through_host_emulation(golden_dir, require_golden, synthetic_smplx,
                                                              primary_gpu):
    """The GPU skinning path plugged into a Session (the strict stand-in, kernels run by the CPU host emulation):
    same people."""
    from human3r_edge.runtime.smplx.gpu import CudaSkinner
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    g = golden(golden_dir)
    model = SMPLXModel.load(synthetic_smplx)
    z = np.load(golden_dir / "golden.npz")
    frame = int(np.argmax(g.humans_per_frame))  # the most crowded frame (reached through any resets before it)
    people = {}
    for name, skinner in (("cpu", model), ("gpu", CudaSkinner(model, g.slots, driver=primary_gpu.cuda))):
        opts = SessionOptions(pipeline=PipelineOptions(ttt3r=g.use_ttt3r, reset_interval=g.reset_interval))
        with Session(GoldenReplayBackend(golden_dir), skinner, opts) as s:
            for f in z["input/raw_frames_uint8"][:frame]:
                s.step(f)
            people[name] = s.step(z["input/raw_frames_uint8"][frame]).people
    assert len(people["gpu"]) == g.humans_per_frame[frame] > 0
    for a, b in zip(people["cpu"], people["gpu"]):
        assert a.track_id == b.track_id
        np.testing.assert_allclose(b.vertices_world, a.vertices_world, atol=1e-5)
        np.testing.assert_allclose(b.smplx_transl, a.smplx_transl, atol=1e-6)
