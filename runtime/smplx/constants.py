"""SMPL-X topology facts shared by the loader, the numpy skinning, the CUDA launcher and the synthetic generator."""
from __future__ import annotations

import numpy as np

NUM_VERTS = 10475
NUM_FACES = 20908
NUM_JOINTS = 55  # pelvis + 21 body + jaw + 2 eyes + 2 x 15 finger joints
NUM_BETAS = 10  # Human3R: num_betas=10
NUM_EXPR = 10  # Human3R: 10 expression coefficients
NUM_COEFFS = NUM_BETAS + NUM_EXPR  # shape and expression coefficients blended together
SHAPE_SPACE_DIM = 300  # in the official file shapedirs[..., :300] are shape PCs, [..., 300:] expression PCs
NUM_POSE_FEATURES = (NUM_JOINTS - 1) * 9  # 486: (R_j - I) of joints 1..54, row-major 3x3 each
NUM_LANDMARKS = 51  # static face landmarks (use_face_contour=False)
NUM_OUTPUT_JOINTS = 127  # 55 skeleton + 21 vertex-selected + 51 landmarks
NUM_HUMAN3R_ROTS = 53  # global, 21 body, 15 left hand, 15 right hand, jaw
PELVIS, HEAD, JAW, LEFT_EYE, RIGHT_EYE = 0, 15, 22, 23, 24

# The SMPL-X kinematic tree: parent of each joint (pelvis is the root).
PARENTS = np.array([
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
], dtype=np.int64)

# Vertices that smplx's VertexJointSelector appends after the skeleton, in its order:
# nose, right eye, left eye, right ear, left ear, left big toe, left small toe, left heel, right big toe,
# right small toe, right heel, left thumb/index/middle/ring/pinky tips, right thumb/index/middle/ring/pinky tips.
EXTRA_JOINT_VERTICES = np.array([
    9120, 9929, 9448, 616, 6,
    5770, 5780, 8846, 8463, 8474, 8635,
    5361, 4933, 5058, 5169, 5286,
    8079, 7669, 7794, 7905, 8022,
], dtype=np.int64)

# SMPL-X joint driven by each of Human3R's 53 rotations (global, body 1..21, left hand 25..39, right hand 40..54,
# jaw 22). The eyes (23, 24) are never predicted and stay at identity.
HUMAN3R_ROT_JOINTS = np.concatenate([np.arange(0, 22), np.arange(25, 40), np.arange(40, 55), [JAW]]).astype(np.int64)


def joint_depths(parents: np.ndarray = PARENTS) -> np.ndarray:
    """Depth of every joint in the tree (root 0). (J,) int64."""
    depth = np.zeros(len(parents), dtype=np.int64)
    for j in range(1, len(parents)):  # parents precede children in SMPL-X order
        depth[j] = depth[parents[j]] + 1
    return depth


def depth_levels(parents: np.ndarray = PARENTS) -> list[np.ndarray]:
    """Joints grouped by depth, root level excluded: forward kinematics runs one vectorised step per level."""
    depth = joint_depths(parents)
    return [np.flatnonzero(depth == d) for d in range(1, int(depth.max()) + 1)]
