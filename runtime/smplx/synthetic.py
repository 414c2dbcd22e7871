"""A seeded synthetic SMPL-X model in the official file format, plus a synthetic `smpl_mean_params.npz`.

The real model is licence-gated, so the demo and the tests use this stand-in. It has the official key set,
shapes and dtypes (including the object arrays and the stray `allow_pickle` entry of the published npz), the
real SMPL-X kinematic tree and the public landmark vertex ids, and well-behaved content: a "capsule" body in a
T-pose, normalised skinning weights with at most three joints per vertex, a sparse joint regressor whose rows
sum to one, small shape/expression blend shapes and small localised pose correctives. It contains nothing
derived from the real model. Generation is vectorised (about a second, most of it zlib).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from human3r_edge.runtime.smplx.constants import EXTRA_JOINT_VERTICES, NUM_FACES, NUM_JOINTS, NUM_LANDMARKS, NUM_VERTS, PARENTS

DEFAULT_SEED = 7
NUM_SHAPE_PCS, NUM_EXPR_PCS = 300, 100  # official shapedirs: (V, 3, 400)
NUM_ACTIVE_PCS = 12  # non-zero shape and expression components (Human3R reads 10 of each)
NUM_DYNAMIC_LMK = (79, 17)  # dynamic (contour) landmark tables of the official file
NUM_UV, HAND_PCA_ROWS = 11313, 1554

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw", "left_eye_smplhf",
    "right_eye_smplhf",
    *(f"{side}_{finger}{k}" for side in ("left", "right")
      for finger in ("index", "middle", "pinky", "ring", "thumb") for k in (1, 2, 3)),
)

# rest position of the 25 body/face joints (metres; x to the subject's left, y up, z forward)
_BODY_REST = np.array([
    [0.00, -0.33, 0.02], [0.07, -0.42, 0.00], [-0.07, -0.42, 0.00], [0.00, -0.22, -0.01],
    [0.10, -0.80, 0.01], [-0.10, -0.80, 0.01], [0.00, -0.09, 0.02], [0.09, -1.21, -0.03],
    [-0.09, -1.21, -0.03], [0.00, -0.03, 0.03], [0.11, -1.27, 0.09], [-0.11, -1.27, 0.09],
    [0.00, 0.18, -0.01], [0.07, 0.09, 0.00], [-0.07, 0.09, 0.00], [0.00, 0.27, 0.04],
    [0.17, 0.12, -0.01], [-0.17, 0.12, -0.01], [0.43, 0.10, -0.03], [-0.43, 0.10, -0.03],
    [0.69, 0.10, -0.02], [-0.69, 0.10, -0.02], [0.00, 0.22, 0.06], [0.03, 0.31, 0.10], [-0.03, 0.31, 0.10],
])
# body-part size (share of the vertices) and capsule radius per body joint; fingers share _FINGER_SHARE
_BODY_SHARE = np.array([6, 6, 6, 5, 6, 6, 5, 3, 3, 5, 2.5, 2.5, 3, 2, 2, 12, 4, 4, 4, 4, 2, 2, 3, 0.5, 0.5])
_BODY_RADIUS = np.array([0.12, 0.07, 0.07, 0.12, 0.06, 0.06, 0.12, 0.045, 0.045, 0.12, 0.04, 0.04, 0.05,
                         0.04, 0.04, 0.09, 0.045, 0.045, 0.04, 0.04, 0.03, 0.03, 0.03, 0.012, 0.012])
_FINGER_SHARE, _FINGER_RADIUS = 0.5, 0.009
# landmark-like vertices: the part each public extra-joint vertex belongs to (head, feet, heels, finger tips)
_EXTRA_PART = np.array([15, 15, 15, 15, 15, 10, 10, 7, 11, 11, 8, 39, 27, 30, 36, 33, 54, 42, 45, 51, 48])


def rest_joints() -> np.ndarray:
    """T-pose joint positions of the synthetic body. (55, 3) float64."""
    J = np.zeros((NUM_JOINTS, 3))
    J[:25] = _BODY_REST
    # fingers in file order index, middle, pinky, ring, thumb; 3 joints each, pointing away from the wrist
    forward = np.array([0.03, 0.01, -0.03, -0.01, 0.045])
    drop = np.array([0.0, 0.0, -0.005, -0.003, -0.02])
    for side, wrist, first in ((1.0, 20, 25), (-1.0, 21, 40)):
        for f in range(5):
            start, step = (0.055, 0.024) if f == 4 else (0.085, 0.028)
            for k in range(3):
                J[first + 3 * f + k] = J[wrist] + [side * (start + k * step), drop[f], forward[f]]
    return J


def _children() -> list[np.ndarray]:
    return [np.flatnonzero(PARENTS == j) for j in range(NUM_JOINTS)]


def _assign_parts(rng: np.random.Generator) -> np.ndarray:
    """Body part (joint index) of every vertex: sizes by share, interleaved like a real mesh ordering."""
    share = np.full(NUM_JOINTS, _FINGER_SHARE)
    share[:25] = _BODY_SHARE
    counts = np.floor(share / share.sum() * NUM_VERTS).astype(np.int64)
    counts[15] += NUM_VERTS - counts.sum()
    part = rng.permutation(np.repeat(np.arange(NUM_JOINTS), counts))
    # put the public extra-joint vertices in their parts by swapping with a vertex of that part
    for vid, j in zip(EXTRA_JOINT_VERTICES, _EXTRA_PART):
        if part[vid] != j:
            pool = np.flatnonzero(part == j)
            pool = pool[~np.isin(pool, EXTRA_JOINT_VERTICES)]
            part[pool[0]], part[vid] = part[vid], j
    return part


def _vertices(rng: np.random.Generator, part: np.ndarray, J: np.ndarray) -> np.ndarray:
    """Each vertex lies on a capsule around the segment from its joint towards its children. (V, 3)."""
    kids = _children()
    end = np.empty_like(J)
    for j in range(NUM_JOINTS):
        if len(kids[j]):
            end[j] = J[kids[j]].mean(0)
        elif PARENTS[j] >= 0:
            end[j] = J[j] + 0.6 * (J[j] - J[PARENTS[j]])
        else:
            end[j] = J[j]
    radius = np.full(NUM_JOINTS, _FINGER_RADIUS)
    radius[:25] = _BODY_RADIUS
    t = rng.uniform(0.0, 1.0, size=(NUM_VERTS, 1))
    d = rng.normal(size=(NUM_VERTS, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = radius[part][:, None] * rng.uniform(0.75, 1.0, size=(NUM_VERTS, 1))
    return J[part] + t * (end[part] - J[part]) + r * d


def _faces(part: np.ndarray, v: np.ndarray, J: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles between neighbours (in height/angle order) inside each part; exactly NUM_FACES of them."""
    counts = np.bincount(part, minlength=NUM_JOINTS)
    per_part = np.floor(counts / counts.sum() * NUM_FACES).astype(np.int64)
    per_part[15] += NUM_FACES - per_part.sum()
    faces, face_part = [], []
    for j in range(NUM_JOINTS):
        idx = np.flatnonzero(part == j)
        rel = v[idx] - J[j]
        order = idx[np.lexsort((np.arctan2(rel[:, 2], rel[:, 0]), np.round(rel[:, 1] * 40)))]
        n, m = len(order), per_part[j]
        k = np.arange(m)
        a = k % n
        third = (a + 2 + (k // n)) % n
        third = np.where((third == a) | (third == (a + 1) % n), (a + 2) % n, third)
        faces.append(np.stack([order[a], order[(a + 1) % n], order[third]], 1))
        face_part.append(np.full(m, j))
    return np.concatenate(faces).astype(np.uint32), np.concatenate(face_part)


def _skinning_weights(rng: np.random.Generator, part: np.ndarray) -> np.ndarray:
    """Own joint 0.55..1, the parent a share of the rest, one child the remainder; rows sum to 1. (V, 55)."""
    kids = _children()
    V = NUM_VERTS
    rows = np.arange(V)
    W = np.zeros((V, NUM_JOINTS))
    own = rng.uniform(0.55, 1.0, size=V)
    rest = 1.0 - own
    parent = PARENTS[part]
    to_parent = np.where(parent >= 0, rng.uniform(0.3, 1.0, size=V) * rest, 0.0)
    rest = rest - to_parent
    n_kids = np.array([len(kids[j]) for j in range(NUM_JOINTS)])[part]
    pick = np.floor(rng.uniform(0.0, 1.0, size=V) * np.maximum(n_kids, 1)).astype(np.int64)
    child = np.array([kids[j][pick[i]] if n_kids[i] else part[i] for i, j in enumerate(part)])
    np.add.at(W, (rows, part), own)
    np.add.at(W, (rows[parent >= 0], parent[parent >= 0]), to_parent[parent >= 0])
    np.add.at(W, (rows, child), rest)
    return W / W.sum(1, keepdims=True)


def _joint_regressor(rng: np.random.Generator, part: np.ndarray, v: np.ndarray, J: np.ndarray) -> np.ndarray:
    """Each joint: 20 nearest vertices of its own and its parent's part, positive weights summing to 1."""
    JR = np.zeros((NUM_JOINTS, NUM_VERTS))
    for j in range(NUM_JOINTS):
        mask = part == j
        if PARENTS[j] >= 0:
            mask |= part == PARENTS[j]
        cand = np.flatnonzero(mask)
        near = cand[np.argsort(np.linalg.norm(v[cand] - J[j], axis=1))[:20]]
        w = rng.uniform(0.2, 1.0, size=len(near))
        JR[j, near] = w / w.sum()
    return JR


def make_synthetic_smplx(seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """All arrays of a synthetic SMPLX_NEUTRAL.npz, keyed and typed like the official file."""
    rng = np.random.default_rng(seed)
    J = rest_joints()
    part = _assign_parts(rng)
    v = _vertices(rng, part, J)
    f, face_part = _faces(part, v, J)
    V = NUM_VERTS

    shapedirs = np.zeros((V, 3, NUM_SHAPE_PCS + NUM_EXPR_PCS))
    vh = np.concatenate([v, np.ones((V, 1))], 1)  # (V, 4)
    for k in range(NUM_ACTIVE_PCS):  # smooth affine deformation fields plus a little noise
        field = rng.normal(size=(4, 3)) * (0.025 / (1.0 + 0.5 * k))
        shapedirs[:, :, k] = vh @ field + rng.normal(size=(V, 3)) * 4e-4
    face = np.isin(part, [12, 15, 22, 23, 24])
    for k in range(NUM_ACTIVE_PCS):
        shapedirs[face, :, NUM_SHAPE_PCS + k] = rng.normal(size=(int(face.sum()), 3)) * (0.004 / (1.0 + 0.3 * k))

    posedirs = np.zeros((V, 3, (NUM_JOINTS - 1) * 9))
    for joint in (part, PARENTS[part]):  # a vertex reacts to its own joint's and its parent's rotation
        ok = np.flatnonzero(joint >= 1)
        cols = 9 * (joint[ok, None] - 1) + np.arange(9)  # (n, 9)
        posedirs[ok[:, None, None], np.arange(3)[None, :, None], cols[:, None, :]] = \
            rng.normal(size=(len(ok), 3, 9)) * 0.002

    def orthonormal(n: int) -> np.ndarray:
        q, r = np.linalg.qr(rng.normal(size=(n, n)))
        return (q * np.sign(np.diag(r))).T

    head_faces = np.flatnonzero(np.isin(face_part, [15, 22]))
    bary = rng.uniform(0.05, 1.0, size=(NUM_LANDMARKS, 3))
    dyn_bary = rng.uniform(0.05, 1.0, size=NUM_DYNAMIC_LMK + (3,))
    kintree = np.stack([PARENTS, np.arange(NUM_JOINTS)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # uint32(-1): the root marker of the SMPL family files
    names = {name: i for i, name in enumerate(JOINT_NAMES)}
    return {
        "v_template": v,
        "f": f,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": _joint_regressor(rng, part, v, J),
        "weights": _skinning_weights(rng, part),
        "kintree_table": kintree,
        "hands_componentsl": orthonormal(45),
        "hands_componentsr": orthonormal(45),
        "hands_meanl": rng.normal(size=45) * 0.1,
        "hands_meanr": rng.normal(size=45) * 0.1,
        "hands_coeffsl": rng.normal(size=(HAND_PCA_ROWS, 45)) * 0.3,
        "hands_coeffsr": rng.normal(size=(HAND_PCA_ROWS, 45)) * 0.3,
        "lmk_faces_idx": rng.choice(head_faces, size=NUM_LANDMARKS, replace=False).astype(np.int64),
        "lmk_bary_coords": bary / bary.sum(1, keepdims=True),
        "dynamic_lmk_faces_idx": rng.choice(head_faces, size=NUM_DYNAMIC_LMK).astype(np.int64),
        "dynamic_lmk_bary_coords": dyn_bary / dyn_bary.sum(-1, keepdims=True),
        "vt": rng.uniform(0.0, 1.0, size=(NUM_UV, 2)),
        "ft": rng.integers(0, NUM_UV, size=(NUM_FACES, 3)).astype(np.uint32),
        "joint2num": np.array(names, dtype=object),
        "part2num": np.array(dict(names), dtype=object),
        "allow_pickle": np.array(True),
    }


def write_synthetic_smplx(path: str | os.PathLike, seed: int = DEFAULT_SEED, compress: bool = True) -> Path:
    """Write a synthetic SMPLX_NEUTRAL.npz to `path` (a file, or a folder that receives SMPLX_NEUTRAL.npz).

    The write is atomic (temporary file then rename). Returns the file path.
    """
    p = Path(path)
    if p.is_dir() or p.suffix != ".npz":
        p.mkdir(parents=True, exist_ok=True)
        p = p / "SMPLX_NEUTRAL.npz"
    tmp = p.with_name(p.name + ".tmp.npz")
    _write_npz(tmp, make_synthetic_smplx(seed), compress)
    os.replace(tmp, p)
    return p


def _write_npz(path: Path, arrays: dict[str, np.ndarray], compress: bool) -> None:
    """np.savez by hand: numpy >= 2 reserves the keyword `allow_pickle`, which the official file has as a key."""
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=mode, allowZip64=True) as zf:
        for key, value in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=value.dtype == object)


def make_mean_params(seed: int = DEFAULT_SEED) -> dict[str, np.ndarray]:
    """Synthetic SPIN/Multi-HMR mean parameters: pose (144,) = 24 rotations in 6D, shape (10,), cam (3,).

    The 6D layout is the first two columns of each rotation read row by row: [R00, R01, R10, R11, R20, R21].
    The first rotation is close to pi about x (camera convention of the mean pose); the others are small.
    """
    rng = np.random.default_rng(seed + 1)
    axis_angles = rng.normal(size=(24, 3)) * 0.12
    axis_angles[0] += [np.pi, 0.0, 0.0]
    theta = np.linalg.norm(axis_angles, axis=1)[:, None, None]
    k = axis_angles / np.linalg.norm(axis_angles, axis=1, keepdims=True)
    K = np.zeros((24, 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K -= K.transpose(0, 2, 1)
    R = np.eye(3) + np.sin(theta) * K + (1.0 - np.cos(theta)) * (K @ K)
    return {
        "pose": R[:, :, :2].reshape(-1).astype(np.float64),
        "shape": rng.normal(size=10) * 0.3,
        "cam": np.array([0.9, 0.0, 0.0]) + rng.normal(size=3) * 0.05,
    }


def write_mean_params(path: str | os.PathLike, seed: int = DEFAULT_SEED) -> Path:
    """Write a synthetic smpl_mean_params.npz (atomically) to `path` (file or folder). Returns the file path."""
    p = Path(path)
    if p.is_dir() or p.suffix != ".npz":
        p.mkdir(parents=True, exist_ok=True)
        p = p / "smpl_mean_params.npz"
    tmp = p.with_name(p.name + ".tmp.npz")
    _write_npz(tmp, make_mean_params(seed), compress=False)
    os.replace(tmp, p)
    return p
