"""`human3r-edge export`: files, I/O spec, checker, op hygiene, ONNX Runtime == torch graphs, initial state, lean
exports and clear errors for bad input."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from human3r_edge.cli import main as cli
from human3r_edge.export.checkpoint import sha256_file
from human3r_edge.export.graphs_torch import build_graphs, example_inputs
from human3r_edge.export.onnx_export import OPSET, ExportOptions, parse_resolution
from human3r_edge.runtime.config import Human3RConfig
from human3r_edge.errors import Human3RError
from human3r_edge.runtime.graphs import DECODER, LEAN_DROPPED, graph_specs
from human3r_edge.runtime.iospec import ExportSpec
from support.exports import golden_export, random_tiny_export
from support.goldens import golden

# never in an exported graph: data-dependent shapes, control flow, ops TensorRT or ONNX lack
FORBIDDEN_OPS = {"NonZero", "Einsum", "If", "Loop", "Scan", "Unique", "NonMaxSuppression", "Expm1", "Cross"}


@pytest.fixture
def export_dir(golden_dir, require_golden, tmp_path_factory):
    return golden_export(tmp_path_factory, golden_dir, fp16=True)  # made once per session


@pytest.fixture
def loaded(golden_dir, require_golden):
    from human3r_edge.export.checkpoint import load_model

    model, _ = load_model(golden_dir / "checkpoint.pth")
    return model


def test_files_and_spec(export_dir, golden_dir):
    spec = ExportSpec.load(export_dir)
    cfg_name = spec.config["name"]
    W, H = spec.resolution
    k = golden(golden_dir).slots
    want = graph_specs(Human3RConfig.from_dict(spec.config), W, H, k)
    assert [g.name for g in spec.graphs] == [g.name for g in want] and spec.max_people == k
    for g, w in zip(spec.graphs, want):
        assert g.inputs == w.inputs and g.outputs == w.outputs and g.state == w.state
        assert (export_dir / g.file).is_file() and g.fp16_file and (export_dir / g.fp16_file).is_file()
    assert cfg_name in ("tiny", "custom")
    assert spec.opset == OPSET >= 17
    assert spec.checkpoint_sha256 == sha256_file(golden_dir / "checkpoint.pth")
    assert spec.extra["source"]["kind"] == "checkpoint"
    assert {"torch", "onnx", "human3r_edge", "python"} <= set(spec.versions)
    assert not spec.lean and spec.dropped_outputs == ()
    raw = json.loads((export_dir / "export.json").read_text())
    assert raw["graphs"][1]["outputs"][0]["name"] == "state_out"


def test_onnx_checker_opset_and_forbidden_ops(export_dir):
    spec = ExportSpec.load(export_dir)
    for g in spec.graphs:
        for name in (g.file, g.fp16_file):
            onnx.checker.check_model(str(export_dir / name))
            m = onnx.load(str(export_dir / name), load_external_data=False)
            assert any(o.domain in ("", "ai.onnx") and o.version == OPSET for o in m.opset_import)
            ops = {n.op_type for n in m.graph.node}
            assert not ops & FORBIDDEN_OPS, (name, ops & FORBIDDEN_OPS)
            assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)
            if g.name != "smpl_head":
                assert "LayerNormalization" in ops  # opset 17: one op, not a decomposition
            casts64 = [n.name for n in m.graph.node if n.op_type == "Cast"
                       and any(a.name == "to" and a.i == onnx.TensorProto.INT64 for a in n.attribute)]
            assert not casts64, casts64


def test_ort_session_io_matches_the_spec(export_dir):
    import onnxruntime as ort

    from human3r_edge.runtime.backends.ort import verify_session_io

    spec = ExportSpec.load(export_dir)
    for g in spec.graphs:
        sess = ort.InferenceSession(str(export_dir / g.file), providers=["CPUExecutionProvider"])
        verify_session_io(sess, g, export_dir / g.file)


def test_onnx_runtime_equals_the_torch_graphs(export_dir, loaded):
    """Each exported graph on ONNX Runtime CPU against the torch module it was traced from."""
    import onnxruntime as ort

    spec = ExportSpec.load(export_dir)
    W, H = spec.resolution
    slots = spec.max_people
    pad = [0] * (slots - 2)  # two valid people, the other slots empty
    for (tspec, module), g in zip(build_graphs(loaded, W, H, slots), spec.graphs):
        inputs = list(example_inputs(tspec, seed=3))
        for k, t in enumerate(tspec.inputs):
            if t.name == "human_cell":
                inputs[k] = torch.tensor([5, 2] + pad, dtype=torch.int32)
            elif t.name == "human_patch":
                inputs[k] = torch.tensor([7, 30] + pad, dtype=torch.int32)
            elif t.name == "human_valid":
                inputs[k] = torch.tensor([1.0, 1.0] + [0.0] * len(pad))
            elif t.name == "first":
                inputs[k] = torch.zeros(1)
        with torch.inference_mode():
            ref = [r.numpy() for r in module(*inputs)]
        sess = ort.InferenceSession(str(export_dir / g.file), providers=["CPUExecutionProvider"])
        got = sess.run([t.name for t in g.outputs], {t.name: x.numpy() for t, x in zip(g.inputs, inputs)})
        for t, a, b in zip(g.outputs, got, ref):
            err = float(np.abs(a - b).max())
            assert err <= 2e-5 * max(float(np.abs(b).max()), 1e-6), f"{g.name}/{t.name}: {err:.3e}"


def test_initial_state(export_dir, loaded):
    with np.load(export_dir / "initial_state.npz") as z:
        assert sorted(z.files) == ["mem", "state"]
        state, mem = loaded.initial_state()
        np.testing.assert_array_equal(z["state"], state.detach().numpy())
        np.testing.assert_array_equal(z["mem"], mem.detach().numpy())


def test_lean_export_drops_the_unused_heads(golden_dir, require_golden, tmp_path_factory, export_dir):
    lean = golden_export(tmp_path_factory, golden_dir, lean=True)
    spec = ExportSpec.load(lean)
    outs = {t.name for t in spec.graph(DECODER).outputs}
    assert spec.lean and set(spec.dropped_outputs) == set(LEAN_DROPPED) and not outs & set(LEAN_DROPPED)
    assert {"state_out", "mem_out", "camera_pose", "pts3d_self", "human_tokens"} <= outs
    m = onnx.load(str(lean / "decoder.onnx"))
    assert not any("final_transform" in n.name or "dpt_rgb" in n.name or "dpt_cross" in n.name for n in m.graph.node)
    assert (lean / "decoder.onnx").stat().st_size < 0.8 * (export_dir / "decoder.onnx").stat().st_size


def test_random_weight_export_records_its_source(tmp_path_factory):
    d = random_tiny_export(tmp_path_factory)
    spec = ExportSpec.load(d)
    assert spec.extra["source"] == {"kind": "random", "config": "tiny", "seed": 0, "calibrated": False}
    assert spec.checkpoint_sha256 is None and spec.extra["trt_ops"]


# ------------------------------------------------------------------------------------------------ bad input
def test_parse_resolution_and_options():
    assert parse_resolution("512x288") == (512, 288)
    with pytest.raises(Human3RError, match="not WxH"):
        parse_resolution("512-288")
    with pytest.raises(Human3RError, match="multiple of 16"):
        ExportOptions(500, 288)
    with pytest.raises(Human3RError, match="K must be an integer >= 1"):
        ExportOptions(512, 288, max_people=0)


@pytest.mark.parametrize("args,expect", [
    (["--config", "tiny", "--random-weights", "--resolution", "130x96"], "multiple of 16"),
    (["--config", "tiny", "--random-weights", "--resolution", "128x96", "--max-people", "0"], "K must be"),
    (["--config", "tiny9", "--random-weights", "--resolution", "128x96"], "unknown config name"),
    (["--config", "tiny", "--resolution", "128x96"], "no weights given"),
    (["--random-weights", "--resolution", "128x96"], "needs --config"),
])
def test_cli_bad_input_is_a_clear_error(tmp_path, capsys, args, expect):
    rc = cli(["export", *args, "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and "Traceback" not in err, err
    assert not (tmp_path / "e" / "export.json").exists()


def test_cli_checkpoint_of_another_variant(golden_dir, require_golden, tmp_path, capsys):
    rc = cli(["export", "--checkpoint", str(golden_dir / "checkpoint.pth"), "--config", "672S",
              "--resolution", "128x96", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and "another variant" in err and "672S" in err, err
    rc = cli(["export", "--checkpoint", str(golden_dir / "checkpoint.pth"), "--random-weights",
              "--resolution", "128x96", "--out", str(tmp_path / "e")])
    assert rc == 2 and "exclude each other" in capsys.readouterr().err
    rc = cli(["export", "--checkpoint", str(tmp_path / "missing.pth"), "--resolution", "128x96",
              "--out", str(tmp_path / "e")])
    assert rc == 2 and "file not found" in capsys.readouterr().err


def test_cli_export_end_to_end(tmp_path, capsys):
    rc = cli(["export", "--config", "tiny", "--random-weights", "--seed", "1", "--resolution", "64x48",
              "--max-people", "2", "--lean", "--out", str(tmp_path / "e"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "-> " in out and "FAILED" not in out
    spec = ExportSpec.load(tmp_path / "e")
    assert spec.resolution == (64, 48) and spec.max_people == 2 and spec.lean
    assert all(r["errors"] == 0 for r in spec.extra["trt_ops"].values())
