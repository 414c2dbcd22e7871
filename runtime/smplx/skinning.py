"""Batched SMPL-X skinning on the CPU, with Human3R's head-anchored camera and world transforms.

Two implementations of the same arithmetic: the compiled kernels of kernels/smplx_cpu.c (runtime/smplx/native.py,
built at first use with the system C compiler; the default, `backend='auto'`) and pure numpy (`backend='numpy'`,
and what 'auto' falls back to without a compiler or with float16 storage). They agree to ~1e-7 m.

For P people with Human3R's outputs (53 rotation matrices, 10 betas, 10 expression coefficients, the head
translation) it computes what Human3R's `SMPL_Layer` + demo compute with the smplx package:

    v_shaped = v_template + shapedirs . [betas, expression]          shape and expression blend
    J        = J_regressor . v_shaped                                  joint regression (folded, see below)
    v_posed  = v_shaped + posedirs . (R_j - I)_{j=1..54}              pose blend, rotations as matrices
    G_j      = G_parent(j) . [R_j | J_j - J_parent(j)]                forward kinematics, one step per tree level
    v        = sum_j w_vj (G_j - [0 | G_j^R J_j]) [v_posed; 1]         linear blend skinning (root rotation = I)
    v_cam    = R_glob (v - j_head) + transl                            Human3R: global rotation about the pelvis,
                                                                        centred on the HEAD joint, then translated
    v_world  = c2w [v_cam; 1]

The smplx call of the reference has zero global orientation and identity eyes; the global rotation is applied
afterwards, which is the same as folding [R_glob | transl - R_glob j_head] into every joint transform (done here).

Speed (see benchmarks/smplx_bench.py): the joint regressor is linear in the blend coefficients, so it is folded
at load time into a (20, 55*3) matrix and a template (55, 3); the eye joints, always identity, are dropped from
the pose basis (468 of 486 features); shape, expression and pose blends are ONE GEMM over all people against a
coordinate-major (planar) basis; the skinning transforms of all people are ONE GEMM against the weights; the
single-threaded elementwise stages are split over two threads; scratch buffers are reused per thread. The two
GEMMs are ~80% of the time at 16 people (OpenBLAS, fp32). Beware: torch or ONNX Runtime thread pools spinning
in the same process slow OpenBLAS down (and the other way round).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.smplx.constants import (EXTRA_JOINT_VERTICES, HEAD, HUMAN3R_ROT_JOINTS, LEFT_EYE, NUM_BETAS, NUM_COEFFS, NUM_EXPR,
                        NUM_HUMAN3R_ROTS, NUM_JOINTS, NUM_OUTPUT_JOINTS, NUM_VERTS, RIGHT_EYE, depth_levels)
from human3r_edge.runtime.smplx.model_file import SMPLXData, load_smplx_file
from human3r_edge.runtime.smplx.native import TILE, NativeKernels, blocked_basis, load_native, native_status, sparse_weights

SPARSE_MAX_KW = 8  # most non-zero skinning weights per vertex for the sparse skinning kernel (else dense numpy)
BACKENDS = ("auto", "native", "numpy")  # SMPLXModel(backend=...): auto = native when it compiles, else numpy

# joints whose (R - I) features enter the pose blend: 1..54 without the eyes (identity in Human3R)
POSE_JOINTS = np.array([j for j in range(1, NUM_JOINTS) if j not in (LEFT_EYE, RIGHT_EYE)], dtype=np.int64)
NUM_POSE_FEATS = 9 * len(POSE_JOINTS)  # 468
NUM_BLEND = NUM_COEFFS + NUM_POSE_FEATS  # 488 rows of the blend basis
_BLEND_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
_EYE3 = np.eye(3, dtype=np.float32)


@dataclass(frozen=True)
class SkinResult:
    """Meshes and joints of P people. Every array is freshly allocated and owned by the caller (float32)."""

    v_cam: np.ndarray  # (P, V, 3) vertices in the camera frame
    j_cam: np.ndarray  # (P, 127, 3) joints in the camera frame: 55 skeleton, 21 vertex-selected, 51 landmarks
    transl_pelvis: np.ndarray  # (P, 3) pelvis in the camera frame
    v_world: np.ndarray | None = None  # (P, V, 3) = c2w . v_cam, when c2w was given
    j_world: np.ndarray | None = None  # (P, 127, 3)


class SMPLXModel:
    """SMPL-X constants prepared for batched skinning. Thread-safe: arrays are read-only, scratch buffers are
    per thread, and skin() uses one process-wide helper thread for its single-threaded numpy stages.

    `blend_dtype` is the storage type of the blend basis (shapedirs + posedirs): float32, or float16 to halve
    its memory (30 MB instead of 60 MB); all arithmetic is float32 either way. On a CPU float16 storage is slower
    (numpy widens it on every call); it pays on the GPU, where the basis is streamed from memory.
    """

    def __init__(self, data: SMPLXData, blend_dtype: np.dtype | type = np.float32, backend: str = "auto") -> None:
        dt = np.dtype(blend_dtype)
        if dt not in _BLEND_DTYPES:
            raise Human3RError(msg("SMPLXModel", "unsupported blend_dtype", dt, "float32 or float16"))
        if backend not in BACKENDS:
            raise Human3RError(msg("SMPLXModel", "unknown backend", repr(backend), BACKENDS))
        self.blend_dtype = dt
        self.source = data.source
        V = NUM_VERTS
        f64 = np.float64
        # planar (coordinate-major) layouts: column c*V + v holds coordinate c of vertex v
        self.template = np.ascontiguousarray(data.v_template.astype(f64).T.reshape(3 * V)).astype(np.float32)
        pose = data.posedirs.astype(f64).reshape(V, 3, NUM_JOINTS - 1, 9)[:, :, POSE_JOINTS - 1]  # (V, 3, 52, 9)
        basis = np.empty((NUM_BLEND, 3, V), dtype=f64)
        basis[:NUM_COEFFS] = data.shapedirs.astype(f64).transpose(2, 1, 0)
        basis[NUM_COEFFS:] = pose.reshape(V, 3, NUM_POSE_FEATS).transpose(2, 1, 0)
        planar_basis = np.ascontiguousarray(basis.reshape(NUM_BLEND, 3 * V).astype(dt))  # (488, 3V)
        del basis
        # joint regression folded into the blend: J = j_template + coeffs @ j_dirs
        jr = data.j_regressor.astype(f64)
        self.j_template = (jr @ data.v_template.astype(f64)).astype(np.float32)  # (55, 3)
        j_dirs = np.einsum("jv,vck->kjc", jr, data.shapedirs.astype(f64))  # (20, 55, 3)
        self.j_dirs = np.ascontiguousarray(j_dirs.reshape(NUM_COEFFS, NUM_JOINTS * 3)).astype(np.float32)
        self.weights_t = np.ascontiguousarray(data.weights.T).astype(np.float32)  # (55, V)
        self.parents = data.parents.copy()
        self.levels = depth_levels(self.parents)
        self._level_parents = [(lev, self.parents[lev]) for lev in self.levels]
        self.faces = data.faces.copy()  # (F, 3) int64
        self.extra_vertices = EXTRA_JOINT_VERTICES.copy()  # (21,)
        self.lmk_vertices = self.faces[data.lmk_faces_idx]  # (51, 3) vertex ids of each landmark's face
        self.lmk_bary = data.lmk_bary_coords.astype(np.float32)  # (51, 3)
        self._workspace = _Workspace()
        # the compiled kernels (kernels/smplx_cpu.c) when a C compiler is there, else numpy; fp32 storage only
        self.native: NativeKernels | None = None
        self.native_skinning = False  # the sparse skinning kernel (else the numpy stages after the blend)
        self._blend_basis: np.ndarray | None = planar_basis
        if backend != "numpy" and dt == np.float32:
            self.native = load_native()
            if self.native is None and backend == "native":
                raise Human3RError(msg("SMPLXModel", "backend='native' unavailable", native_status(), None,
                                       "install a C compiler (gcc/clang) or use backend='auto' / 'numpy'"))
        elif backend == "native":
            raise Human3RError(msg("SMPLXModel", "backend='native' needs float32 storage", dt, "float32"))
        if self.native is not None:
            self._basis_blk = blocked_basis(planar_basis)  # the only copy: blend_basis is rebuilt on demand
            self._blend_basis = None
            self._w_idx, self._w_val = sparse_weights(self.weights_t)
            for blk in (self._basis_blk, self._w_idx, self._w_val):
                blk.setflags(write=False)
            # the sparse skinning kernel costs ~12 kw FMAs per vertex; with many non-zero weights per vertex the
            # dense BLAS product of the numpy path is cheaper, so that one is used for the skinning stage
            self.native_skinning = self._w_idx.shape[1] <= SPARSE_MAX_KW
        del planar_basis
        if self._blend_basis is not None:
            self._blend_basis.setflags(write=False)
        for a in (self.template, self.j_template, self.j_dirs, self.weights_t, self.faces, self.lmk_vertices,
                  self.lmk_bary):
            a.setflags(write=False)

    @staticmethod
    def load(path: str | os.PathLike, blend_dtype: np.dtype | type = np.float32,
             backend: str = "auto") -> "SMPLXModel":
        """Load an SMPL-X model file (see model_file.load_smplx_file) and prepare it for skinning."""
        return SMPLXModel(load_smplx_file(Path(path)), blend_dtype, backend)

    @property
    def backend(self) -> str:
        """'native' (the compiled kernels) or 'numpy': what skin() runs."""
        return "numpy" if self.native is None else "native"

    @property
    def num_verts(self) -> int:
        return NUM_VERTS

    @property
    def blend_basis(self) -> np.ndarray:
        """The (488, 3V) planar blend basis (read-only). With the compiled kernels the model keeps only their
        blocked layout, and this is rebuilt from it on first use (e.g. for the GPU upload) and then kept."""
        if self._blend_basis is None:
            nblk, K, width = self._basis_blk.shape
            planar = np.ascontiguousarray(self._basis_blk.transpose(1, 0, 2).reshape(K, nblk * width)[:, :3 * NUM_VERTS])
            planar.setflags(write=False)
            self._blend_basis = planar
        return self._blend_basis

    @property
    def blend_basis_nbytes(self) -> int:
        return NUM_BLEND * 3 * NUM_VERTS * self.blend_dtype.itemsize

    # ------------------------------------------------------------------------------------------ main entry
    def skin(self, rotmat: np.ndarray, betas: np.ndarray, expression: np.ndarray, transl: np.ndarray,
             c2w: np.ndarray | None = None) -> SkinResult:
        """Skin P people.

        rotmat (P, 53, 3, 3): Human3R's rotations (global, 21 body, 15 left hand, 15 right hand, jaw);
        betas (P, 10); expression (P, 10); transl (P, 3): head joint in the camera frame;
        c2w (4, 4) camera-to-world, or None for camera-frame outputs only. Any real float dtype (used as
        float32); NaN or inf is refused. P may be 0. Returns a SkinResult whose arrays belong to the caller.
        """
        rotmat, betas, expression, transl, c2w = check_params(rotmat, betas, expression, transl, c2w)
        P = rotmat.shape[0]
        if P == 0:
            return _empty_result(c2w is not None)
        R = np.empty((P, NUM_JOINTS, 3, 3), dtype=np.float32)  # local rotations in SMPL-X joint order
        R[:] = np.eye(3, dtype=np.float32)
        R[:, HUMAN3R_ROT_JOINTS[1:]] = rotmat[:, 1:]  # the root stays identity (zero global orient)
        feats = np.empty((P, NUM_BLEND), dtype=np.float32)
        feats[:, :NUM_BETAS] = betas
        feats[:, NUM_BETAS:NUM_COEFFS] = expression
        feats[:, NUM_COEFFS:] = (R[:, POSE_JOINTS] - np.eye(3, dtype=np.float32)).reshape(P, NUM_POSE_FEATS)

        ws = self._workspace  # this thread's scratch buffers (reused across calls)
        J = self.j_template + (feats[:, :NUM_COEFFS] @ self.j_dirs).reshape(P, NUM_JOINTS, 3)  # (P, 55, 3)
        v_cam = np.empty((P, NUM_VERTS, 3), dtype=np.float32)
        v_world = None if c2w is None else np.empty((P, NUM_VERTS, 3), dtype=np.float32)
        if self.native is not None:
            featsT = np.zeros((NUM_BLEND, -(-P // TILE) * TILE), dtype=np.float32)
            featsT[:, :P] = feats.T
            v_posed = ws.get("v_posed", P)  # (P, 3, V) planar
            self.native.blend(featsT, P, self._basis_blk, self.template, v_posed.reshape(P, 3 * NUM_VERTS))
        else:
            v_posed = self._blend(feats, ws.get("v_posed", P))  # (P, 3, V) planar
        A, j_skel = self._transforms(R, J, rotmat[:, 0], transl)  # (P, 55, 3, 4), (P, 55, 3)
        if self.native is not None and self.native_skinning:
            world34 = None if c2w is None else np.ascontiguousarray(c2w[:3, :4], dtype=np.float32)
            self.native.skin(v_posed, np.ascontiguousarray(A), self._w_idx, self._w_val, world34, v_cam, v_world)
            return self._joints_and_result(v_cam, v_world, j_skel, c2w)
        T = self._skin_transforms(A, ws.get("T", P))  # (P, 3, 4, V)
        world = None if c2w is None else np.ascontiguousarray(c2w[:3, :].T)  # (4, 3) = [R^T; t]
        planar_ws, tmp_ws = ws.get("planar", P), ws.get("tmp", P)

        def finish(lo: int, hi: int) -> None:
            planar = self._apply(T[lo:hi], v_posed[lo:hi], planar_ws[lo:hi], tmp_ws[lo:hi])  # (n, 4, V)
            # matmul with a transposed view lets BLAS do the planar -> interleaved copy (cheaper than numpy's)
            np.matmul(planar[:, :3].transpose(0, 2, 1), _EYE3, out=v_cam[lo:hi])
            if world is not None and v_world is not None:  # [x y z 1] @ [R^T; t]: translation in the same call
                np.matmul(planar.transpose(0, 2, 1), world, out=v_world[lo:hi])

        if P > 1 and _multicore():  # single-threaded numpy steps: split the people over two threads (GIL released)
            half = _worker().submit(finish, 0, P // 2)
            finish(P // 2, P)
            half.result()
        else:
            finish(0, P)
        return self._joints_and_result(v_cam, v_world, j_skel, c2w)

    def _joints_and_result(self, v_cam: np.ndarray, v_world: np.ndarray | None, j_skel: np.ndarray,
                           c2w: np.ndarray | None) -> SkinResult:
        """The 127 output joints (skeleton, vertex-selected, landmarks) and the SkinResult."""
        P = v_cam.shape[0]
        j_cam = np.empty((P, NUM_OUTPUT_JOINTS, 3), dtype=np.float32)
        j_cam[:, :NUM_JOINTS] = j_skel
        n_extra = NUM_JOINTS + len(self.extra_vertices)
        j_cam[:, NUM_JOINTS:n_extra] = v_cam[:, self.extra_vertices]
        j_cam[:, n_extra:] = np.einsum("plkc,lk->plc", v_cam[:, self.lmk_vertices], self.lmk_bary)
        pelvis = j_cam[:, 0].copy()
        if c2w is None:
            return SkinResult(v_cam=v_cam, j_cam=j_cam, transl_pelvis=pelvis)
        return SkinResult(v_cam=v_cam, j_cam=j_cam, transl_pelvis=pelvis, v_world=v_world,
                          j_world=apply_c2w(c2w, j_cam))

    # ------------------------------------------------------------------------------------------ stages
    def _blend(self, feats: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Template + shape/expression + pose blend for all people in one GEMM. (P, 488) -> out (P, 3, V)."""
        P = feats.shape[0]
        flat = out.reshape(P, 3 * NUM_VERTS)
        if self.blend_dtype == np.float32:
            np.matmul(feats, self.blend_basis, out=flat)
        else:  # widen in column chunks so the float32 copy stays small
            chunk = np.empty((NUM_BLEND, 4096), dtype=np.float32)
            for s in range(0, 3 * NUM_VERTS, 4096):
                e = min(s + 4096, 3 * NUM_VERTS)
                np.copyto(chunk[:, :e - s], self.blend_basis[:, s:e])
                np.matmul(feats, chunk[:, :e - s], out=flat[:, s:e])
        flat += self.template
        return out

    def _transforms(self, R: np.ndarray, J: np.ndarray, r_glob: np.ndarray, transl: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics by tree level, then Human3R's camera transform folded into every joint.

        R (P, 55, 3, 3) local rotations (root = I), J (P, 55, 3) rest joints, r_glob (P, 3, 3), transl (P, 3).
        Returns the skinning transforms A (P, 55, 3, 4) mapping rest-pose vertices to the camera frame, and the
        posed skeleton joints in the camera frame (P, 55, 3).
        """
        P = R.shape[0]
        L = np.zeros((P, NUM_JOINTS, 4, 4), dtype=np.float32)  # local transforms [R_j | J_j - J_parent]
        L[..., :3, :3] = R
        L[:, 1:, :3, 3] = J[:, 1:] - J[:, self.parents[1:]]
        L[:, 0, :3, 3] = J[:, 0]
        L[..., 3, 3] = 1.0
        G = np.empty_like(L)  # (P, 55, 4, 4) joint-to-model transforms
        G[:, 0] = L[:, 0]
        for lev, par in self._level_parents:
            G[:, lev] = G[:, par] @ L[:, lev]
        head = G[:, HEAD, :3, 3]  # (P, 3) posed head joint
        M = np.zeros((P, 1, 4, 4), dtype=np.float32)  # v_cam = R_glob (v - head) + transl
        M[:, 0, :3, :3] = r_glob
        M[:, 0, :3, 3] = transl - (r_glob @ head[..., None])[..., 0]
        M[:, 0, 3, 3] = 1.0
        MG = (M @ G)[..., :3, :]  # (P, 55, 3, 4)
        j_skel = MG[..., 3].copy()  # posed joints in the camera frame
        MG[..., 3] -= (MG[..., :3] @ J[..., None])[..., 0]  # skinning transforms act on rest-pose vertices
        return MG, j_skel

    def _skin_transforms(self, A: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Per-vertex blended transforms of all people in one GEMM: (P, 55, 3, 4) -> out (P, 3, 4, V)."""
        P = A.shape[0]
        np.matmul(A.transpose(0, 2, 3, 1).reshape(P * 12, NUM_JOINTS), self.weights_t,
                  out=out.reshape(P * 12, NUM_VERTS))
        return out

    @staticmethod
    def _apply(T: np.ndarray, v_posed: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
        """Apply per-vertex transforms: T (n, 3, 4, V), v_posed (n, 3, V) -> out (n, 4, V), whose row 3 is ones.

        tmp (n, V) is scratch.
        """
        for c in range(3):
            o = out[:, c]
            np.multiply(T[:, c, 0], v_posed[:, 0], out=o)
            np.multiply(T[:, c, 1], v_posed[:, 1], out=tmp)
            o += tmp
            np.multiply(T[:, c, 2], v_posed[:, 2], out=tmp)
            o += tmp
            o += T[:, c, 3]
        return out


class _Workspace(threading.local):
    """Per-thread scratch buffers, each grown to the largest P seen (fresh 10+ MB buffers per call cost page
    faults) and allocated only when a stage asks for it: the compiled path needs v_posed alone, so a native
    model never holds the numpy stages' 8 MB per 16 people of transforms."""

    _SHAPES = {"v_posed": (3, NUM_VERTS), "T": (3, 4, NUM_VERTS), "planar": (4, NUM_VERTS), "tmp": (NUM_VERTS,)}

    def __init__(self) -> None:
        self.bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, P: int) -> np.ndarray:
        buf = self.bufs.get(name)
        if buf is None or buf.shape[0] < P:
            buf = np.empty((P,) + self._SHAPES[name], dtype=np.float32)
            if name == "planar":
                buf[:, 3] = 1.0  # homogeneous coordinate, never overwritten
            self.bufs[name] = buf
        return buf[:P]  # a leading-axis slice stays contiguous


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _worker() -> ThreadPoolExecutor:
    """One helper thread shared by all models (created on first use)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smplx-skin")
        return _POOL


def _multicore() -> bool:
    """True when this process may run on more than one CPU (so the helper thread can help)."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except AttributeError:  # not on Linux
        return (os.cpu_count() or 1) > 1


def _forget_pool_in_child() -> None:
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()  # a forked child has no worker thread: start a fresh one


os.register_at_fork(after_in_child=_forget_pool_in_child)


# ---------------------------------------------------------------------------------------------- helpers
def apply_c2w(c2w: np.ndarray, points: np.ndarray) -> np.ndarray:
    """c2w (4, 4) applied to points (..., 3) -> new float32 array (..., 3)."""
    flat = points.reshape(-1, 3)
    out = flat @ c2w[:3, :3].T.astype(np.float32)
    out += c2w[:3, 3].astype(np.float32)
    return out.reshape(points.shape)


def project_points(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection as the reference does it: x / z, then K. points (P, N, 3), K (3, 3) or (P, 3, 3).

    Returns a new (P, N, 2) float32 array.
    """
    pts = np.asarray(points, dtype=np.float32)
    K = np.asarray(K, dtype=np.float32)
    if pts.ndim != 3 or pts.shape[-1] != 3:
        raise Human3RError(msg("project_points: points", "wrong shape", pts.shape, "(P, N, 3)"))
    if K.shape not in ((3, 3), (pts.shape[0], 3, 3)):
        raise Human3RError(msg("project_points: K", "wrong shape", K.shape, f"(3, 3) or ({pts.shape[0]}, 3, 3)"))
    y = pts / pts[..., 2:3]
    Kb = K if K.ndim == 3 else K[None]
    return np.einsum("pij,pkj->pki", Kb, y)[..., :2].astype(np.float32)


def _as_float(name: str, a: object, shape: tuple[int | None, ...], human: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        raise Human3RError(msg(f"smplx.skin: {name}", "wrong dtype", arr.dtype, "a real float array (float32)",
                               "cast it with .astype(np.float32)"))
    if arr.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, arr.shape)):
        raise Human3RError(msg(f"smplx.skin: {name}", "wrong shape", arr.shape, human))
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise Human3RError(msg(f"smplx.skin: {name}", "non-finite values (NaN or inf)",
                               f"{int(bad.sum())} values, first at index {first}", "finite values",
                               "the network output diverged or the input was not initialised"))
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_params(rotmat: object, betas: object, expression: object, transl: object, c2w: object = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate SMPL-X parameters of P people and return them as contiguous float32 arrays.

    Raises Human3RError on a non-float dtype, a wrong shape, inconsistent P, or NaN/inf.
    """
    r = _as_float("rotmat", rotmat, (None, NUM_HUMAN3R_ROTS, 3, 3), "(P, 53, 3, 3)")
    P = r.shape[0]
    b = _as_float("betas", betas, (P, NUM_BETAS), f"({P}, {NUM_BETAS}) (P from rotmat)")
    e = _as_float("expression", expression, (P, NUM_EXPR), f"({P}, {NUM_EXPR}) (P from rotmat)")
    t = _as_float("transl", transl, (P, 3), f"({P}, 3) (P from rotmat)")
    c = None if c2w is None else _as_float("c2w", c2w, (4, 4), "(4, 4) camera-to-world")
    return r, b, e, t, c


def _empty_result(world: bool) -> SkinResult:
    v = np.zeros((0, NUM_VERTS, 3), dtype=np.float32)
    j = np.zeros((0, NUM_OUTPUT_JOINTS, 3), dtype=np.float32)
    return SkinResult(v, j, np.zeros((0, 3), dtype=np.float32), v.copy() if world else None,
                      j.copy() if world else None)
