"""Golden replay through the torch-free runtime on ONNX Runtime CPU (`replay --backend ort-cpu --engines DIR`) and
through the torch backend: every golden npz passes `compare` at the fp32 tolerances, with identical detections
and track ids, and every step/*, demo/*, smplx/* key written."""
from __future__ import annotations

import numpy as np
import pytest

from human3r_edge.cli import main as cli
from human3r_edge.runtime.commands.compare import REQUIRED_PREFIXES
from support.exports import golden_export
from support.goldens import golden

@pytest.fixture
def onnx_dir(golden_dir, require_golden, tmp_path_factory):
    return golden_export(tmp_path_factory, golden_dir, fp16=True)  # non-lean; shared, made once


@pytest.mark.parametrize("preprocessed", [True, False], ids=["preprocessed", "raw-frames"])
def test_ort_cpu_replay_passes_compare(golden_dir, onnx_dir, tmp_path, capsys, reference, preprocessed):
    out = tmp_path / "ort.npz"
    args = ["replay", "--golden", str(golden_dir), "--reference", reference, "--backend", "ort-cpu",
            "--engines", str(onnx_dir), "--out", str(out)] + (["--preprocessed"] if preprocessed else [])
    assert cli(args) == 0, capsys.readouterr().err
    rc = cli(["compare", str(out), str(golden_dir / reference)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1].startswith("PASSED"), "\n".join(lines)
    with np.load(out) as got, np.load(golden_dir / reference) as ref:
        need = [k for k in ref.files if k.startswith(REQUIRED_PREFIXES)]
        assert need and not [k for k in need if k not in got.files]
        for k in ("step/n_humans", "step/smpl_id", "demo/smpl_id", "step/human_step_index"):
            if k in ref.files:
                np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_torch_backend_replays_the_golden_through_the_runtime(golden_dir, onnx_dir, synthetic_smplx):
    """The torch backend (the same wrapper modules, eager) behind the runtime pipeline passes compare too."""
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.commands.compare import compare_dicts, format_report
    from human3r_edge.runtime.commands.replay import replay_golden

    backend = open_backend("torch", onnx_dir)
    out = replay_golden(golden_dir, backend, preprocessed=True, smplx_model=synthetic_smplx)
    with np.load(golden_dir / "golden.npz") as z:
        report = compare_dicts(out, {k: z[k] for k in z.files})
    assert report.passed, "\n".join(format_report(report))


def test_replay_engines_errors(golden_dir, require_golden, tmp_path, capsys):
    rc = cli(["replay", "--golden", str(golden_dir), "--backend", "ort-cpu", "--engines", str(tmp_path),
              "--out", str(tmp_path / "o.npz")])
    assert rc == 2 and "no export.json" in capsys.readouterr().err
    rc = cli(["replay", "--golden", str(golden_dir), "--backend", "torch", "--engines", str(tmp_path),
              "--out", str(tmp_path / "o.npz")])
    assert rc == 2 and "not used by the torch backend" in capsys.readouterr().err


def test_torch_backend_refuses_another_checkpoint(golden_dir, onnx_dir, tmp_path):
    """export.json pins the checkpoint by SHA-256: the torch backend will not run other weights under it."""
    from human3r_edge.export.assets import make_assets
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.errors import CheckpointError

    other = make_assets("tiny", tmp_path, seed=5, calibrate=False, log=lambda s: None)["checkpoint"]
    with pytest.raises(CheckpointError, match="not the file the export was made from"):
        open_backend("torch", onnx_dir, checkpoint=other).activate()


def test_torch_backend_all_heads_on_a_lean_export(golden_dir, require_golden, tmp_path_factory):
    """all_heads=True runs the dropped heads too (the reference's work) and returns exactly the spec's outputs,
    equal to the lean run's."""
    from human3r_edge.runtime.backends import open_backend

    k = golden(golden_dir).slots
    lean = golden_export(tmp_path_factory, golden_dir, max_people=k, lean=True)
    with np.load(golden_dir / "golden.npz") as z:
        img, mhmr = z["input/img"][:1], z["input/img_mhmr"][:1]
    outs = []
    for opts in ({}, {"all_heads": True}):
        with open_backend("torch", lean, **opts) as be:
            be.run("encoder", {"img": img, "img_mhmr": mhmr})
            feeds = {"human_cell": np.zeros(k, np.int32), "human_patch": np.zeros(k, np.int32),
                     "human_valid": np.zeros(k, np.float32), "first": np.ones(1, np.float32),
                     "ttt3r": np.ones(1, np.float32)}
            outs.append(be.run("decoder", feeds))
            assert be._modules["decoder"].lean is (not opts)
    assert outs[0].keys() == outs[1].keys()
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k], err_msg=k)
