"""Multi-stream exports (issue #16) on native TensorRT, through the strict CPU stand-in (tests/support/fake_gpu).

The runner: engines built with one optimization profile (axis 0: 1 / M / M), an execution context (and with CUDA
graphs a graph) per batch size B, state rows gathered and scattered by device-to-device copies; rows equal the
single-stream export's runs, absent rows stay bit-identical. `build --streams M` and the sidecar's `streams`.
The stand-in's dynamic-shape rules (TensorRT 10): each is shown to catch a deliberately wrong use.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from human3r_edge.errors import ConfigError, Human3RError
from human3r_edge.runtime.backends import open_backend
from human3r_edge.runtime.backends.trt import TrtBackend, engine_paths
from human3r_edge.runtime.iospec import ExportSpec
from support.fake_gpu import ContractViolation, fake_gpu  # noqa: F401  (fixture)
from support.streams_check import (SCHEDULE, STATE, check_reset_rows, drive_schedule, frames_per_stream, run_batch,
                                   single_reference, write_pair)

N = 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("trt_streams"), N)


@pytest.fixture(scope="module")
def reference(pair) -> dict:
    return single_reference(lambda d: open_backend("ort-cpu", d), pair[0], N, max(frames_per_stream(SCHEDULE, N)))


def _build(src: Path, out: Path, **kw) -> Path:
    from human3r_edge.export.trt_build import BuildOptions, build_engines

    build_engines(src, out, BuildOptions(progress=False, precision="fp32", **kw))
    return out


def _initial(d: Path) -> dict[str, np.ndarray]:
    with np.load(d / "initial_state.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("cuda_graph", [False, True], ids=["enqueue", "cuda-graph"])
def test_trt_rows_match_single_stream(fake_gpu, pair, reference, tmp_path, cuda_graph):
    engines = _build(pair[1], tmp_path / "e")
    spec = ExportSpec.load(engines)
    with open_backend("trt", engines, cuda_graph=cuda_graph) as be:
        assert isinstance(be, TrtBackend) and be.streams == N
        assert {g: sc.streams for g, sc in be.sidecars.items()} == {g.name: N for g in spec.graphs}
        identical = drive_schedule(be, spec, reference)
        assert identical == 2 * sum(N - len(b) for b in SCHEDULE)
        # one execution context per (graph, batch size), whatever the slots
        sizes = {len(b) for b in SCHEDULE}
        assert {g: sorted(k[1] for k in v) for g, v in be._slots.items()} == {g.name: sorted(sizes) for g in spec.graphs}
        if cuda_graph:
            assert all(s.graph_exec for v in be._slots.values() for s in v.values())
        check_reset_rows(be, spec, reference, _initial(pair[1]))
    if cuda_graph:
        calls = fake_gpu.libcuda.calls
        n_ctx = 3 * len({len(b) for b in SCHEDULE})
        assert calls.count("cuGraphInstantiateWithFlags") == n_ctx and calls.count("cuGraphLaunch") > 0
    assert fake_gpu.dev.bytes_in_use == 0  # every allocation (rows, batch buffers, initial rows) freed


def test_build_streams_m_below_n(fake_gpu, pair, reference, tmp_path):
    """`build --streams 2` on a 3-stream export: profile 1..2, sidecar streams 2, a backend of 2 slots."""
    engines = _build(pair[1], tmp_path / "e", streams=2)
    for g in ExportSpec.load(engines).graphs:
        sc = json.loads(engine_paths(engines, g.name)[1].read_text())
        assert sc["streams"] == 2
    hdr = fake_gpu.state["builds"][-1]
    assert {tuple(map(tuple, t["profile"]))[0][0] for t in hdr["io"] if "profile" in t} == {1}
    assert {tuple(map(tuple, t["profile"]))[2][0] for t in hdr["io"] if "profile" in t} == {2}
    spec = ExportSpec.load(engines)
    with open_backend("trt", engines) as be:
        assert be.streams == 2 and be.read_state("state").shape[0] == 2
        with pytest.raises(Human3RError, match="distinct stream slots"):
            run_batch(be, spec, [0, 1, 2], [0, 0, 0])
        out = run_batch(be, spec, [1, 0], [0, 0])
        assert out["camera_pose"].shape[0] == 2


def test_build_streams_errors(fake_gpu, pair, tmp_path):
    from human3r_edge.export import trt_build

    with pytest.raises(Human3RError, match="more streams than the export batches"):
        _build(pair[1], tmp_path / "a", streams=N + 1)
    with pytest.raises(Human3RError, match="single-stream export"):
        _build(pair[0], tmp_path / "b", streams=2)
    with pytest.raises(ConfigError, match="--streams"):
        trt_build.BuildOptions(streams=0)
    assert "builds" not in fake_gpu.state  # every refusal came before TensorRT built anything
    p = __import__("argparse").ArgumentParser()
    trt_build.add_arguments(p)
    assert p.parse_args(["--onnx-dir", "x", "--out", "y", "--streams", "2"]).streams == 2


def test_runtime_refuses_engines_of_other_streams(fake_gpu, pair, tmp_path):
    engines = _build(pair[1], tmp_path / "e")
    path = engine_paths(engines, "decoder")[1]
    d = json.loads(path.read_text())
    d["streams"] = 2  # one engine claims another M than the others
    path.write_text(json.dumps(d))
    with pytest.raises(Human3RError, match="another number of streams"):
        open_backend("trt", engines).activate()
    assert fake_gpu.dev.bytes_in_use == 0


def test_single_stream_engines_unchanged(fake_gpu, pair, tmp_path):
    engines = _build(pair[0], tmp_path / "e")
    with open_backend("trt", engines) as be:
        assert be.streams == 1 and all(sc.streams == 1 for sc in be.sidecars.values())
        assert be.read_state("state").shape[0] == 1


# ------------------------------------------------------------------------------------------ the stand-in's rules
@pytest.fixture
def dyn_engine(fake_gpu, pair):
    """The toy 3-stream smpl_head engine built straight through the (fake) TensorRT API, profile 1 / 3 / 3."""
    trt = fake_gpu.trt
    logger = trt.Logger()
    builder = trt.Builder(logger)
    net = builder.create_network(0)
    assert trt.OnnxParser(net, logger).parse_from_file(str(pair[1] / "smpl_head.onnx"))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for i in range(net.num_inputs):
        t = net.get_input(i)
        rest = tuple(t.shape[1:])
        profile.set_shape(t.name, (1, *rest), (N, *rest), (N, *rest))
    assert config.add_optimization_profile(profile) == 0
    eng = trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(net, config))
    return eng, ExportSpec.load(pair[1]).graph("smpl_head")


def test_dynamic_network_without_profile_does_not_build(fake_gpu, pair, capsys):
    trt = fake_gpu.trt
    logger = trt.Logger()
    builder = trt.Builder(logger)
    net = builder.create_network(0)
    assert trt.OnnxParser(net, logger).parse_from_file(str(pair[1] / "smpl_head.onnx"))
    assert builder.build_serialized_network(net, builder.create_builder_config()) is None
    assert "no optimization profile" in capsys.readouterr().err


def test_profile_checks(fake_gpu, pair, capsys):
    trt = fake_gpu.trt
    logger = trt.Logger()
    builder = trt.Builder(logger)
    profile = builder.create_optimization_profile()
    with pytest.raises(RuntimeError, match="max"):
        profile.set_shape("human_tokens", (1, 4, 64), (3, 4, 64), (2, 4, 64))  # opt > max
    with pytest.raises(RuntimeError, match="inconsistent"):
        profile.set_shape("human_tokens", (1, 4), (3, 4, 64), (3, 4, 64))  # ranks differ
    net = builder.create_network(0)
    assert trt.OnnxParser(net, logger).parse_from_file(str(pair[1] / "smpl_head.onnx"))
    config = builder.create_builder_config()
    bad = builder.create_optimization_profile()
    for i in range(net.num_inputs):
        t = net.get_input(i)
        bad.set_shape(t.name, (1, 5, *t.shape[2:]), (N, 5, *t.shape[2:]), (N, 5, *t.shape[2:]))  # K is 4, not 5
    config.add_optimization_profile(bad)
    assert builder.build_serialized_network(net, config) is None
    assert "inconsistent with the network input" in capsys.readouterr().err


def test_dynamic_shapes_at_run_time(fake_gpu, dyn_engine, capsys):
    eng, g = dyn_engine
    name = g.inputs[0].name
    assert tuple(eng.get_tensor_shape(name))[0] == -1  # TensorRT reports -1 on the dynamic dim
    assert [tuple(p) for p in eng.get_tensor_profile_shape(name, 0)] == \
        [(1, *g.inputs[0].shape[1:]), g.inputs[0].shape, g.inputs[0].shape]
    fake_gpu.push_primary()
    ctx = eng.create_execution_context()
    assert not ctx.set_input_shape(name, (N + 1, *g.inputs[0].shape[1:]))  # outside the profile: False
    assert "outside the profile" in capsys.readouterr().err
    out = g.outputs[0]
    assert tuple(ctx.get_tensor_shape(out.name))[0] == -1  # unresolved while an input shape is missing
    for t in g.inputs:
        assert ctx.set_input_shape(t.name, t.shape_for(2))
    assert tuple(ctx.get_tensor_shape(name)) == g.inputs[0].shape_for(2)
    assert tuple(ctx.get_tensor_shape(out.name)) == out.shape_for(2)


def _bind(fake_gpu, ctx, g, rows=N, small=None):
    cuda = fake_gpu.cuda
    bufs = {}
    for t in (*g.inputs, *g.outputs):
        nb = t.nbytes // t.shape[0] * (1 if t.name == small else rows)
        bufs[t.name] = cuda.mem_alloc(nb)
        assert ctx.set_tensor_address(t.name, int(bufs[t.name]))
    return bufs


def test_enqueue_without_input_shapes_is_caught(fake_gpu, dyn_engine):
    eng, g = dyn_engine
    fake_gpu.push_primary()
    ctx = eng.create_execution_context()
    bufs = _bind(fake_gpu, ctx, g)  # noqa: F841  (keeps them alive)
    with pytest.raises(ContractViolation, match="has no shape"):
        ctx.execute_async_v3(fake_gpu.cuda.Stream().handle)
    assert len(fake_gpu.take_violations()) == 1


def test_buffer_smaller_than_the_set_shape_is_caught(fake_gpu, dyn_engine):
    eng, g = dyn_engine
    fake_gpu.push_primary()
    ctx = eng.create_execution_context()
    for t in g.inputs:
        assert ctx.set_input_shape(t.name, t.shape_for(2))
    bufs = _bind(fake_gpu, ctx, g, small=g.outputs[0].name)  # noqa: F841  one row for a batch of 2
    fake_gpu.dev.raise_on_violation = False
    ctx.execute_async_v3(fake_gpu.cuda.Stream().handle)
    found = fake_gpu.take_violations()
    assert any("needs at least" in v and g.outputs[0].name in v for v in found), found


def test_graph_replayed_after_a_shape_change_is_caught(fake_gpu, dyn_engine):
    """A CUDA graph captured at B=2 replays B=2 kernels: replaying it after set_input_shape(B=1) is a bug."""
    from human3r_edge.runtime.cuda_util import CudaGraphs

    eng, g = dyn_engine
    fake_gpu.push_primary()
    cuda = fake_gpu.cuda
    ctx = eng.create_execution_context()
    for t in g.inputs:
        assert ctx.set_input_shape(t.name, t.shape_for(2))
    bufs = _bind(fake_gpu, ctx, g)  # noqa: F841
    stream = cuda.Stream()
    for t in g.inputs:  # defined inputs (fresh device memory is NaN)
        host = cuda.pagelocked_empty(t.shape, t.np_dtype)
        host[:] = 0.5
        cuda.memcpy_htod_async(bufs[t.name], host, stream)
    assert ctx.execute_async_v3(stream.handle)  # warm-up
    stream.synchronize()
    graphs = CudaGraphs()
    graphs.begin_capture(int(stream.handle))
    assert ctx.execute_async_v3(stream.handle)
    exe = graphs.instantiate(graphs.end_capture(int(stream.handle)))
    graphs.launch(exe, int(stream.handle))  # same shapes: fine
    stream.synchronize()
    assert not fake_gpu.dev.violations
    for t in g.inputs:
        assert ctx.set_input_shape(t.name, t.shape_for(1))
    with pytest.raises(ContractViolation, match="replayed after set_input_shape"):
        graphs.launch(exe, int(stream.handle))
    assert len(fake_gpu.take_violations()) == 1
    graphs.destroy(0, exe)
    stream.synchronize()


# ------------------------------------------------------------------------------------------ the real exporter
@pytest.fixture(scope="module")
def real_pair(tmp_path_factory):
    """Exported before the stand-in is installed (the exporter probes the real tensorrt module's spec)."""
    from support.ci import require
    from support.goldens import goldens_root
    from support.streams_check import golden_stream_pair

    d = goldens_root() / "tiny_a"
    require((d / "checkpoint.pth").is_file(), f"golden tiny_a not found under {goldens_root()}",
            "CI=true: goldens are required")
    return golden_stream_pair(tmp_path_factory, d, N)


def test_real_tiny_a_export_on_trt(real_pair, fake_gpu, tmp_path):
    """`export --streams 3` of the tiny_a checkpoint, built (fake TensorRT) and run on the trt backend with and
    without CUDA graphs: rows equal the single-stream export's ort-cpu runs, absent rows bit-identical."""
    one, many = real_pair
    schedule = [[2, 0], [1], [0, 1, 2]]
    ref = single_reference(lambda p: open_backend("ort-cpu", p), one, N, max(frames_per_stream(schedule, N)))
    engines = _build(many, tmp_path / "e")
    spec = ExportSpec.load(engines)
    for cuda_graph in (False, True):
        with open_backend("trt", engines, cuda_graph=cuda_graph) as be:
            assert drive_schedule(be, spec, ref, schedule) == 2 * sum(N - len(b) for b in schedule)
    assert fake_gpu.dev.bytes_in_use == 0
