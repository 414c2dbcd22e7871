"""Rotations: 6D -> matrix by Gram-Schmidt (hand-written cross), rotvec conversions, pose transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from human3r_edge.export.model.postprocess import (cross3, exp_points, gram_schmidt, pose_output, pose_to_c2w,
                                                   rot6d_to_rotmat)
from human3r_edge.export.model.scene import chain_poses, rotmat_to_rotvec, rotvec_to_rotmat


def _np_gram_schmidt(m: np.ndarray) -> np.ndarray:
    """Reference orthonormalisation in float64: classical Gram-Schmidt on the two columns, third = cross."""
    a, b = m[:, 0].astype(np.float64), m[:, 1].astype(np.float64)
    e1 = a / np.linalg.norm(a)
    e2 = b - e1 * (e1 @ b)
    e2 /= np.linalg.norm(e2)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


def test_cross3_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    np.testing.assert_allclose(cross3(torch.tensor(a), torch.tensor(b)).numpy(), np.cross(a, b), atol=1e-12)


def test_gram_schmidt_matches_reference_orthonormalisation():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(200, 3, 2)).astype(np.float32)
    R = gram_schmidt(torch.from_numpy(m)).numpy()
    ref = np.stack([_np_gram_schmidt(x) for x in m])
    np.testing.assert_allclose(R, ref, atol=2e-6)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)
    # the QR factorisation spans the same first column / plane (up to the sign convention of QR)
    q, r = np.linalg.qr(m[0].astype(np.float64))
    np.testing.assert_allclose(np.abs(R[0][:, :2]), np.abs(q), atol=2e-6)


def test_rot6d_layout_is_column_pairs():
    """Each 6-vector [R00, R01, R10, R11, R20, R21] is read row-major as a 3x2 block (columns = axes)."""
    theta = 0.7
    Rz = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]], np.float32)
    six = Rz[:, :2].reshape(-1)  # row-major over the 3x2 block
    x = torch.from_numpy(np.tile(six, 53))[None]  # (1, 318)
    R = rot6d_to_rotmat(x)
    assert R.shape == (1, 53, 3, 3)
    np.testing.assert_allclose(R[0, 0].numpy(), Rz, atol=1e-6)
    identity = torch.tensor([1.0, 0, 0, 1, 0, 0]).repeat(2)[None]
    np.testing.assert_allclose(rot6d_to_rotmat(identity)[0].numpy(), np.stack([np.eye(3)] * 2), atol=0)


@pytest.mark.parametrize("angle", [0.0, 1e-4, 0.5, 2.0, np.pi - 1e-3, np.pi])
def test_rotvec_roundtrip(angle):
    rng = np.random.default_rng(2)
    axis = rng.normal(size=(8, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    rv = torch.from_numpy((axis * angle).astype(np.float32))
    R = rotvec_to_rotmat(rv)
    np.testing.assert_allclose(torch.linalg.det(R).numpy(), 1.0, atol=1e-5)
    back = rotmat_to_rotvec(R)
    np.testing.assert_allclose(rotvec_to_rotmat(back).numpy(), R.numpy(), atol=2e-5)
    assert (torch.linalg.norm(back, dim=-1) <= np.pi + 1e-4).all()


def test_pose_output_and_c2w():
    out = torch.tensor([[0.3, -0.2, 0.1, -2.0, 0.1, 0.2, 0.3]])
    pose = pose_output(out)
    q = pose[0, 3:]
    assert abs(float(q.norm()) - 1) < 1e-6 and q[0] >= 0  # unit quaternion, w >= 0
    t = out[0, :3]
    d = float(t.norm())
    np.testing.assert_allclose(pose[0, :3].numpy(), (t * np.expm1(d) / d).numpy(), rtol=1e-5)
    T = pose_to_c2w(pose)[0].numpy()
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(T[3], [0, 0, 0, 1])
    np.testing.assert_allclose(exp_points(torch.tensor([[3.0, 4.0, 0.0]]))[0].numpy(),
                               [0.6 * np.expm1(5.0), 0.8 * np.expm1(5.0), 0.0], rtol=1e-5)


def test_chain_poses_uses_earlier_reset_frames():
    rng = np.random.default_rng(3)
    c2w = torch.from_numpy(np.stack([np.eye(4) + 0.1 * np.pad(rng.normal(size=(3, 4)), ((0, 1), (0, 0)))
                                     for _ in range(5)]).astype(np.float32))
    reset = torch.tensor([False, True, False, True, False])
    out = chain_poses(c2w, reset).numpy()
    c = c2w.numpy()
    np.testing.assert_allclose(out[:2], c[:2], atol=1e-6)
    np.testing.assert_allclose(out[2], c[1] @ c[2], atol=1e-5)
    np.testing.assert_allclose(out[4], c[1] @ c[3] @ c[4], atol=1e-5)
    assert chain_poses(c2w, torch.zeros(5, dtype=torch.bool)) is c2w
