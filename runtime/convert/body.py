"""SMPL-X rest shape and forward kinematics of a track in the run's world frame, for the glb and BVH exporters.

The same arithmetic as runtime/smplx/skinning.py (`SMPLXModel._transforms`), in float64 and kept per joint:

    J        = j_template + j_dirs . [betas, expression]               rest joints of the baked shape
    G_j      = G_parent(j) . [R_j | J_j - J_parent(j)]                 forward kinematics, root rotation = I
    M        = [R_glob | transl - R_glob . G_head.t]                   Human3R: rotate about the HEAD joint
    W_j      = c2w . M . G_j                                           joint-to-world transform of joint j

so a joint's world transform factors into the root's W_0 = c2w . M . [I | J_0] and constant-offset locals
[R_j | J_j - J_parent]: exactly the node hierarchy glTF and BVH store. Linear blend skinning with these joints
(and the rest vertices of the baked shape) is SMPL-X with pose correctives off.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from human3r_edge.runtime.smplx.constants import HEAD, HUMAN3R_ROT_JOINTS, NUM_COEFFS, NUM_JOINTS, NUM_VERTS
from human3r_edge.runtime.convert.run_folder import Track

# SMPL-X joint names in model order (smplx's JOINT_NAMES[:55])
JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw", "left_eye_smplhf",
    "right_eye_smplhf", "left_index1", "left_index2", "left_index3", "left_middle1", "left_middle2",
    "left_middle3", "left_pinky1", "left_pinky2", "left_pinky3", "left_ring1", "left_ring2", "left_ring3",
    "left_thumb1", "left_thumb2", "left_thumb3", "right_index1", "right_index2", "right_index3", "right_middle1",
    "right_middle2", "right_middle3", "right_pinky1", "right_pinky2", "right_pinky3", "right_ring1", "right_ring2",
    "right_ring3", "right_thumb1", "right_thumb2", "right_thumb3",
)
BODY_JOINTS = 22  # pelvis + 21 body joints
HAND_JOINTS = tuple(range(25, 55))  # 15 left + 15 right finger joints (parents: the wrists 20, 21)
# OpenCV world (x right, y down, z forward) -> a Y-up frame (x right, y up, z toward the viewer): 180 deg about x
CV_TO_YUP = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class RestShape:
    """A track's baked shape: rest vertices (V, 3) and joints (55, 3) float64, from its coefficients (20,)."""

    coeffs: np.ndarray  # (20,) betas then expression
    vertices: np.ndarray  # (V, 3)
    joints: np.ndarray  # (55, 3)


def baked_coeffs(track: Track) -> np.ndarray:
    """The one shape a track is exported with: the mean of its per-frame betas and expression. (20,) float64.

    glTF and BVH hold one rest shape per skeleton; the network predicts betas per frame, which vary a little."""
    return np.concatenate([track.betas.mean(0)[:10], track.expression.mean(0)[:10]])


def rest_shape(model, coeffs: np.ndarray) -> RestShape:
    """Rest vertices and joints of an SMPLXModel for shape+expression `coeffs` (20,) (no pose blend)."""
    c = np.asarray(coeffs, np.float64).reshape(NUM_COEFFS)
    basis = np.asarray(model.blend_basis[:NUM_COEFFS], np.float64)  # (20, 3V) planar
    planar = np.asarray(model.template, np.float64) + c @ basis
    verts = planar.reshape(3, NUM_VERTS).T.copy()
    joints = (np.asarray(model.j_template, np.float64)
              + (c @ np.asarray(model.j_dirs, np.float64)).reshape(NUM_JOINTS, 3))
    return RestShape(c, verts, joints)


def local_rotations(rotmat: np.ndarray) -> np.ndarray:
    """Human3R's (F, 53, 3, 3) rotations -> (F, 55, 3, 3) local rotations in SMPL-X joint order, root = I
    (the global rotation is part of the root transform, see `world_transforms`); the eyes stay identity."""
    F = rotmat.shape[0]
    R = np.broadcast_to(np.eye(3), (F, NUM_JOINTS, 3, 3)).copy()
    R[:, HUMAN3R_ROT_JOINTS[1:]] = rotmat[:, 1:]
    return R


def world_transforms(parents: np.ndarray, joints: np.ndarray, track: Track) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics of every frame of `track` with rest joints `joints` (55, 3).

    Returns (R, W): R (F, 55, 3, 3) local rotations (root = I) and W (F, 55, 4, 4) joint-to-world transforms
    (the run's world frame); W[:, 0] is the root transform c2w . M . [I | J_0]."""
    R = local_rotations(track.rotmat)
    F = R.shape[0]
    L = np.zeros((F, NUM_JOINTS, 4, 4))
    L[..., :3, :3] = R
    L[:, 1:, :3, 3] = joints[1:] - joints[parents[1:]]
    L[:, 0, :3, 3] = joints[0]
    L[..., 3, 3] = 1.0
    G = np.empty_like(L)
    G[:, 0] = L[:, 0]
    for j in range(1, NUM_JOINTS):  # parents precede children in SMPL-X order
        G[:, j] = G[:, parents[j]] @ L[:, j]
    r_glob = track.rotmat[:, 0]
    M = np.zeros((F, 4, 4))
    M[:, :3, :3] = r_glob
    M[:, :3, 3] = track.transl_head_cam - (r_glob @ G[:, HEAD, :3, 3, None])[..., 0]
    M[:, 3, 3] = 1.0
    W = track.c2w[:, None] @ M[:, None] @ G
    return R, W


def lbs(vertices: np.ndarray, weights: np.ndarray, W: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Linear blend skinning of rest `vertices` (V, 3) with `weights` (V, 55) and joint-to-world W (55, 4, 4)
    around rest `joints` (55, 3): sum_j w_vj W_j [I | -J_j] [v; 1]. Returns (V, 3) float64 (reference for tests)."""
    A = W.copy()
    A[:, :3, 3] -= (W[:, :3, :3] @ joints[..., None])[..., 0]
    T = np.einsum("vj,jab->vab", weights, A[:, :3, :])  # (V, 3, 4)
    return np.einsum("vab,vb->va", T[..., :3], vertices) + T[..., 3]
