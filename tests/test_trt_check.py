"""`human3r-edge check`: budgets, input recording, the polygraphy comparison (on CPU runners), clean refusal here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from human3r_edge.runtime.backends import open_backend
from human3r_edge.runtime.commands.check import (DEFAULT_BUDGETS, RecordingBackend, load_budgets, polygraphy_compare)
from human3r_edge.errors import Human3RError
from human3r_edge.runtime.iospec import ExportSpec
from support.toy_export import run_frames, write_toy_export


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy_check")
    write_toy_export(d)
    return d


def test_budgets_file_is_measured_and_parses():
    b = load_budgets()
    assert b.source == str(DEFAULT_BUDGETS)
    assert not b.placeholder  # measured by the exporter: python -m human3r_edge.export.fp16_budgets --golden ...
    assert b.replay_tol("step/camera_pose") == b.replay["step/camera_pose"]
    assert b.replay_tol("smplx/not_a_key") == b.replay["smplx/"] and b.replay_tol("other") == b.replay[""]
    atol, rtol = b.output_tolerances("decoder", ["camera_pose", "state_out"])
    assert set(atol) == {"", "camera_pose", "state_out"}
    assert rtol["camera_pose"] == b.graphs["decoder/camera_pose"]["rtol"]


def test_bad_budgets(tmp_path):
    with pytest.raises(Human3RError, match="file not found"):
        load_budgets(tmp_path / "none.json")
    (tmp_path / "b.json").write_text(json.dumps({"replay": {"x": 1}, "graphs": {}}))
    with pytest.raises(Human3RError, match="default entry"):
        load_budgets(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"replay": {"": 1}}))
    with pytest.raises(Human3RError, match="malformed"):
        load_budgets(tmp_path / "c.json")


def test_recording_backend_records_complete_inputs(toy):
    spec = ExportSpec.load(toy)
    with open_backend("ort-cpu", toy) as inner:
        ref = run_frames(inner, spec, 3)
    rec = RecordingBackend(open_backend("ort-cpu", toy), max_frames=2)
    with rec:
        got = run_frames(rec, spec, 3, fetch={"encoder": ["det_scores"], "decoder": ["camera_pose"],
                                              "smpl_head": ["smpl_transl"]})
    for f in range(3):
        np.testing.assert_array_equal(got[f]["camera_pose"], ref[f]["camera_pose"])
    import onnxruntime as ort

    for g in spec.graphs:
        assert len(rec.records[g.name]) == 2
        sess = ort.InferenceSession(str(toy / g.file), providers=["CPUExecutionProvider"])
        for f, feeds in enumerate(rec.records[g.name]):
            assert set(feeds) == {t.name for t in g.inputs}
            outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
            for name, value in outs.items():  # the recorded inputs reproduce the frame exactly
                np.testing.assert_array_equal(value, ref[f][name], err_msg=f"{g.name} {name}")


def test_polygraphy_comparison_on_cpu_runners(toy):
    """The comparison plumbing with two ONNX Runtime CPU runners: FP32 vs the FP16 ONNX of the same graph."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    spec = ExportSpec.load(toy)
    rec = RecordingBackend(open_backend("ort-cpu", toy), max_frames=2)
    with rec:
        run_frames(rec, spec, 2)
    g = spec.graph("decoder")

    def runners():
        return (OnnxrtRunner(SessionFromOnnx(str(toy / g.file), providers=["cpu"]), name="fp32"),
                OnnxrtRunner(SessionFromOnnx(str(toy / g.fp16_file), providers=["cpu"]), name="fp16"))

    loose = polygraphy_compare("decoder", *runners(), rec.records["decoder"], {"": 1.0}, {"": 1.0})
    assert loose.passed and loose.lines[-1].startswith("decoder: PASSED")
    assert any(line.startswith("decoder/camera_pose iter 0: max abs") for line in loose.lines)
    tight = polygraphy_compare("decoder", *runners(), rec.records["decoder"], {"": 1e-7, "ttt3r_gate": 1.0},
                               {"": 1e-7, "ttt3r_gate": 1.0})
    assert not tight.passed
    assert not polygraphy_compare("decoder", *runners(), [], {"": 1.0}, {"": 1.0}).passed


@pytest.mark.parametrize("backend", ["trt", "ort-trt", "ort-cuda"])
def test_check_refuses_cleanly_without_gpu(toy, backend, capsys, goldens_or_tmp):
    from human3r_edge.cli import main

    code = main(["check", "--backend", backend, "--golden", str(goldens_or_tmp), "--engines", str(toy)])
    err = capsys.readouterr().err
    if code == 3:
        assert "unavailable on this machine" in err and "Hint:" in err
    else:
        pytest.skip(f"{backend} is usable here (exit {code}): the refusal path cannot be shown")


@pytest.fixture
def goldens_or_tmp(tmp_path) -> Path:
    from support.goldens import golden_dirs

    dirs = golden_dirs()
    return dirs[0] if dirs else tmp_path
