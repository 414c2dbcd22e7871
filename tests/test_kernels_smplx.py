"""The SMPL-X CUDA kernels, run through the host emulation, against the numpy skinning; the launcher's checks."""
from __future__ import annotations

import ctypes
import os
import shutil

import numpy as np
import pytest

from human3r_edge.kernels.build import kernel_source
from human3r_edge.kernels.host_emu import compile_module
from human3r_edge.errors import BackendUnavailable, Human3RError
from human3r_edge.runtime.smplx.gpu import CudaSkinner, device_constants
from human3r_edge.runtime.smplx.skinning import NUM_BLEND, SMPLXModel
from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx
from support.fake_gpu import fake_gpu, primary_gpu  # noqa: F401  (fixtures)
from support.goldens import golden
from support.smplx_inputs import random_params


pytestmark = pytest.mark.skipif(not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
                                reason="the host emulation needs a C++ compiler (g++ or $CXX)")
TOL = 1e-5  # metres: the kernels and numpy differ only in float32 summation order


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return str(write_synthetic_smplx(tmp_path_factory.mktemp("smplx"), seed=4, compress=False))


@pytest.fixture(scope="module")
def model(model_file):
    return SMPLXModel.load(model_file)


def _max_err(a, b):
    return max(float(np.abs(getattr(a, k) - getattr(b, k)).max()) for k in ("v_cam", "j_cam", "v_world", "j_world",
                                                                              "transl_pelvis"))


@pytest.mark.parametrize("P,order", [(1, "forward"), (3, "reverse"), (5, "shuffle")])
def test_emulated_kernels_match_numpy(model, P, order, primary_gpu):
    sk = CudaSkinner(model, max_people=5, driver=primary_gpu.cuda)
    sk._module.default_order = order  # thread order inside each barrier phase
    rot, betas, expr, transl, c2w = random_params(np.random.default_rng(P), P)
    got, ref = sk.skin(rot, betas, expr, transl, c2w), model.skin(rot, betas, expr, transl, c2w)
    err = _max_err(got, ref)
    print(f"emulated CUDA vs numpy, P={P}, order={order}: {err:.2e} m")
    assert err <= TOL
    no_world = sk.skin(rot, betas, expr, transl)
    assert no_world.v_world is None and np.abs(no_world.v_cam - ref.v_cam).max() <= TOL


def test_emulated_fp16_kernel_matches_fp16_numpy(model_file, primary_gpu):
    half = SMPLXModel.load(model_file, blend_dtype=np.float16)
    sk = CudaSkinner(half, max_people=2, driver=primary_gpu.cuda)
    assert sk._blend.name == "smplx_blend_f16_kernel"
    rot, betas, expr, transl, c2w = random_params(np.random.default_rng(7), 2)
    assert _max_err(sk.skin(rot, betas, expr, transl, c2w), half.skin(rot, betas, expr, transl, c2w)) <= TOL


