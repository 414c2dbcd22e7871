"""Risks 7, 8, 9, 10 and 11 of issue 13, each through the strict stand-in (tests/support/fake_gpu)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from human3r_edge.runtime.backends import open_backend
from human3r_edge.errors import Human3RError
from human3r_edge.runtime.iospec import ExportSpec
from support.fake_gpu import fake_gpu  # noqa: F401  (fixture)
from support.toy_export import run_frames, write_toy_export


@pytest.fixture
def toy(tmp_path) -> Path:
    d = tmp_path / "onnx"
    write_toy_export(d)
    return d


def _build(toy, out, **kw):
    from human3r_edge.export.trt_build import BuildOptions, build_engines

    build_engines(toy, out, BuildOptions(progress=False, **kw))
    return out


# ------------------------------------------------------------------------------------------ risk 7
def test_one_process_wide_tensorrt_logger_keeps_the_build_diagnosis(fake_gpu, toy, tmp_path):
    """TensorRT keeps the first logger it is given. After a backend has made a Runtime, a build's errors must
    still reach the build's diagnosis (here: insufficient workspace)."""
    engines = _build(toy, tmp_path / "e")
    with open_backend("trt", engines):
        pass  # a Runtime (and its logger) exists now
    fake_gpu.state["workspace_required"] = 64 << 20
    with pytest.raises(Human3RError, match="ran out of workspace"):
        _build(toy, tmp_path / "f", workspace_mb=32)
    assert fake_gpu.state.get("ignored_loggers", 0) == 0


# ------------------------------------------------------------------------------------------ risk 8
def test_failed_graph_capture_runs_the_slot_without_a_graph(fake_gpu, toy, tmp_path):
    """An enqueue that cannot be captured: the partial graph is destroyed, that slot runs without a graph from
    then on, one warning says so, the results are those of plain enqueues, and the real error is not masked."""
    spec = ExportSpec.load(toy)
    engines = _build(toy, tmp_path / "e")
    with open_backend("ort-cpu", toy) as be:
        ref = run_frames(be, spec, 4)
    fake_gpu.state["enqueue_breaks_capture"] = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_backend("trt", engines, cuda_graph=True) as be:
            got = run_frames(be, spec, 4)
    for f in range(4):
        for k in ref[f]:
            np.testing.assert_array_equal(got[f][k], ref[f][k], err_msg=f"frame {f} {k}")
    texts = [str(w.message) for w in caught if "CUDA graph" in str(w.message)]
    assert len(texts) == 1 and "operation not permitted when stream is capturing" in texts[0], texts
    assert all(g.alive is False for g in fake_gpu.dev.graphs.values())  # no partial graph left


