"""Replaying every golden with the torch backend reproduces the original code (3e-5 of max|ref| per float key,
integer keys identical), with TTT3R on and off; the reset path keeps the reference's segment semantics."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from human3r_edge.runtime.commands.compare import REQUIRED_PREFIXES, compare_dicts, format_report, tolerance_for
from support.goldens import golden


@lru_cache(maxsize=4)
def _model(golden_dir: Path):
    from human3r_edge.export.checkpoint import load_model

    return load_model(golden_dir / "checkpoint.pth")[0]


@lru_cache(maxsize=8)
def _replay(golden_dir: Path, reference: str, preprocessed: bool) -> dict:
    from human3r_edge.export.reference import replay_golden

    return replay_golden(golden_dir, preprocessed=preprocessed, reference_npz=reference, model=_model(golden_dir))


def _golden(golden_dir: Path, reference: str) -> dict:
    with np.load(golden_dir / reference, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_torch_replay_matches_golden(golden_dir, require_golden, reference):
    out = _replay(golden_dir, reference, True)
    ref = _golden(golden_dir, reference)
    report = compare_dicts(out, ref)
    assert report.passed, "\n".join(format_report(report))
    required = [k for k in ref if k.startswith(REQUIRED_PREFIXES)]
    assert required and all(k in out for k in required)
    for k in required:  # names, shapes and dtypes of the golden
        assert out[k].shape == ref[k].shape and out[k].dtype == ref[k].dtype, k
    checked = {r.key: r for r in report.results}
    for k, v in ref.items():
        if k in checked and v.dtype.kind == "f":
            assert checked[k].rel <= tolerance_for(k)
            if k.startswith(REQUIRED_PREFIXES):
                assert tolerance_for(k) == 3e-5, k  # required keys keep the strict tolerance
        elif k in checked:
            np.testing.assert_array_equal(out[k], v, err_msg=k)  # counts, order, track ids
    assert int(out["step/n_humans"].sum()) > 0 and len(set(out["step/smpl_id"].tolist())) > 1


def test_raw_frames_give_the_same_outputs(golden_dir, require_golden):
    """Without --preprocessed the frames are preprocessed by the project (bit-exact with the golden's)."""
    raw = _replay(golden_dir, "golden.npz", False)
    pre = _replay(golden_dir, "golden.npz", True)
    for k in ("step/pts3d_in_self_view", "step/smpl_rotmat", "step/smpl_id", "smplx/v3d_world"):
        np.testing.assert_allclose(raw[k], pre[k], atol=1e-5 * float(np.abs(pre[k]).max()), err_msg=k)


def test_reset_interval_segments(golden_dir, require_golden):
    """reset_interval=3 on the golden's frames: a duplicate step follows frames 2, 5, ...; the segment after a reset
    equals a fresh run from the reset frame; the demo drops duplicates and chains poses through the reset frames."""
    from human3r_edge.export.reference import StreamSettings, reset_schedule, run_sequence

    model = _model(golden_dir)
    z = np.load(golden_dir / "golden.npz")
    kept_steps = golden(golden_dir).kept_step_index  # one model image per input frame (the golden's own resets dropped)
    imgs, mhmr = torch.from_numpy(z["input/img"][kept_steps]), torch.from_numpy(z["input/img_mhmr"][kept_steps])
    F = imgs.shape[0]
    assert F >= 5, "this check needs a golden of at least 5 frames"
    flags, kept = reset_schedule(F, 3)
    want = []
    for f in range(F):  # the reference: view['reset'] on frames with (f + 1) % 3 == 0, each followed by its duplicate
        want += [True, False] if (f + 1) % 3 == 0 else [False]
    assert flags == want
    out = run_sequence(model, imgs, mhmr, StreamSettings(True, 3, record_inter=True))
    fresh = run_sequence(model, imgs[2:5], mhmr[2:5], StreamSettings(True, 100, record_inter=True))
    assert out["meta/num_model_steps"] == F + F // 3
    np.testing.assert_array_equal(out["meta/kept_step_index"], kept)
    for k in ("step/pts3d_in_self_view", "step/camera_pose", "step/conf", "step/msk"):
        np.testing.assert_array_equal(out[k][3:6], fresh[k][0:3], err_msg=k)
    np.testing.assert_array_equal(out["inter/state_in"][3], out["inter/state_in"][0])  # fresh state after reset
    np.testing.assert_array_equal(out["inter/mem_in"][3], out["inter/mem_in"][0])
    c2w = out["step/camera_pose_c2w_4x4"]
    np.testing.assert_allclose(out["demo/cam2world"][3], c2w[2] @ c2w[4], atol=1e-5)
    np.testing.assert_allclose(out["demo/cam2world"][:3], c2w[:3], atol=0)
    assert out["demo/pts3d_world"].shape[0] == F and out["demo/n_humans"].shape == (F,)
    # ids keep counting across the reset (tracks are not reset)
    assert out["step/smpl_id"].max() >= fresh["step/smpl_id"].max()
