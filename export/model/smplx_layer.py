"""SMPL-X meshes as the reference demo builds them (via the `smplx` package): zero global orientation in
the body model, the predicted orientation applied about the pelvis, then head-centred and translated."""
from __future__ import annotations

from pathlib import Path

import torch

from human3r_edge.errors import Human3RError, msg

from human3r_edge.export.model.scene import rotvec_to_rotmat

HEAD_JOINT = 15  # index of 'head' in smplx.joint_names.JOINT_NAMES
NUM_JOINTS_OUT = 127  # 55 skeleton + 21 vertex-selected + 51 face landmarks


def perspective_projection(x: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Project camera-frame points x (B, N, 3) with intrinsics K (B, 3, 3) -> pixels (B, N, 2)."""
    y = x / x[:, :, -1].unsqueeze(-1)
    return torch.einsum("bij,bkj->bki", K, y)[:, :, :2]


class SmplxLayer:
    """Neutral SMPL-X (10 betas, 10 expression coefficients, no hand PCA, flat hand mean), head-centred."""

    def __init__(self, model_path: str | Path, num_betas: int = 10) -> None:
        try:
            import smplx
        except ImportError as exc:
            raise Human3RError(msg("SMPL-X", "the smplx package is not installed", None,
                                   "smplx>=0.1.28", "pip install -e .[export]")) from exc
        path = Path(model_path)
        if not path.is_file():
            raise Human3RError(msg("SMPL-X model", "file not found", str(path),
                                   "an SMPLX_NEUTRAL.npz", "pass --smplx-model FILE"))
        # smplx.SMPLX, not smplx.create: create() takes the model type from the file name's prefix ("SMPLX_..."),
        # so any other name failed with "Unknown model type"; the class loads the file it is given.
        ext = "pkl" if path.suffix.lower() == ".pkl" else "npz"
        try:
            self.model = smplx.SMPLX(str(path), gender="neutral", ext=ext, use_pca=False, flat_hand_mean=True,
                                     num_betas=num_betas)
        except (OSError, ValueError, KeyError, EOFError, TypeError) as exc:
            raise Human3RError(msg(f"SMPL-X model {path}", "cannot be read by the smplx package",
                                   f"{type(exc).__name__}: {str(exc)[:200]}", "an SMPL-X .npz or .pkl file",
                                   "download the file again")) from exc
        self.faces = torch.from_numpy(self.model.faces.astype("int64"))  # (F, 3)

    def __call__(self, rotvec: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor, K: torch.Tensor,
                 expression: torch.Tensor) -> dict[str, torch.Tensor]:
        """rotvec (n, 53, 3) [global, 21 body, 15+15 hands, jaw]; betas (n, 10); transl (n, 3) head joint in
        camera coordinates; K (n, 3, 3); expression (n, 10).

        Returns v3d (n, V, 3) and j3d (n, 127, 3) in camera coordinates, j2d (n, 127, 2), transl_pelvis (n, 3).
        """
        n = rotvec.shape[0]
        bm = self.model
        out = bm(betas=betas, global_orient=bm.global_orient.repeat(n, 1),
                 body_pose=rotvec[:, 1:22].flatten(1), left_hand_pose=rotvec[:, 22:37].flatten(1),
                 right_hand_pose=rotvec[:, 37:52].flatten(1), jaw_pose=rotvec[:, 52:53].flatten(1),
                 expression=expression.flatten(1), leye_pose=bm.leye_pose.repeat(n, 1),
                 reye_pose=bm.reye_pose.repeat(n, 1))
        verts, joints = out.vertices, out.joints[:, :NUM_JOINTS_OUT]
        R = rotvec_to_rotmat(rotvec[:, 0])  # (n, 3, 3)
        pelvis = joints[:, [0]]
        joints = (R.unsqueeze(1) @ (joints - pelvis).unsqueeze(-1)).squeeze(-1)
        verts = (R.unsqueeze(1) @ (verts - pelvis).unsqueeze(-1)).squeeze(-1)
        head = joints[:, [HEAD_JOINT]]
        j3d = joints - head + transl.unsqueeze(1)
        v3d = verts - head + transl.unsqueeze(1)
        return {"v3d": v3d, "j3d": j3d, "j2d": perspective_projection(j3d, K), "transl_pelvis": j3d[:, 0]}
