"""The FP16 variant (`export --fp16`): explicitly typed graphs (FP16 weights, FP32 islands), I/O unchanged, TensorRT
op support, and the committed measured budgets hold: golden replay, per graph through polygraphy, 200 frames of
the tiny config against FP32 with no inf/NaN."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from human3r_edge.export.fp16 import STREAM_LIMITS, fp16_view, replay_errors, stream_error
from human3r_edge.export.trt_ops import check_onnx_trt_support, errors
from human3r_edge.runtime.check import DEFAULT_BUDGETS, load_budgets
from human3r_edge.runtime.iospec import ExportSpec
from support.exports import golden_export

FP32_OPS = ("LayerNormalization", "Softmax", "Exp", "ReduceSum", "ReduceMean", "ReduceL2")


@pytest.fixture
def export_dir(golden_dir, require_golden, tmp_path_factory):
    return golden_export(tmp_path_factory, golden_dir, max_people=4, fp16=True)


@pytest.fixture
def view(export_dir, tmp_path):
    return fp16_view(export_dir, tmp_path / "fp16")


@pytest.fixture(scope="module")
def budgets():
    return load_budgets(DEFAULT_BUDGETS)


def test_budgets_are_measured_and_within_the_limits(budgets):
    import json

    doc = json.loads(DEFAULT_BUDGETS.read_text())
    assert not budgets.placeholder and doc["measured"]["stream"]["frames"] == 200
    for k, limit in STREAM_LIMITS.items():
        assert doc["measured"]["stream"][k] <= doc["stream"][k] <= limit, k
    assert doc["measured"]["stream"]["finite"] is True
    assert budgets.replay[""] <= 1e-2 and all(0 < v <= 1e-2 for v in budgets.replay.values())
    for graph in ("encoder", "decoder", "smpl_head"):
        assert any(k.startswith(graph + "/") for k in budgets.graphs), graph


def test_fp16_graphs_are_explicitly_typed(export_dir):
    spec = ExportSpec.load(export_dir)
    for g in spec.graphs:
        m = onnx.load(str(export_dir / g.fp16_file))
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True)
        types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info)
                 + list(inferred.graph.input) + list(inferred.graph.output)}
        types.update({t.name: t.data_type for t in m.graph.initializer})
        # the I/O spec is unchanged: FP32 (and INT32) in and out
        for t, v in zip(g.inputs, m.graph.input):
            assert v.name == t.name and v.type.tensor_type.elem_type == (TensorProto.INT32 if t.dtype == "int32"
                                                                         else TensorProto.FLOAT)
        assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in m.graph.output)
        # the matmul / conv weights are FP16, apart from the pinned output tails
        weights = [n.input[1] for n in m.graph.node if n.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose")
                   and n.input[1] in {t.name for t in m.graph.initializer}]
        fp16 = sum(types[w] == TensorProto.FLOAT16 for w in weights)
        assert weights and fp16 >= 0.7 * len(weights), (g.name, fp16, len(weights))
        # the fragile math computes in FP32
        for n in m.graph.node:
            if n.op_type in FP32_OPS:
                assert types.get(n.input[0]) == TensorProto.FLOAT, (g.name, n.name)
        assert not errors(check_onnx_trt_support(m)), g.name
        report = spec.extra["fp16"][g.name]
        assert report["fp32_nodes"] > 0 and report["fp16_nodes"] > 0
        if g.name != "smpl_head":  # the tiny SMPL-X head is mostly output tails (rotation, translation) kept FP32
            assert report["fp16_nodes"] > 5 * report["fp32_nodes"]
            assert (export_dir / g.fp16_file).stat().st_size < 0.6 * (export_dir / g.file).stat().st_size


def test_fp16_golden_replay_within_budgets(golden_dir, view, budgets, synthetic_smplx):
    for reference in ("golden.npz", "golden_nottt3r.npz"):
        if not (golden_dir / reference).is_file():
            continue
        rel, exact_bad, finite = replay_errors(golden_dir, view, reference, synthetic_smplx)
        assert not exact_bad, f"{reference}: detections / ids differ: {exact_bad}"
        assert finite
        over = {k: (v, budgets.replay_tol(k)) for k, v in rel.items() if v > budgets.replay_tol(k)}
        assert not over, over


def test_fp16_graphs_within_budgets_through_polygraphy(golden_dir, export_dir, view, budgets):
    """Every graph's FP16 file against its FP32 file on the complete inputs recorded from a golden replay."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.check import RecordingBackend, polygraphy_compare
    from human3r_edge.runtime.run import replay_golden

    rec = RecordingBackend(open_backend("ort-cpu", export_dir), max_frames=3)
    replay_golden(golden_dir, rec, preprocessed=True)
    s32, s16 = ExportSpec.load(export_dir), ExportSpec.load(view)
    for g32, g16 in zip(s32.graphs, s16.graphs):
        atol, rtol = budgets.output_tolerances(g32.name, [t.name for t in g32.outputs])
        res = polygraphy_compare(
            g32.name, OnnxrtRunner(SessionFromOnnx(str(export_dir / g32.file), providers=["cpu"]), name="fp32"),
            OnnxrtRunner(SessionFromOnnx(str(view / g16.file), providers=["cpu"]), name="fp16"),
            rec.records[g32.name], atol, rtol)
        assert res.passed, "\n".join(res.lines)


@pytest.mark.slow
def test_fp16_200_frames_against_fp32(export_dir, view, synthetic_smplx):
    """200 frames of the tiny config, FP32 and FP16 pipelines each with its own state: no inf/NaN, errors within
    the committed budgets (which are within the project's limits)."""
    import json

    from human3r_edge.export.assets import synthetic_frames

    doc = json.loads(DEFAULT_BUDGETS.read_text())
    spec = ExportSpec.load(export_dir)
    w, h = spec.resolution
    res = stream_error(export_dir, view, synthetic_frames(w, h, 200, seed=1), synthetic_smplx)
    assert res.frames == 200 and res.finite
    assert res.same_decisions >= doc["stream"]["min_same_decisions"], res.flip_frames
    for k, budget in doc["stream"].items():
        if k in ("frames", "min_same_decisions"):
            continue
        assert getattr(res, k) <= budget, (k, getattr(res, k), budget)
    assert res.vertices_cam_abs <= 0.01 and res.camera_rotation_deg <= 0.5 and res.camera_translation_rel <= 1e-2
    assert np.isfinite(res.depth_rel)
