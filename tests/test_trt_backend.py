"""The native TensorRT backend, run through the strict CPU stand-in: the real runner code on toy engines."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from human3r_edge.runtime.backends import open_backend
from human3r_edge.runtime.backends.trt import EngineSidecar, TrtBackend
from human3r_edge.errors import BackendUnavailable, ConfigError, Human3RError
from human3r_edge.runtime.iospec import ExportSpec
from support.fake_gpu import ContractViolation, fake_gpu, install  # noqa: F401  (fixture)
from support.toy_export import run_frames, toy_feeds, write_toy_export

FRAMES = 12


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy_trt")
    write_toy_export(d)
    return d


@pytest.fixture(scope="module")
def reference(toy) -> list[dict[str, np.ndarray]]:
    with open_backend("ort-cpu", toy) as be:
        return run_frames(be, ExportSpec.load(toy), FRAMES)


def _build(toy: Path, out: Path, **kw) -> Path:
    from human3r_edge.export.trt_build import BuildOptions, build_engines

    build_engines(toy, out, BuildOptions(progress=False, **kw))
    return out


@pytest.fixture
def engines(fake_gpu, toy, tmp_path) -> Path:
    return _build(toy, tmp_path / "engines")


def _assert_equal_runs(got, ref):
    for f in range(len(ref)):
        assert set(got[f]) == set(ref[f])
        for k in ref[f]:
            np.testing.assert_array_equal(got[f][k], ref[f][k], err_msg=f"frame {f} {k}")


@pytest.mark.parametrize("cuda_graph", [False, True], ids=["enqueue", "cuda-graph"])
def test_trt_backend_equals_ort_cpu_over_many_frames(fake_gpu, engines, toy, reference, cuda_graph):
    spec = ExportSpec.load(engines)
    with open_backend("trt", engines, cuda_graph=cuda_graph) as be:
        assert isinstance(be, TrtBackend)
        got = run_frames(be, spec, FRAMES)
        if cuda_graph:
            # two graphs (one per ping-pong parity) for the decoder, one for each stateless graph
            assert {k: len(v) for k, v in be._slots.items()} == {"encoder": 1, "decoder": 2, "smpl_head": 1}
            assert all(s.graph_exec for slots in be._slots.values() for s in slots.values())
    _assert_equal_runs(got, reference)
    if cuda_graph:
        calls = fake_gpu.libcuda.calls
        assert calls.count("cuStreamBeginCapture_v2") == 4 and calls.count("cuGraphInstantiateWithFlags") == 4
        assert calls.count("cuGraphLaunch") == 3 * FRAMES - 4  # everything after each slot's warm-up run
        assert calls.count("cuGraphExecDestroy") == 4  # destroyed at deactivation
    assert fake_gpu.dev.bytes_in_use == 0  # every allocation freed at deactivation


def test_pingpong_address_bookkeeping(fake_gpu, engines):
    spec = ExportSpec.load(engines)
    with open_backend("trt", engines) as be:
        seen = []
        for f in range(9):
            feeds = toy_feeds(spec, f)
            be.run("encoder", feeds["encoder"], [])
            addrs = be.addresses("decoder")
            ins = {n: addrs[n] for n in ("state", "mem")}
            outs = {n: addrs[n] for n in ("state_out", "mem_out")}
            assert ins["state"] != outs["state_out"] and ins["mem"] != outs["mem_out"]
            assert not set(ins.values()) & set(addrs[t.name] for t in spec.graph("decoder").outputs)
            be.run("decoder", feeds["decoder"], [])
            # after the run, the buffer just written is what the next frame reads
            assert be.device_buffer("state") == outs["state_out"] == be.device_buffer("state_out")
            seen.append((ins["state"], outs["state_out"]))
        assert len({a for pair in seen for a in pair}) == 2  # exactly two buffers per state tensor
        assert all(seen[k][0] == seen[k + 1][1] for k in range(len(seen) - 1))  # they alternate
        # linked inputs are bound to the producer's output buffer: nothing crosses to the host
        assert be.addresses("decoder")["enc_tokens"] == be.addresses("encoder")["enc_tokens"]
        assert be.addresses("smpl_head")["human_tokens"] == be.device_buffer("human_tokens")


def test_reset_is_a_device_copy_and_restores_initial_state(fake_gpu, engines, reference):
    spec = ExportSpec.load(engines)
    init = np.load(engines / "initial_state.npz")
    with open_backend("trt", engines) as be:
        np.testing.assert_array_equal(be.read_state("state"), init["state"])
        run_frames(be, spec, 3)
        assert not np.array_equal(be.read_state("state"), init["state"])
        n_log = len(fake_gpu.dev.log)
        be.reset_state()
        assert [x for x in fake_gpu.dev.log[n_log:] if x.startswith("dtod")] == ["dtod 12800B", "dtod 12288B"]
        np.testing.assert_array_equal(be.read_state("state"), init["state"])
        np.testing.assert_array_equal(be.read_state("mem"), init["mem"])
        again = run_frames(be, spec, 2)
    _assert_equal_runs(again, reference[:2])


def test_only_requested_outputs_are_copied_back(fake_gpu, engines):
    spec = ExportSpec.load(engines)
    with open_backend("trt", engines) as be:
        feeds = toy_feeds(spec, 0)
        be.run("encoder", feeds["encoder"], [])
        n_log = len(fake_gpu.dev.log)
        out = be.run("decoder", feeds["decoder"], ["camera_pose"])
        assert list(out) == ["camera_pose"]
        dtoh = [x for x in fake_gpu.dev.log[n_log:] if x.startswith("dtoh")]
        assert dtoh == ["dtoh 28B"]  # 7 floats; the dense maps stayed on the device


def test_unknown_option_and_unknown_buffer(fake_gpu, engines):
    spec = ExportSpec.load(engines)
    with pytest.raises(ConfigError, match="unknown option"):
        TrtBackend(spec, engines, graphs=True)
    with open_backend("trt", engines) as be:
        with pytest.raises(Human3RError, match="unknown tensor"):
            be.device_buffer("nope")
        assert be.stream_handle != 0


# ------------------------------------------------------------------------------------------ refusals
def test_engine_dir_without_engine(fake_gpu, engines):
    (engines / "decoder.engine").unlink()
    with pytest.raises(Human3RError, match="no engine for graph decoder.*human3r-edge build"):
        open_backend("trt", engines).activate()
    assert fake_gpu.dev.bytes_in_use == 0 and fake_gpu.dev.context_depth == 0  # partial activation undone


def test_missing_sidecar(fake_gpu, engines):
    (engines / "encoder.engine.json").unlink()
    with pytest.raises(Human3RError, match="sidecar encoder.engine.json | missing"):
        open_backend("trt", engines).activate()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_or_truncated_engine_refused(fake_gpu, engines, damage):
    p = engines / "smpl_head.engine"
    data = bytearray(p.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 3:]
    p.write_bytes(bytes(data))
    with pytest.raises(Human3RError, match="corrupt or truncated.*rebuild"):
        open_backend("trt", engines).activate()


def test_deserialize_returning_none_is_refused(fake_gpu, engines):
    """A damaged plan whose sidecar was rewritten to match still fails: TensorRT returns None."""
    p = engines / "smpl_head.engine"
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    sc = json.loads((engines / "smpl_head.engine.json").read_text())
    import hashlib

    sc["engine_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (engines / "smpl_head.engine.json").write_text(json.dumps(sc))
    with pytest.raises(Human3RError, match="TensorRT refused to deserialize"):
        open_backend("trt", engines).activate()


def test_other_tensorrt_version_refused(fake_gpu, engines):
    fake_gpu.set_trt_version("10.3.1.5")
    with pytest.raises(Human3RError, match="another TensorRT version: 10.3.0.30.*rebuild"):
        open_backend("trt", engines).activate()


def test_other_gpu_refused(engines_other_gpu):
    engines, gpu = engines_other_gpu
    with pytest.raises(Human3RError, match="built for another GPU.*sm 8.7.*sm 8.6"):
        open_backend("trt", engines).activate()


@pytest.fixture
def engines_other_gpu(toy, tmp_path, monkeypatch):
    install(monkeypatch)  # build on the default fake (Orin, sm 8.7)
    out = _build(toy, tmp_path / "e")
    gpu = install(monkeypatch, gpu_name="Fake RTX (CPU stand-in)", cc=(8, 6))
    return out, gpu


def test_other_onnx_refused(fake_gpu, engines, toy, tmp_path):
    onnx_copy = tmp_path / "onnx_copy"
    shutil.copytree(toy, onnx_copy)
    import onnx

    m = onnx.load(str(onnx_copy / "decoder.onnx"))
    m.producer_version = "changed"
    onnx.save(m, str(onnx_copy / "decoder.onnx"))
    with pytest.raises(Human3RError, match="built from a different ONNX"):
        open_backend("trt", engines, onnx_dir=str(onnx_copy)).activate()
    with open_backend("trt", engines, onnx_dir=str(toy)):
        pass  # the original export is accepted


def test_export_json_of_another_export_refused(fake_gpu, engines):
    spec = json.loads((engines / "export.json").read_text())
    spec["graphs"][2]["outputs"][1]["shape"][2] = 11
    (engines / "export.json").write_text(json.dumps(spec))
    with pytest.raises(Human3RError, match="I/O differs from export.json"):
        open_backend("trt", engines).activate()


def test_sidecar_roundtrip(fake_gpu, engines):
    sc = EngineSidecar.load(engines / "decoder.engine.json")
    assert sc.tensorrt_version == fake_gpu.trt.__version__ and sc.compute_capability == "8.7"
    assert sc.gpu_name == fake_gpu.dev.name and sc.typing == "weak" and sc.precision == "fp16"
    assert "FP16" in sc.flags and "OBEY_PRECISION_CONSTRAINTS" in sc.flags
    assert sc.device_memory_bytes > 0 and len(sc.onnx_sha256) == 64 and sc.io["name"] == "decoder"
    assert sc.fp32_layers and all(r["reason"] for r in sc.fp32_layers)


# ------------------------------------------------------------------------------------------ contract breaches
def test_runner_checks_execute_return_value(fake_gpu, engines):
    """With violations reported TensorRT's way (False + log) the runner still raises, naming the engine."""
    spec = ExportSpec.load(engines)
    with open_backend("trt", engines) as be:
        fake_gpu.dev.raise_on_violation = False
        fresh = be._new_slot("encoder")
        fresh.bound = dict(be.addresses("encoder"))  # the runner believes the addresses are set; they are not
        be._slots["encoder"][()] = fresh
        with pytest.raises(Human3RError, match="execute_async_v3 failed"):
            be.run("encoder", toy_feeds(spec, 0)["encoder"])
        fake_gpu.dev.raise_on_violation = True
        assert any("has no address" in v for v in fake_gpu.take_violations())


