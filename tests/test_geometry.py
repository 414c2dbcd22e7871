"""Camera geometry: pose decoding, Weiszfeld focal, world points and reset chaining against the goldens."""
from __future__ import annotations

import numpy as np
import pytest

from human3r_edge.runtime.geometry import (PoseChain, chain_poses, intrinsics, pose_to_c2w, quaternion_to_matrix,
                                          transform_points, weiszfeld_focal)
from support.goldens import golden

TOL = 3e-5  # relative to max|ref|, the goldens' float tolerance


def close(got, ref, tol=TOL):
    ref = np.asarray(ref, np.float64)
    err = float(np.max(np.abs(np.asarray(got, np.float64) - ref)))
    scale = float(np.max(np.abs(ref)))
    assert err <= tol * scale, f"max abs err {err:.3g} > {tol} * {scale:.3g}"


@pytest.fixture
def z(golden_dir, require_golden):
    return np.load(golden_dir / "golden.npz")


def test_pose_to_c2w(z):
    close(pose_to_c2w(z["step/camera_pose"]), z["step/camera_pose_c2w_4x4"])


def test_focal_and_intrinsics(z):
    pts = z["step/pts3d_in_self_view"][z["meta/kept_step_index"]]
    focal = np.array([weiszfeld_focal(p) for p in pts], np.float32)
    close(focal, z["demo/focal"])
    h, w = pts.shape[1:3]
    close(np.stack([intrinsics(f, w, h) for f in focal]), z["demo/intrinsics"])
    np.testing.assert_array_equal(z["demo/pp"][0], [w // 2, h // 2])


def test_world_pose_and_points(z):
    kept = z["meta/kept_step_index"]
    seg = pose_to_c2w(z["step/camera_pose"][kept])
    flags = z["meta/reset_flags_per_step"][kept]
    world = chain_poses(seg, flags)
    close(world, z["demo/cam2world"])
    close(world[:, :3, :3], z["demo/R_c2w"])
    close(world[:, :3, 3], z["demo/t_c2w"])
    pts = np.stack([transform_points(c, p) for c, p in zip(world, z["step/pts3d_in_self_view"][kept])])
    close(pts, z["demo/pts3d_world"])


def reference_chaining(poses, reset_mask):
    """Direct transcription of the demo's formula: bases = cumprod(where(reset, P, I)) shifted by one."""
    n = len(poses)
    eye = np.eye(4)
    reset_poses = np.where(reset_mask[:, None, None], poses, eye)
    cum = np.empty_like(reset_poses)
    cum[0] = reset_poses[0]
    for i in range(1, n):
        cum[i] = cum[i - 1] @ reset_poses[i]
    shifted = np.concatenate([eye[None], cum[:-1]], 0)
    return np.einsum("bij,bjk->bik", shifted, poses)


def random_c2w(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    t = rng.normal(size=(n, 3))
    return pose_to_c2w(np.concatenate([t, q], 1).astype(np.float32))


def test_chaining_synthetic_resets():
    rng = np.random.default_rng(0)
    poses = random_c2w(rng, 12)
    flags = np.zeros(12, bool)
    flags[[2, 5, 6, 10]] = True  # includes two consecutive reset frames
    got = chain_poses(poses, flags)
    ref = reference_chaining(poses.astype(np.float64), flags)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    # before the first reset the world is the first segment's
    np.testing.assert_allclose(got[:3], poses[:3], atol=1e-7)
    # the frame after a reset is expressed relative to the reset frame's camera
    np.testing.assert_allclose(got[3], (got[2].astype(np.float64) @ poses[3]), atol=2e-5)


def test_pose_chain_reset():
    rng = np.random.default_rng(1)
    p = random_c2w(rng, 2)
    c = PoseChain()
    c.on_reset(p[0])
    assert not np.allclose(c.world(p[1]), p[1])
    c.reset()
    np.testing.assert_array_equal(c.world(p[1]), p[1])


def test_quaternion_unnormalised_is_rotation():
    r = quaternion_to_matrix(np.array([2.0, 0.0, 0.0, 2.0]))  # 90 deg about z, |q| = 2.8
    np.testing.assert_allclose(r, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


def test_focal_degenerate_inputs():
    flat = np.zeros((4, 6, 3), np.float32)  # all z = 0 -> every ratio 0/0 -> nan -> 0
    assert np.isnan(weiszfeld_focal(flat))
    # a perfect pinhole point map with f = 50 is recovered
    h, w, f = 24, 32, 50.0
    u, v = np.meshgrid(np.arange(w) - w // 2, np.arange(h) - h // 2, indexing="xy")
    z = np.full((h, w), 3.0)
    pts = np.stack([u * z / f, v * z / f, z], -1).astype(np.float32)
    assert abs(weiszfeld_focal(pts) - f) < 1e-3
    # a mirrored map gives a negative fit, clipped at 0 as the reference does
    assert weiszfeld_focal(pts * np.array([-1, -1, 1], np.float32)) == 0.0


def test_axis_angle_roundtrip_including_near_pi(z, golden_dir):
    from human3r_edge.runtime.geometry import matrix_to_quaternion, rotmat_to_axis_angle

    rng = np.random.default_rng(5)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[:10, 0] = 1e-7  # angles ~ pi
    q[10:20] = [1, 1e-9, 0, 0]  # tiny angles
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    r = quaternion_to_matrix(q)
    np.testing.assert_allclose(np.abs(np.sum(matrix_to_quaternion(r) * q, -1)), 1.0, atol=1e-9)
    aa = rotmat_to_axis_angle(r).astype(np.float64)
    angle = np.linalg.norm(aa, axis=-1)
    assert np.all(angle <= np.pi + 1e-6)
    # back to matrices via Rodrigues
    k = aa / np.maximum(angle, 1e-12)[:, None]
    kx = np.zeros((len(k), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx -= kx.transpose(0, 2, 1)
    rr = np.eye(3) + np.sin(angle)[:, None, None] * kx + (1 - np.cos(angle))[:, None, None] * kx @ kx
    np.testing.assert_allclose(rr, r, atol=2e-6)
    # the golden's rotation matrices against its rotvecs (as rotation matrices: the sign at pi is a convention)
    rv = rotmat_to_axis_angle(z["step/smpl_rotmat"][golden(golden_dir).demo_human_rows()])  # the kept frames' humans
    ref = z["demo/smpl_rotvec"]
    same = np.isclose(rv, ref, atol=1e-4).all(-1) | np.isclose(np.linalg.norm(ref, axis=-1), np.pi, atol=1e-3)
    assert same.mean() > 0.99
