"""TensorRT 10.3 readiness of the exported graphs (export/trt_ops.py's checker): the tiny graphs and the 672S / 896L
structures pass, with no INT64 on data paths; a planted unsupported op or INT64 index fails."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from human3r_edge.export.onnx_export import export_structure
from human3r_edge.export.trt_ops import check_onnx_trt_support, errors
from human3r_edge.runtime.iospec import ExportSpec
from support.exports import golden_export, random_tiny_export


def _problems(model):
    return [str(p) for p in errors(check_onnx_trt_support(model))]


def test_tiny_export_passes_fp32_and_fp16(golden_dir, require_golden, tmp_path_factory):
    d = golden_export(tmp_path_factory, golden_dir, fp16=True)
    spec = ExportSpec.load(d)
    for g in spec.graphs:
        for name in (g.file, g.fp16_file):
            assert _problems(d / name) == [], name
    assert all(r["errors"] == 0 for r in spec.extra["trt_ops"].values())  # what the exporter recorded


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    return onnx.load(str(random_tiny_export(tmp_path_factory) / "decoder.onnx"))


def test_planted_unsupported_op_fails(decoder):
    bad = onnx.ModelProto()
    bad.CopyFrom(decoder)
    out = bad.graph.output[0].name  # state_out: route it through a NonZero + a custom-domain op
    prod = next(n for n in bad.graph.node if out in n.output)
    prod.output[:] = [o if o != out else "raw_state" for o in prod.output]
    bad.graph.node.extend([
        helper.make_node("NonZero", ["raw_state"], ["nz"], name="planted_nonzero"),
        helper.make_node("Identity", ["raw_state"], [out], name="planted_identity"),
        helper.make_node("Cross", ["raw_state", "raw_state"], ["crossed"], name="planted_custom",
                         domain="com.example"),
    ])
    bad.opset_import.append(helper.make_opsetid("com.example", 1))
    probs = errors(check_onnx_trt_support(bad))
    names = {p.node for p in probs}
    assert "planted_custom" in names and "planted_nonzero" in names, [str(p) for p in probs]
    assert _problems(decoder) == []


def test_planted_int64_index_fails(decoder):
    bad = onnx.ModelProto()
    bad.CopyFrom(decoder)
    gather = next(n for n in bad.graph.node if n.op_type == "Gather" and n.input[1] == "human_cell")
    gather.input[1] = "human_cell_i64"
    bad.graph.node.insert(0, helper.make_node("Cast", ["human_cell"], ["human_cell_i64"], name="planted_cast",
                                              to=TensorProto.INT64))
    probs = errors(check_onnx_trt_support(bad))
    assert any(p.kind == "int64-hot-path" and p.node == "human_cell_i64" for p in probs), [str(p) for p in probs]


def test_structure_export_has_the_ops_of_the_real_export(tmp_path_factory):
    """The cheap weight-less trace used for the full-size presets has every op of a real export; its only extras
    are the ops the tracer folds when weights are constants (e.g. Expand of the cls token)."""
    real = random_tiny_export(tmp_path_factory)
    structure = export_structure("tiny", 128, 96, max_people=4)
    for name, model in structure.items():
        ref = onnx.load(str(real / f"{name}.onnx"))
        ops = {n.op_type for n in model.graph.node} - {"Identity"}  # the tracer aliases merged weights with it
        ref_ops = {n.op_type for n in ref.graph.node} - {"Identity"}
        assert ref_ops <= ops and ops - ref_ops <= {"Expand", "Transpose", "Unsqueeze"}, (name, ops ^ ref_ops)
        assert sum(len(t.raw_data) for t in model.graph.initializer) < 1 << 20  # folded constants, no weights


@pytest.mark.slow
@pytest.mark.parametrize("config", ["672S", "896L"])
def test_full_size_presets_pass(config):
    """672S and 896L (random weights, structure only, at 128x96: the CUT3R image size changes shapes, not ops;
    the DINOv2 branch runs at the preset's R) against the TensorRT 10.3 table."""
    graphs = export_structure(config, 128, 96, max_people=16)
    assert set(graphs) == {"encoder", "decoder", "smpl_head"}
    for name, model in graphs.items():
        assert _problems(model) == [], (config, name)
        assert "LayerNormalization" in {n.op_type for n in model.graph.node} or name == "smpl_head"
