"""SMPL-X skinning on the GPU: the model uploaded once, buffers for K people, kernels/smplx_skinning.cu.

pycuda is imported only when a `CudaSkinner` is built without an explicit `driver`, and the caller must have made
the CUDA context it runs in current: the backend's, i.e. the device's *primary* context (the TensorRT backend
pushes it while active; the ONNX Runtime GPU backends through `ensure_cuda_context()`). Never `pycuda.autoinit`:
it creates another context, and the CUDA runtime of ONNX Runtime makes the primary one current on every run, so
kernels of the other context fail with "invalid resource handle". The kernels load from the PTX shipped in
kernels/ptx (no nvcc at run time). Buffers belong to that context: call `close()` before it is released
(`backend.adopt(skinner)` does it at deactivation). Passing the strict pycuda stand-in's driver
(tests/support/fake_gpu) runs the same launcher on the CPU through the host emulation (how it is tested here).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from human3r_edge.kernels.build import load_module
from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.runtime.smplx.constants import EXTRA_JOINT_VERTICES, HUMAN3R_ROT_JOINTS, NUM_JOINTS, NUM_OUTPUT_JOINTS, NUM_VERTS, joint_depths
from human3r_edge.runtime.smplx.native import sparse_weights
from human3r_edge.runtime.smplx.skinning import NUM_BLEND, POSE_JOINTS, SkinResult, SMPLXModel, _empty_result, check_params

PARAM_STRIDE = 500  # per person: 53 rotations (477) | betas, expression (20) | head translation (3)
KERNEL_FILE = "smplx_skinning.cu"
_BLOCK_FK, _BLOCK_BLEND, _BLOCK_SKIN, _BLOCK_JOINTS = 64, 256, 128, 128
_MAX_BLEND = 512  # SMPLX_MAX_BLEND in the kernel


def device_constants(model: SMPLXModel) -> dict[str, np.ndarray]:
    """The model arrays in the layouts the kernels read (see the header of kernels/smplx_skinning.cu)."""
    joint_rot = np.full(NUM_JOINTS, -1, dtype=np.int32)
    joint_rot[HUMAN3R_ROT_JOINTS[1:]] = np.arange(1, len(HUMAN3R_ROT_JOINTS), dtype=np.int32)
    pose_slot = np.full(NUM_JOINTS, -1, dtype=np.int32)
    pose_slot[POSE_JOINTS] = np.arange(len(POSE_JOINTS), dtype=np.int32)
    idx, val = sparse_weights(model.weights_t)  # (V, kw): non-zero joints first, in joint order, zeros pad
    w_idx, w_val = np.ascontiguousarray(idx.T), np.ascontiguousarray(val.T)  # (kw, V): coalesced per k
    basis = model.blend_basis if model.blend_dtype == np.float32 else model.blend_basis.view(np.uint16)
    return {
        "basis": basis,
        "template": model.template,
        "j_template": model.j_template,
        "j_dirs": model.j_dirs,
        "parents": model.parents.astype(np.int32),
        "depth": joint_depths(model.parents).astype(np.int32),
        "joint_rot": joint_rot,
        "pose_slot": pose_slot,
        "w_idx": w_idx,
        "w_val": w_val,
        "extra": EXTRA_JOINT_VERTICES.astype(np.int32),
        "lmk_vid": np.ascontiguousarray(model.lmk_vertices.astype(np.int32)),
        "lmk_bary": np.ascontiguousarray(model.lmk_bary),
    }


def _import_pycuda() -> tuple[Any, Any]:
    try:
        import pycuda.compiler as compiler  # noqa: PLC0415 - lazy by design
        import pycuda.driver as driver  # noqa: PLC0415
    except ImportError as exc:
        raise BackendUnavailable(msg("CUDA skinning", "pycuda is not installed", repr(exc), "pycuda >= 2024.1",
                                     "pip install 'human3r-edge[gpu]', or use the numpy path (SMPLXModel.skin)")
                                 ) from exc
    return driver, compiler


class CudaSkinner:
    """Skins up to `max_people` people per call on the GPU.

    Model constants are uploaded once at construction; per-frame device buffers are sized for K = max_people and
    reused. `skin` returns fresh host arrays (owned by the caller). `launch` leaves the results on the device:
    `device_buffers` then holds the allocations, valid until the next call; they belong to this object.
    Not thread-safe: one skinner per stream/thread.
    """

    def __init__(self, model: SMPLXModel, max_people: int, *, driver: Any = None, compiler: Any = None) -> None:
        if not isinstance(max_people, (int, np.integer)) or isinstance(max_people, bool) or max_people < 1:
            raise Human3RError(msg("CudaSkinner", "max_people must be an int >= 1", repr(max_people), ">= 1"))
        if driver is None:  # compiler: unused (the kernels load from shipped PTX); kept for old callers
            driver, compiler = _import_pycuda()
        self.driver = driver
        self.max_people = K = int(max_people)
        self.model = model
        module = load_module(driver, KERNEL_FILE)
        self._fk = module.get_function("smplx_fk_kernel")
        blend = "smplx_blend_f32_kernel" if model.blend_dtype == np.float32 else "smplx_blend_f16_kernel"
        self._blend = module.get_function(blend)
        self._skin = module.get_function("smplx_skin_kernel")
        self._joints = module.get_function("smplx_joints_kernel")
        self._module = module  # keeps the module (and its functions) alive

        consts = device_constants(model)
        if NUM_BLEND > _MAX_BLEND:
            raise Human3RError(msg("CudaSkinner", "blend basis larger than the kernel's buffer", NUM_BLEND, _MAX_BLEND))
        self._kw = consts["w_idx"].shape[0]
        self._num_levels = int(consts["depth"].max()) + 1
        self._host_consts = consts  # the uploaded arrays stay referenced for the skinner's lifetime
        self.const = {name: self._upload(arr) for name, arr in consts.items()}
        n3 = 3 * NUM_VERTS
        f4 = 4
        sizes = {
            "params": (K * PARAM_STRIDE + 16) * f4,  # per-person parameters, then c2w (4x4)
            "feats": K * NUM_BLEND * f4,
            "A": K * NUM_JOINTS * 12 * f4,
            "v_posed": K * n3 * f4,
            "v_cam": K * n3 * f4,
            "v_world": K * n3 * f4,
            "j_cam": K * NUM_OUTPUT_JOINTS * 3 * f4,
            "j_world": K * NUM_OUTPUT_JOINTS * 3 * f4,
        }
        self.device_buffers = {name: driver.mem_alloc(n) for name, n in sizes.items()}
        self._params_host = driver.pagelocked_empty((K * PARAM_STRIDE + 16,), np.float32)
        self.bytes_constants = int(sum(a.nbytes for a in consts.values()))
        self.bytes_buffers = int(sum(sizes.values()))

    def _upload(self, arr: np.ndarray) -> Any:
        arr = np.ascontiguousarray(arr)
        dev = self.driver.mem_alloc(max(arr.nbytes, 4))
        self.driver.memcpy_htod(dev, arr)
        return dev

    def close(self) -> None:
        """Free the device buffers and the page-locked staging now, while their CUDA context is still alive
        (pycuda cannot free them once it is detached: they would leak). The skinner is unusable afterwards."""
        for alloc in list(getattr(self, "device_buffers", {}).values()) + list(getattr(self, "const", {}).values()):
            alloc.free()
        self.device_buffers, self.const = {}, {}
        host = getattr(self, "_params_host", None)
        free = getattr(getattr(host, "base", None), "free", None)
        if callable(free):
            free()
        self._params_host = None
        self._module = self._fk = self._blend = self._skin = self._joints = None

    # ------------------------------------------------------------------------------------------ per frame
    def launch(self, rotmat: np.ndarray, betas: np.ndarray, expression: np.ndarray, transl: np.ndarray,
               c2w: np.ndarray | None = None) -> int:
        """Upload the parameters and run the four kernels; results stay in `device_buffers`. Returns P.

        Same arguments and validation as SMPLXModel.skin; raises Human3RError when P > max_people.
        """
        r, b, e, t, c = check_params(rotmat, betas, expression, transl, c2w)
        P = r.shape[0]
        if P > self.max_people:
            raise Human3RError(msg("CUDA skinning", "more people than the preallocated slots", P,
                                   f"<= max_people = {self.max_people}",
                                   "construct the CudaSkinner with a larger max_people (buffers are sized once)"))
        if P == 0:
            return 0
        K = self.max_people
        host = self._params_host
        prm = host[:K * PARAM_STRIDE].reshape(K, PARAM_STRIDE)
        prm[:P, :477] = r.reshape(P, 477)
        prm[:P, 477:487] = b
        prm[:P, 487:497] = e
        prm[:P, 497:500] = t
        host[K * PARAM_STRIDE:] = (c if c is not None else np.eye(4, dtype=np.float32)).reshape(16)
        buf, cst = self.device_buffers, self.const
        self.driver.memcpy_htod(buf["params"], host)
        i32 = np.int32
        c2w_ptr = np.uintp(int(buf["params"]) + K * PARAM_STRIDE * 4)
        has_world = i32(c is not None)
        n3 = 3 * NUM_VERTS
        self._fk(buf["params"], i32(P), i32(NUM_BLEND), cst["j_template"], cst["j_dirs"], cst["parents"], cst["depth"],
                 i32(self._num_levels), cst["joint_rot"], cst["pose_slot"], buf["feats"], buf["A"], buf["j_cam"],
                 block=(_BLOCK_FK, 1, 1), grid=(P, 1))
        self._blend(buf["feats"], i32(P), i32(NUM_BLEND), cst["basis"], cst["template"], i32(n3), buf["v_posed"],
                    block=(_BLOCK_BLEND, 1, 1), grid=((n3 + _BLOCK_BLEND - 1) // _BLOCK_BLEND, 1))
        self._skin(buf["v_posed"], buf["A"], cst["w_idx"], cst["w_val"], i32(self._kw), c2w_ptr, has_world, i32(P),
                   i32(NUM_VERTS), buf["v_cam"], buf["v_world"],
                   block=(_BLOCK_SKIN, 1, 1), grid=((NUM_VERTS + _BLOCK_SKIN - 1) // _BLOCK_SKIN, P))
        self._joints(buf["v_cam"], cst["extra"], i32(len(EXTRA_JOINT_VERTICES)), cst["lmk_vid"], cst["lmk_bary"],
                     i32(self._host_consts["lmk_bary"].shape[0]), c2w_ptr, has_world, i32(P), i32(NUM_VERTS),
                     buf["j_cam"], buf["j_world"], block=(_BLOCK_JOINTS, 1, 1), grid=(P, 1))
        return P

    def skin(self, rotmat: np.ndarray, betas: np.ndarray, expression: np.ndarray, transl: np.ndarray,
             c2w: np.ndarray | None = None) -> SkinResult:
        """Like SMPLXModel.skin, on the GPU (P <= max_people). Returns fresh host arrays owned by the caller."""
        P = self.launch(rotmat, betas, expression, transl, c2w)
        if P == 0:
            return _empty_result(c2w is not None)
        buf = self.device_buffers
        v_cam = np.empty((P, NUM_VERTS, 3), dtype=np.float32)
        j_cam = np.empty((P, NUM_OUTPUT_JOINTS, 3), dtype=np.float32)
        self.driver.memcpy_dtoh(v_cam, buf["v_cam"])  # synchronous: also surfaces launch errors
        self.driver.memcpy_dtoh(j_cam, buf["j_cam"])
        if c2w is None:
            return SkinResult(v_cam=v_cam, j_cam=j_cam, transl_pelvis=j_cam[:, 0].copy())
        v_world = np.empty_like(v_cam)
        j_world = np.empty_like(j_cam)
        self.driver.memcpy_dtoh(v_world, buf["v_world"])
        self.driver.memcpy_dtoh(j_world, buf["j_world"])
        return SkinResult(v_cam=v_cam, j_cam=j_cam, transl_pelvis=j_cam[:, 0].copy(), v_world=v_world,
                          j_world=j_world)
