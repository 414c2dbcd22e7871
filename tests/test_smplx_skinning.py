"""numpy SMPL-X skinning: against the smplx package (torch), against the goldens, and on bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.smplx.constants import HUMAN3R_ROT_JOINTS
from human3r_edge.runtime.smplx.skinning import SMPLXModel, project_points
from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx
from support.goldens import golden
from support.smplx_inputs import random_params

torch = pytest.importorskip("torch")
smplx = pytest.importorskip("smplx")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return str(write_synthetic_smplx(tmp_path_factory.mktemp("smplx"), seed=5, compress=False))


@pytest.fixture(scope="module", params=["native", "numpy"])
def model(model_file, request):
    """Both CPU paths: the compiled kernels (kernels/smplx_cpu.c, the default) and the pure numpy fallback."""
    if request.param == "native":
        from human3r_edge.runtime.smplx.native import load_native, native_status

        if load_native() is None:
            pytest.skip(f"compiled kernels unavailable here: {native_status()}")
    m = SMPLXModel.load(model_file, backend=request.param)
    assert m.backend == request.param
    return m


@pytest.fixture(scope="module")
def torch_layer(model_file):
    return smplx.build_layer(model_file, "smplx", gender="neutral", use_pca=False, flat_hand_mean=True, num_betas=10)


def torch_reference(layer, rot, betas, expr, transl, c2w):
    """What Human3R's SMPL_Layer + demo compute, written with the smplx package (rotation-matrix input)."""
    P = rot.shape[0]
    R = torch.from_numpy(rot)
    full = torch.eye(3).repeat(P, 55, 1, 1)
    full[:, torch.from_numpy(HUMAN3R_ROT_JOINTS[1:])] = R[:, 1:]
    with torch.no_grad():
        out = layer(betas=torch.from_numpy(betas), expression=torch.from_numpy(expr), global_orient=full[:, 0:1],
                    body_pose=full[:, 1:22], jaw_pose=full[:, 22:23], leye_pose=full[:, 23:24],
                    reye_pose=full[:, 24:25], left_hand_pose=full[:, 25:40], right_hand_pose=full[:, 40:55])
        v, j = out.vertices, out.joints
        pelvis = j[:, [0]]
        rg = R[:, 0].unsqueeze(1)
        j = (rg @ (j - pelvis).unsqueeze(-1)).squeeze(-1)
        v = (rg @ (v - pelvis).unsqueeze(-1)).squeeze(-1)
        head = j[:, [15]]
        t = torch.from_numpy(transl)[:, None]
        v, j = v - head + t, j - head + t
        c = torch.from_numpy(c2w)
        vw, jw = v @ c[:3, :3].T + c[:3, 3], j @ c[:3, :3].T + c[:3, 3]
    return v.numpy(), j.numpy(), vw.numpy(), jw.numpy()


def test_numpy_matches_smplx_torch_1_to_16_people(model, torch_layer):
    rng = np.random.default_rng(0)
    worst = 0.0
    for P in range(1, 17):
        rot, betas, expr, transl, c2w = random_params(rng, P)
        res = model.skin(rot, betas, expr, transl, c2w)
        v, j, vw, jw = torch_reference(torch_layer, rot, betas, expr, transl, c2w)
        errs = [np.abs(res.v_cam - v).max(), np.abs(res.j_cam - j).max(), np.abs(res.v_world - vw).max(),
                np.abs(res.j_world - jw).max(), np.abs(res.transl_pelvis - j[:, 0]).max()]
        worst = max(worst, *errs)
        assert res.v_cam.shape == (P, 10475, 3) and res.j_cam.shape == (P, 127, 3)
        assert max(errs) <= 1e-5, (P, errs)
    print(f"numpy vs smplx-torch fp32, P=1..16: max error {worst:.2e} m")


def test_fp16_blend_storage_within_1mm(model_file, torch_layer):
    half = SMPLXModel.load(model_file, blend_dtype=np.float16)
    assert half.blend_basis.dtype == np.float16
    rng = np.random.default_rng(1)
    rot, betas, expr, transl, c2w = random_params(rng, 16)
    res = half.skin(rot, betas, expr, transl, c2w)
    v, j, _, _ = torch_reference(torch_layer, rot, betas, expr, transl, c2w)
    err = max(np.abs(res.v_cam - v).max(), np.abs(res.j_cam - j).max())
    print(f"numpy fp16 blend storage vs smplx-torch: max error {err:.2e} m")
    assert err <= 1e-3


