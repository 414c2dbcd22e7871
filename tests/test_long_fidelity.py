"""Fidelity over a long sequence (issue 14): tiny_a's 6 frames looped to 60, two state resets, replayed through
the torch reference and through the runtime on ort-cpu: every key within 3e-5 * max|ref| over the whole sequence
(the Weiszfeld focal `demo/focal` included: the runtime computes it as the reference does, float32, direct
residual)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

LOOPS = 10  # 60 frames
RESET_INTERVAL = 25  # resets after frames 24 and 49: two resets


@pytest.fixture(scope="module")
def looped_golden(tmp_path_factory, goldens):
    src = goldens / "tiny_a"
    d = tmp_path_factory.mktemp("tiny_a_looped")
    (d / "frames").mkdir()
    frames = sorted((src / "frames").glob("*.png"))
    for k in range(LOOPS * len(frames)):
        shutil.copyfile(frames[k % len(frames)], d / "frames" / f"frame_{k:04d}.png")
    with np.load(src / "golden.npz") as z:
        meta = {k: z[k] for k in z.files if k.startswith("meta/")}
    meta["meta/reset_interval"] = np.array(RESET_INTERVAL, np.int64)
    np.savez(d / "golden.npz", **meta)
    (d / "checkpoint.pth").symlink_to(src / "checkpoint.pth")
    return d


@pytest.mark.slow
def test_torch_vs_ort_cpu_over_60_frames_with_two_resets(looped_golden, goldens, tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from support.exports import golden_export

    from human3r_edge.export.reference import replay_golden as torch_replay
    from human3r_edge.runtime.commands.compare import compare_dicts, format_report
    from human3r_edge.runtime.commands.replay import replay_golden as runtime_replay

    smplx = goldens / "smplx_synthetic" / "SMPLX_NEUTRAL.npz"
    ref = torch_replay(looped_golden, smplx_model=smplx)
    engines = golden_export(tmp_path_factory, goldens / "tiny_a")
    out = runtime_replay(looped_golden, "ort-cpu", smplx_model=smplx, engines=engines, intra_op_threads=2)
    assert int(ref["meta/num_model_steps"]) == LOOPS * 6 + 2  # 66 frames + the duplicated view after each reset
    assert out["demo/focal"].shape == (LOOPS * 6,)
    report = compare_dicts(out, ref)
    lines = format_report(report)
    print("\n".join(lines))
    focal = next(r for r in report.results if r.key == "demo/focal")
    print(f"demo/focal over {LOOPS * 6} frames: rel {focal.rel:.3e} (tol {focal.tol:.0e})")
    assert report.passed, lines[-1]


def test_focal_computed_as_the_reference(goldens):
    """The runtime's numpy focal against the reference's torch one (export/model/scene.py) on the same point maps:
    tiny_a's six and noisy random ones (float32 summation order is the only difference left)."""
    torch = pytest.importorskip("torch")
    from human3r_edge.export.model.scene import weiszfeld_focal as ref_focal
    from human3r_edge.runtime.geometry import weiszfeld_focal

    with np.load(goldens / "tiny_a" / "golden.npz") as z:
        maps = list(z["step/pts3d_in_self_view"])
    rng = np.random.default_rng(0)
    vs, us = np.mgrid[0:48, 0:64]
    for k in range(6):  # a pinhole at focal 40..90 with 20 % noise and a few NaN/zero-depth pixels
        z = 1.0 + rng.random((48, 64))
        f0 = 40.0 + 10 * k
        m = np.stack([(us - 32) / f0 * z, (vs - 24) / f0 * z, z], -1) * (1 + 0.2 * rng.standard_normal((48, 64, 1)))
        m[rng.random((48, 64)) < 0.02] = 0.0
        maps.append(m.astype(np.float32))
    worst = 0.0
    for m in maps:
        h, w, _ = m.shape
        pp = torch.tensor([[w // 2, h // 2]], dtype=torch.float32)
        ref = float(ref_focal(torch.from_numpy(m)[None], pp)[0])
        worst = max(worst, abs(weiszfeld_focal(m) - ref) / abs(ref))
    print(f"runtime vs reference focal: max rel {worst:.2e}")
    assert worst < 1e-6