# ------------------------------------------------------------------------------------------ risk 10
def _pin_model(path: Path) -> None:
    """x -> LayerNormalization 'ln' -> y, and Shape(x) named 'ln_1' (what the parser's `<node>_<k>` naming
    makes of a pinned node's helper layer) -> Cast -> z: a pinned name that is an integer / shape layer."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="ln", axis=-1),
             helper.make_node("Shape", ["x"], ["s"], name="ln_1"),
             helper.make_node("Cast", ["s"], ["z"], name="cast", to=TensorProto.FLOAT)]
    inits = [helper.make_tensor("g", TensorProto.FLOAT, [8], np.ones(8)),
             helper.make_tensor("b", TensorProto.FLOAT, [8], np.zeros(8))]
    g = helper.make_graph(nodes, "pins", [x], [y, z], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))


def test_fp32_pins_only_on_float_layers(fake_gpu, tmp_path):
    from human3r_edge.export.trt_build import apply_fp32_pins
    from human3r_edge.export.trt_ops import PinnedNode

    trt = fake_gpu.trt
    _pin_model(tmp_path / "m.onnx")
    logger = trt.Logger()
    builder = trt.Builder(logger)
    net = builder.create_network(0)
    assert trt.OnnxParser(net, logger).parse_from_file(str(tmp_path / "m.onnx"))
    records, _ = apply_fp32_pins(net, [PinnedNode("ln", "LayerNormalization", ("y",), "normalisation")])
    pinned = {r["layer"] for r in records}
    assert "ln" in pinned and "ln_1" not in pinned
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    assert builder.build_serialized_network(net, config) is not None


# ------------------------------------------------------------------------------------------ risk 11
def _make_batch_dynamic(path: Path) -> None:
    """Mark dim 0 of every graph input and output of an ONNX file dynamic (dim_param 'N')."""
    m = onnx.load(str(path))
    for v in list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
    onnx.save(m, str(path))


def test_engine_with_dynamic_dims_pinned_by_its_profile_is_accepted(fake_gpu, toy, tmp_path):
    """An engine built with dynamic dims reports -1 for them even when min = opt = max (the profile the builder
    sets to the spec's shape): verify_engine_io checks the profile instead, and the engine runs."""
    spec = ExportSpec.load(toy)
    _make_batch_dynamic(toy / "smpl_head.onnx")
    engines = _build(toy, tmp_path / "e", precision="fp32")
    with open_backend("trt", engines) as be:
        eng = be._engines["smpl_head"]
        name = spec.graph("smpl_head").inputs[0].name
        assert -1 in tuple(eng.get_tensor_shape(name))  # what TensorRT reports
        got = run_frames(be, spec, 2)
    assert got and all(np.isfinite(v).all() for row in got for v in row.values() if v.dtype.kind == "f")


# ------------------------------------------------------------------------------------------ risk 9
def test_graph_mode_shares_one_activation_block(fake_gpu, toy, tmp_path):
    """CUDA graphs give the decoder one execution context per ping-pong slot; their activation memory is one
    shared USER_MANAGED block, so graph mode takes no more device memory than plain enqueues."""
    spec = ExportSpec.load(toy)
    engines = _build(toy, tmp_path / "e")
    used = {}
    for graph_mode in (False, True):
        with open_backend("trt", engines, cuda_graph=graph_mode) as be:
            run_frames(be, spec, 3)
            used[graph_mode] = fake_gpu.dev.bytes_in_use
            report = be.memory_report()
    assert used[True] == used[False]
    assert report["execution_contexts"] == 4  # encoder, smpl_head, decoder x 2 slots
    assert report["activation_unshared_bytes"] > report["activation_shared_bytes"] > 0
    assert not [a for a in fake_gpu.dev.allocs.values() if a.alive and "context scratch" in a.tag]


def test_sidecars_report_activation_memory_of_both_run_modes(fake_gpu, toy, tmp_path):
    """Each engine's sidecar gives its activation memory per execution context and shared (one USER_MANAGED
    block), in enqueue mode and in CUDA-graph mode (a context per ping-pong slot); the backend's memory_report
    measures the same figures (fake TensorRT)."""
    from human3r_edge.runtime.backends.trt import EngineSidecar, engine_paths

    spec = ExportSpec.load(toy)
    engines = _build(toy, tmp_path / "e")
    act = {g.name: EngineSidecar.load(engine_paths(engines, g.name)[1]).activation for g in spec.graphs}
    for g in spec.graphs:
        a, per = act[g.name], act[g.name]["bytes_per_context"]
        assert per > 0 and a["enqueue_contexts"] == 1 and a["cuda_graph_contexts"] == (2 if g.state else 1)
        assert a["enqueue_per_context_bytes"] == a["enqueue_shared_bytes"] == a["cuda_graph_shared_bytes"] == per
        assert a["cuda_graph_per_context_bytes"] == a["cuda_graph_contexts"] * per
    assert act["decoder"]["cuda_graph_per_context_bytes"] == 2 * act["decoder"]["enqueue_per_context_bytes"]
    for graph_mode, mode in ((False, "enqueue"), (True, "cuda_graph")):
        with open_backend("trt", engines, cuda_graph=graph_mode) as be:
            run_frames(be, spec, 3)
            r = be.memory_report()
        assert r["activation_unshared_bytes"] == r["sidecar_per_context_bytes"] == \
            sum(a[f"{mode}_per_context_bytes"] for a in act.values())
        assert r["activation_shared_bytes"] == r["sidecar_shared_bytes"] == max(a[f"{mode}_shared_bytes"]
                                                                                for a in act.values())
