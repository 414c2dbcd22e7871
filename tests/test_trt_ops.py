"""TensorRT 10.3 op-support check and the FP32 pinning rules, on the toy export and on planted graphs."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from human3r_edge.export.trt_ops import (DATA, SOURCE_FILE, check_onnx_trt_support, errors, fp32_nodes,
                                         load_support_table, main)
from support.toy_export import write_toy_export


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_ops")
    write_toy_export(d)
    return d


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "planted", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _vi(name, ty=TensorProto.FLOAT, shape=(1, 4)):
    return helper.make_tensor_value_info(name, ty, list(shape))


def _kinds(problems, severity="error"):
    return sorted({(p.op_type, p.kind) for p in problems if p.severity == severity})


def test_table_source_is_recorded_and_matches_the_file():
    src = json.loads(SOURCE_FILE.read_text())
    table_file = DATA / src["table"]["file"]
    assert hashlib.sha256(table_file.read_bytes()).hexdigest() == src["table"]["sha256"]
    for key in ("repository", "commit", "path", "retrieved"):
        assert src["table"][key]
    t = load_support_table()
    assert t.target == "TensorRT 10.3" and t.opset_range == (9, 20)
    assert t.ops["LayerNormalization"].supported and t.ops["MatMul"].supported
    assert not t.ops["Unique"].supported and not t.ops["StringNormalizer"].supported
    # the 10.3 changelog delta lifted Slice's constant-axes restriction; Squeeze keeps its own
    assert "axes" not in t.ops["Slice"].restriction and "axes" in t.ops["Squeeze"].restriction


def test_toy_graphs_pass(toy):
    for f in sorted(toy.glob("*.onnx")):
        probs = check_onnx_trt_support(f)
        assert errors(probs) == [], (f.name, [str(p) for p in probs])
    assert main([str(toy)]) == 0


def test_planted_unsupported_op_fails(toy):
    m = onnx.load(str(toy / "smpl_head.onnx"))
    m.graph.node.append(helper.make_node("Unique", ["smpl_shape"], ["u"], name="planted_unique"))
    probs = check_onnx_trt_support(m)
    assert ("Unique", "unsupported-op") in _kinds(probs)
    assert any(p.node == "planted_unique" for p in errors(probs))
    custom = _model([helper.make_node("FusedGemm", ["x", "x"], ["y"], domain="com.microsoft", name="fg")],
                    [_vi("x")], [_vi("y")])
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert ("FusedGemm", "unsupported-op") in _kinds(check_onnx_trt_support(custom))


def test_cli_fails_on_planted_op(toy, tmp_path, capsys):
    m = onnx.load(str(toy / "encoder.onnx"))
    m.graph.node.append(helper.make_node("Det", ["det_scores"], ["d"], name="planted_det"))
    onnx.save(m, str(tmp_path / "bad.onnx"))
    assert main([str(tmp_path / "bad.onnx")]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_attribute_restrictions():
    x = _vi("x", shape=(1, 3, 8, 8))
    scales = numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "scales")
    cubic = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", name="r")], [x],
                   [_vi("y", shape=(1, 3, 16, 16))], [scales])
    assert ("Resize", "restriction") in _kinds(check_onnx_trt_support(cubic))
    linear = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", name="r",
                                      coordinate_transformation_mode="align_corners")], [x],
                    [_vi("y", shape=(1, 3, 16, 16))], [scales])
    assert errors(check_onnx_trt_support(linear)) == []
    data = _vi("d", shape=(4, 3))
    idx = numpy_helper.from_array(np.asarray([[0], [2]], np.int64), "i")
    upd = numpy_helper.from_array(np.ones((2, 3), np.float32), "u")
    scat = _model([helper.make_node("ScatterND", ["d", "i", "u"], ["y"], reduction="add", name="s")], [data],
                  [_vi("y", shape=(4, 3))], [idx, upd], opset=18)
    assert ("ScatterND", "restriction") in _kinds(check_onnx_trt_support(scat, allow_int64=["i"]))
    nz = _model([helper.make_node("NonZero", ["x"], ["y"], name="nz")], [x],
                [_vi("y", TensorProto.INT64, (4, None))])
    assert ("NonZero", "restriction") in _kinds(check_onnx_trt_support(nz, allow_int64=["y"]))
    assert errors(check_onnx_trt_support(nz, allow_int64=["y"], static_shapes=False)) == []
    ein = _model([helper.make_node("Einsum", ["a", "b"], ["y"], equation="ij,jk->ik", name="e")],
                 [_vi("a", shape=(2, 3)), _vi("b", shape=(3, 4))], [_vi("y", shape=(2, 4))])
    probs = check_onnx_trt_support(ein)
    assert errors(probs) == [] and ("Einsum", "advice") in _kinds(probs, "warning")
    pad = _model([helper.make_node("Pad", ["x", "p"], ["y"], mode="constant", name="pad")],
                 [x, _vi("p", TensorProto.INT64, (8,))], [_vi("y", shape=(1, 3, None, None))])
    assert ("Pad", "restriction") in _kinds(check_onnx_trt_support(pad, allow_int64=["p"]))
    axes_in = _model([helper.make_node("ReduceSum", ["x", "ax"], ["y"], name="rs")],
                     [x, _vi("ax", TensorProto.INT64, (1,))], [_vi("y", shape=(1, 1, 8, 8))])
    assert ("ReduceSum", "restriction") in _kinds(check_onnx_trt_support(axes_in))


def test_dtype_and_opset_problems():
    dbl = _model([helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE, name="c"),
                  helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT, name="c2")], [_vi("x")], [_vi("y")])
    kinds = _kinds(check_onnx_trt_support(dbl))
    assert ("-", "dtype") in kinds and ("Cast", "dtype") in kinds
    mm_int = _model([helper.make_node("MatMul", ["a", "a"], ["y"], name="mm")], [_vi("a", TensorProto.INT32, (2, 2))],
                    [_vi("y", TensorProto.INT32, (2, 2))])
    assert ("MatMul", "dtype") in _kinds(check_onnx_trt_support(mm_int))
    new = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x")], [_vi("y")], opset=21)
    assert ("-", "opset") in _kinds(check_onnx_trt_support(new))


def test_int64_hot_path_and_shape_only_allow_list():
    data = _vi("x", shape=(1, 16, 8))
    shape = numpy_helper.from_array(np.asarray([1, 128], np.int64), "shape")
    ok = _model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="rs")], [data], [_vi("y", shape=(1, 128))],
                [shape])
    assert errors(check_onnx_trt_support(ok)) == []  # INT64 only as a shape: ONNX's convention
    # the same through shape arithmetic (Shape -> Gather -> Concat -> Reshape) is still shape-only
    g0 = numpy_helper.from_array(np.asarray([0], np.int64), "g0")
    m1 = numpy_helper.from_array(np.asarray([-1], np.int64), "m1")
    arith = _model([helper.make_node("Shape", ["x"], ["s"], name="sh"),
                    helper.make_node("Gather", ["s", "g0"], ["b"], axis=0, name="ga"),
                    helper.make_node("Concat", ["b", "m1"], ["ns"], axis=0, name="cc"),
                    helper.make_node("Reshape", ["x", "ns"], ["y"], name="rs")], [data],
                   [_vi("y", shape=(1, 128))], [g0, m1])
    assert errors(check_onnx_trt_support(arith)) == []
    assert ("Shape", "int64-hot-path") in _kinds(check_onnx_trt_support(arith, allow_shape_int64=False))
    # INT64 indices of a per-slot gather are data on the hot path: flagged unless allow-listed
    hot = _model([helper.make_node("Gather", ["x", "cell"], ["y"], axis=1, name="gather_slots")],
                 [data, _vi("cell", TensorProto.INT64, (4,))], [_vi("y", shape=(1, 4, 8))])
    probs = errors(check_onnx_trt_support(hot))
    assert [p.node for p in probs] == ["cell"] and "graph input" in probs[0].message
    assert errors(check_onnx_trt_support(hot, allow_int64=["cell"])) == []


def test_fp32_nodes_rules_on_toy(toy):
    pins = {p.name: p for p in fp32_nodes(toy / "decoder.onnx")}
    ops = {p.op_type for p in pins.values()}
    assert {"LayerNormalization", "Softmax", "ReduceMean", "Exp", "ReduceL2"} <= ops
    m = onnx.load(str(toy / "decoder.onnx"))
    by_out = {o: n for n in m.graph.node for o in n.output}
    # the last node of each pose output is pinned, with the pose reason; so is the head's last linear layer
    last = by_out["camera_pose"]
    assert "pose translation" in pins[last.name].reason
    assert any(p.op_type == "MatMul" and "pose translation" in p.reason for p in pins.values())
    # exp(x)-1: the Sub consuming the Exp is pinned with it
    exp_sub = [n for n in m.graph.node if n.op_type == "Sub" and by_out.get(n.input[0], n).op_type == "Exp"]
    assert exp_sub and all(n.name in pins for n in exp_sub)
    # dense point-map MatMuls and the bulk of the graph stay FP16
    assert len(pins) < len(m.graph.node) / 2
    assert not any(p.op_type == "MatMul" and "pose" not in p.reason for p in pins.values())
    assert all(p.reason for p in pins.values())
    # pure function: same answer twice, in graph order
    assert [p.name for p in fp32_nodes(m)] == list(pins)
    head = {p.op_type for p in fp32_nodes(toy / "smpl_head.onnx")}
    assert {"ReduceL2", "Div", "Exp", "MatMul"} <= head