def test_more_people_than_k_and_bad_input_are_clear_errors(model, primary_gpu):
    sk = CudaSkinner(model, max_people=2, driver=primary_gpu.cuda)
    rot, betas, expr, transl, c2w = random_params(np.random.default_rng(0), 3)
    with pytest.raises(Human3RError, match="more people than the preallocated slots: 3. Expected <= max_people = 2"):
        sk.skin(rot, betas, expr, transl, c2w)
    with pytest.raises(Human3RError, match="transl \\| non-finite"):
        sk.skin(rot[:2], betas[:2], expr[:2], np.full((2, 3), np.nan, np.float32))
    assert sk.skin(rot[:0], betas[:0], expr[:0], transl[:0]).v_cam.shape == (0, 10475, 3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(Human3RError, match="max_people must be an int >= 1"):
            CudaSkinner(model, max_people=bad, driver=primary_gpu.cuda)


def test_without_pycuda_the_launcher_says_so(model):
    pytest.importorskip("numpy")
    try:
        import pycuda  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="pycuda is not installed"):
            CudaSkinner(model, max_people=1)
    else:
        pytest.skip("pycuda is installed here; the GPU test covers it")


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def test_blend_v1_equals_v2_and_c_reference_matches_numpy(model):
    """Kernel version 1 (per person) vs version 2 (people in registers), and the .cu's CPU reference vs numpy."""
    mod = compile_module(kernel_source("smplx_skinning.cu"), defines=["KERNEL_CPU_REFERENCE"])
    c = device_constants(model)
    P, n3 = 3, c["template"].shape[0]
    feats = np.random.default_rng(0).normal(size=(P, NUM_BLEND)).astype(np.float32) * 0.2
    out1, out2 = np.zeros((P, n3), np.float32), np.zeros((P, n3), np.float32)
    mod.get_function("smplx_blend_v1_kernel")(feats, np.int32(P), np.int32(NUM_BLEND), c["basis"], c["template"],
                                              np.int32(n3), out1, block=(256, 1, 1), grid=((n3 + 255) // 256, P))
    mod.get_function("smplx_blend_f32_kernel")(feats, np.int32(P), np.int32(NUM_BLEND), c["basis"], c["template"],
                                               np.int32(n3), out2, block=(256, 1, 1), grid=((n3 + 255) // 256, 1))
    ref = feats @ model.blend_basis + model.template
    assert np.abs(out1 - ref).max() <= 1e-5 and np.abs(out2 - ref).max() <= 1e-5

    rot, betas, expr, transl, c2w = random_params(np.random.default_rng(11), P)
    params = np.zeros((P, 500), np.float32)
    params[:, :477], params[:, 477:487], params[:, 487:497], params[:, 497:] = rot.reshape(P, -1), betas, expr, transl
    V = 10475
    v, vw = np.zeros((P, V, 3), np.float32), np.zeros((P, V, 3), np.float32)
    j, jw = np.zeros((P, 127, 3), np.float32), np.zeros((P, 127, 3), np.float32)
    cref = mod.host_function("smplx_cpu_reference", None, [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p] * 7 +
                             [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                              ctypes.c_int] + [ctypes.c_void_p] * 5)
    cref(_ptr(params), P, NUM_BLEND, _ptr(c["basis"]), _ptr(c["template"]), V, _ptr(c["j_template"]),
         _ptr(c["j_dirs"]), _ptr(c["parents"]), _ptr(c["joint_rot"]), _ptr(c["pose_slot"]), _ptr(c["w_idx"]),
         _ptr(c["w_val"]), c["w_idx"].shape[0], _ptr(c["extra"]), 21, _ptr(c["lmk_vid"]), _ptr(c["lmk_bary"]), 51,
         _ptr(np.ascontiguousarray(c2w)), _ptr(v), _ptr(j), _ptr(vw), _ptr(jw))
    want = model.skin(rot, betas, expr, transl, c2w)
    for got, ref_ in ((v, want.v_cam), (j, want.j_cam), (vw, want.v_world), (jw, want.j_world)):
        assert np.abs(got - ref_).max() <= TOL


@pytest.mark.gpu
def test_real_gpu_matches_numpy(model):
    try:
        import pycuda.autoinit  # noqa: F401
    except Exception as exc:  # ImportError, or no device / driver
        pytest.skip(f"needs pycuda and an NVIDIA GPU: {exc!r}")
    sk = CudaSkinner(model, max_people=16)
    rot, betas, expr, transl, c2w = random_params(np.random.default_rng(0), 16)
    assert _max_err(sk.skin(rot, betas, expr, transl, c2w), model.skin(rot, betas, expr, transl, c2w)) <= TOL


def test_emulated_kernels_reproduce_the_goldens(golden_dir, require_golden, synthetic_smplx, primary_gpu):
    g = np.load(golden_dir / "golden.npz")
    if "smplx/v3d_cam" not in g.files:
        pytest.skip(f"{golden_dir.name} has no smplx/* keys")
    from human3r_edge.runtime.smplx.skinning import project_points
    m = SMPLXModel.load(synthetic_smplx)
    frame = g["demo/human_frame_index"]
    rows = golden(golden_dir).demo_human_rows()  # step/* rows of the kept frames' humans (resets add steps)
    sk = CudaSkinner(m, max_people=int(np.bincount(frame).max()), driver=primary_gpu.cuda)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("v3d_cam", "j3d_cam", "j2d", "transl_pelvis", "v3d_world",
                                                          "j3d_world")}
    for f in np.unique(frame):
        sel = np.flatnonzero(frame == f)
        r = sk.skin(g["step/smpl_rotmat"][rows[sel]], g["step/smpl_shape"][rows[sel]],
                    g["step/smpl_expression"][rows[sel]], g["step/smpl_transl"][rows[sel]], g["demo/cam2world"][f])
        j2d = project_points(r.j_cam, g["demo/intrinsics"][f])
        for key, val in (("v3d_cam", r.v_cam), ("j3d_cam", r.j_cam), ("j2d", j2d), ("transl_pelvis", r.transl_pelvis),
                         ("v3d_world", r.v_world), ("j3d_world", r.j_world)):
            parts[key].append(val)
    for key, vals in parts.items():
        ref = g[f"smplx/{key}"]
        rel = np.abs(np.concatenate(vals) - ref).max() / np.abs(ref).max()
        print(f"emulated CUDA golden smplx/{key}: {rel:.2e}")
        assert rel <= 3e-5, key