@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_goldens_smplx_outputs_reproduced(golden_dir, require_golden, synthetic_smplx, backend):
    g = np.load(golden_dir / "golden.npz")
    if "smplx/v3d_cam" not in g.files:
        pytest.skip(f"{golden_dir.name} has no smplx/* keys")
    m = SMPLXModel.load(synthetic_smplx, backend=backend)
    frame = g["demo/human_frame_index"]
    rows = golden(golden_dir).demo_human_rows()  # step/* rows of the kept frames' humans (resets add steps)
    c2w, K = g["demo/cam2world"], g["demo/intrinsics"]
    out = {k: [] for k in ("v3d_cam", "j3d_cam", "j2d", "transl_pelvis", "v3d_world", "j3d_world")}
    for f in np.unique(frame):  # people of one frame are skinned together, as the runtime does
        sel = np.flatnonzero(frame == f)
        r = m.skin(g["step/smpl_rotmat"][rows[sel]], g["step/smpl_shape"][rows[sel]],
                   g["step/smpl_expression"][rows[sel]], g["step/smpl_transl"][rows[sel]], c2w[f])
        for key, val in (("v3d_cam", r.v_cam), ("j3d_cam", r.j_cam), ("j2d", project_points(r.j_cam, K[f])),
                         ("transl_pelvis", r.transl_pelvis), ("v3d_world", r.v_world), ("j3d_world", r.j_world)):
            out[key].append(val)
    for key, parts in out.items():
        got, ref = np.concatenate(parts), g[f"smplx/{key}"]
        assert got.shape == ref.shape, key
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        print(f"golden smplx/{key}: max|a-b|/max|ref| = {rel:.2e}")
        assert rel <= 3e-5, key
    np.testing.assert_array_equal(m.faces, g["smplx/faces"])


def test_zero_people_and_no_c2w(model):
    r = model.skin(np.zeros((0, 53, 3, 3), np.float32), np.zeros((0, 10), np.float32),
                   np.zeros((0, 10), np.float32), np.zeros((0, 3), np.float32), np.eye(4))
    assert r.v_cam.shape == (0, 10475, 3) and r.j_world.shape == (0, 127, 3)
    rng = np.random.default_rng(2)
    rot, betas, expr, transl, _ = random_params(rng, 2)
    r = model.skin(rot, betas.astype(np.float64), expr, transl)  # float64 is accepted and used as float32
    assert r.v_world is None and r.j_world is None and r.v_cam.dtype == np.float32
    r.v_cam[:] = 0.0  # the caller owns the result: writing must not affect the model
    assert np.abs(model.skin(rot, betas, expr, transl).v_cam).max() > 0


@pytest.mark.parametrize("field,value,match", [
    ("rotmat", np.zeros((2, 52, 3, 3), np.float32), r"rotmat \| wrong shape: \(2, 52, 3, 3\)"),
    ("rotmat", np.zeros((2, 53, 9), np.float32), r"rotmat \| wrong shape"),
    ("betas", np.zeros((3, 10), np.float32), r"betas \| wrong shape: \(3, 10\). Expected \(2, 10\)"),
    ("expression", np.zeros((2, 11), np.float32), r"expression \| wrong shape"),
    ("transl", np.zeros((2,), np.float32), r"transl \| wrong shape"),
    ("c2w", np.zeros((3, 4), np.float32), r"c2w \| wrong shape"),
    ("rotmat", np.zeros((2, 53, 3, 3), np.int32), r"rotmat \| wrong dtype: int32"),
    ("betas", np.zeros((2, 10), np.complex64), r"betas \| wrong dtype: complex64"),
    ("transl", np.array([[0, 0, np.nan], [0, 0, 1]], np.float32), r"transl \| non-finite values.*index \[0, 2\]"),
    ("expression", np.full((2, 10), np.inf, np.float32), r"expression \| non-finite"),
    ("rotmat", np.full((2, 53, 3, 3), np.nan, np.float32), r"rotmat \| non-finite"),
    ("c2w", np.full((4, 4), np.inf, np.float32), r"c2w \| non-finite"),
])
def test_bad_input_is_a_clear_error(model, field, value, match):
    rng = np.random.default_rng(3)
    rot, betas, expr, transl, c2w = random_params(rng, 2)
    args = dict(rotmat=rot, betas=betas, expression=expr, transl=transl, c2w=c2w)
    args[field] = value
    with pytest.raises(Human3RError, match=match):
        model.skin(**args)


def test_bad_blend_dtype(model_file):
    with pytest.raises(Human3RError, match="unsupported blend_dtype"):
        SMPLXModel.load(model_file, blend_dtype=np.float64)


def test_project_points_shapes():
    pts = np.array([[[1.0, 2.0, 4.0]]], np.float32)
    K = np.array([[100.0, 0, 50], [0, 200.0, 60], [0, 0, 1]], np.float32)
    np.testing.assert_allclose(project_points(pts, K), [[[75.0, 160.0]]])
    with pytest.raises(Human3RError, match="K \\| wrong shape"):
        project_points(pts, np.eye(4))


def test_runtime_smplx_does_not_import_torch():
    code = ("import sys; import human3r_edge.runtime.smplx.skinning, human3r_edge.runtime.smplx.gpu, "
            "human3r_edge.runtime.smplx.synthetic, human3r_edge.kernels.host_emu.launch; "
            "assert 'torch' not in sys.modules and 'pycuda' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_scratch_reuse_across_changing_people_counts(model):
    rng = np.random.default_rng(4)
    args3 = random_params(rng, 3)
    first = model.skin(*args3)
    model.skin(*random_params(rng, 7))  # grows the per-thread scratch buffers
    model.skin(*random_params(rng, 1))
    again = model.skin(*args3)
    np.testing.assert_array_equal(first.v_cam, again.v_cam)
    np.testing.assert_array_equal(first.j_world, again.j_world)