def test_dropped_buffer_is_use_after_free(fake_gpu, engines):
    spec = ExportSpec.load(engines)
    with open_backend("trt", engines) as be:
        be._dev["det_scores"].free()  # as if the runner had lost its reference to a bound buffer
        with pytest.raises(ContractViolation, match="use after free"):
            be.run("encoder", toy_feeds(spec, 0)["encoder"])
        fake_gpu.take_violations()
        be._dev.pop("det_scores")


def test_without_stand_in_trt_is_unavailable(toy, tmp_path):
    """On this machine (tensorrt-stubs only, no GPU) the backend refuses cleanly."""
    out = tmp_path / "e"
    out.mkdir()
    shutil.copy(toy / "export.json", out / "export.json")
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        open_backend("trt", out).activate()


@pytest.mark.slow
def test_golden_replay_through_stand_in(fake_gpu, golden_dir, require_golden, tmp_path):
    """The real runner + pipeline on engines built from the golden's export, against the golden (fp32 tolerances)."""
    from human3r_edge.export.trt_build import BuildOptions, build_engines
    from human3r_edge.runtime.commands.compare import compare_dicts, format_report
    from human3r_edge.runtime.commands.run import export_cached
    from human3r_edge.runtime.commands.replay import replay_golden

    with np.load(golden_dir / "golden.npz", allow_pickle=False) as z:
        golden = {k: z[k] for k in z.files}
    h, w = golden["input/img"].shape[-2:]
    onnx_dir = export_cached(golden_dir / "checkpoint.pth", int(w), int(h), 16, tmp_path / "cache", lean=False)
    build_engines(onnx_dir, tmp_path / "engines", BuildOptions(precision="fp32", progress=False))
    for cuda_graph in (False, True):
        out = replay_golden(golden_dir, backend="trt", engines=tmp_path / "engines", preprocessed=True,
                            cuda_graph=cuda_graph)
        report = compare_dicts(out, golden)
        assert report.passed, "\n".join(format_report(report))
    # raw frames: preprocessed by the CUDA kernels straight into the encoder's input buffers (as `run` does)
    n_log = len(fake_gpu.dev.log)
    out = replay_golden(golden_dir, backend="trt", engines=tmp_path / "engines", preprocessed=False)
    report = compare_dicts(out, golden)
    assert report.passed, "\n".join(format_report(report))
    kernels = {op.split()[1] for op in fake_gpu.dev.log[n_log:] if op.startswith("kernel ")}
    assert {"pil_resize_h_kernel", "pil_resize_v_kernel", "bilinear_pad_kernel"} <= kernels
    assert any("skin" in k for k in kernels), kernels  # the SMPL-X skinning kernels too
    on_cpu = replay_golden(golden_dir, backend="trt", engines=tmp_path / "engines", preprocessed=False,
                           gpu_kernels=False)
    for k in ("step/camera_pose", "step/smpl_rotmat", "smplx/v3d_world"):
        np.testing.assert_allclose(out[k], on_cpu[k], rtol=0, atol=1e-5, err_msg=k)
