"""SMPL-X body model without torch: model-file loading, a synthetic model, numpy skinning and the CUDA launcher.

    from human3r_edge.runtime.smplx import SMPLXModel
    model = SMPLXModel.load("SMPLX_NEUTRAL.npz")            # or blend_dtype=np.float16
    out = model.skin(rotmat, betas, expression, transl, c2w)  # (P,53,3,3), (P,10), (P,10), (P,3), (4,4)
    out.v_cam, out.j_cam, out.v_world, out.j_world, out.transl_pelvis

GPU: `CudaSkinner(model, max_people=K).skin(...)` (pycuda imported lazily, see gpu.py).
"""
from human3r_edge.runtime.smplx.gpu import CudaSkinner
from human3r_edge.runtime.smplx.model_file import SMPLXData, load_smplx_file
from human3r_edge.runtime.smplx.skinning import SMPLXModel, SkinResult, apply_c2w, check_params, project_points
from human3r_edge.runtime.smplx.synthetic import make_mean_params, make_synthetic_smplx, write_mean_params, write_synthetic_smplx

__all__ = ["CudaSkinner", "SMPLXData", "SMPLXModel", "SkinResult", "apply_c2w", "check_params", "load_smplx_file",
           "make_mean_params", "make_synthetic_smplx", "project_points", "write_mean_params", "write_synthetic_smplx"]
