"""ONNX Runtime backends on the toy export: CPU sessions, the IOBinding ping-pong path, and clean GPU refusal."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from human3r_edge.runtime.backends import open_backend
from human3r_edge.runtime.backends.ort import OrtCpuBackend, OrtCudaBackend, OrtOptions, OrtTrtBackend, session_options
from human3r_edge.errors import BackendUnavailable, ConfigError, Human3RError
from human3r_edge.runtime.iospec import ExportSpec
from support.ort_cpu_bound import OrtCpuBoundBackend
from support.toy_export import run_frames, toy_feeds, write_toy_export

FRAMES = 7


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy_ort")
    write_toy_export(d)
    return d


def _manual_replay(toy: Path, frames: int) -> list[dict[str, np.ndarray]]:
    """Independent reference: raw onnxruntime sessions and a hand-written state loop."""
    import onnxruntime as ort

    spec = ExportSpec.load(toy)
    sess = {g.name: ort.InferenceSession(str(toy / g.file), providers=["CPUExecutionProvider"]) for g in spec.graphs}
    with np.load(toy / "initial_state.npz") as z:
        state = {k: z[k] for k in z.files}
    out = []
    for f in range(frames):
        feeds = toy_feeds(spec, f)
        row: dict[str, np.ndarray] = {}
        for g in spec.graphs:
            inputs = dict(feeds[g.name])
            for t in g.inputs:
                if t.name not in inputs:
                    inputs[t.name] = state[t.name] if t.name in state else row[t.name]
            names = [t.name for t in g.outputs]
            row.update(zip(names, sess[g.name].run(names, inputs)))
            for p in g.state:
                state[p.input] = row[p.output]
        out.append(row)
    return out


def test_cpu_backend_equals_manual_reference_over_frames(toy):
    spec = ExportSpec.load(toy)
    ref = _manual_replay(toy, FRAMES)
    with open_backend("ort-cpu", toy) as be:
        got = run_frames(be, spec, FRAMES)
    for f in range(FRAMES):
        assert set(got[f]) == set(ref[f])
        for k in ref[f]:
            np.testing.assert_array_equal(got[f][k], ref[f][k], err_msg=f"frame {f} {k}")
    # the recurrent state really evolves
    assert not np.allclose(got[0]["state_out"], got[FRAMES - 1]["state_out"])


def test_outputs_match_spec_dtypes_and_shapes(toy):
    spec = ExportSpec.load(toy)
    with OrtCpuBackend(spec, toy) as be:
        row = run_frames(be, spec, 1)[0]
    for g in spec.graphs:
        for t in g.outputs:
            assert row[t.name].shape == t.shape and row[t.name].dtype == t.np_dtype, t.name


def test_state_pingpong_read_and_reset(toy):
    spec = ExportSpec.load(toy)
    init = np.load(toy / "initial_state.npz")["state"]
    with OrtCpuBackend(spec, toy) as be:
        np.testing.assert_array_equal(be.read_state("state"), init)
        rows = run_frames(be, spec, 3, fetch={"decoder": ["state_out", "mem_out"]})
        np.testing.assert_array_equal(be.read_state("state"), rows[-1]["state_out"])
        np.testing.assert_array_equal(be.read_state("mem"), rows[-1]["mem_out"])
        first = rows[0]["state_out"]
        be.reset_state()
        np.testing.assert_array_equal(be.read_state("state"), init)
        again = run_frames(be, spec, 1, fetch={"decoder": ["state_out"]})[0]["state_out"]
        np.testing.assert_array_equal(again, first)
        # returned arrays are the caller's: scribbling on them does not touch the backend's state
        again[:] = 123.0
        assert not np.any(be.read_state("state") == 123.0)


def test_iobinding_backend_equals_plain_backend(toy):
    """The CUDA/TRT-EP code path (IOBinding, device OrtValues, ping-pong) run with OrtValues on the CPU."""
    spec = ExportSpec.load(toy)
    with OrtCpuBackend(spec, toy) as a:
        ref = run_frames(a, spec, FRAMES)
    with OrtCpuBoundBackend(spec, toy, strict_device=False) as b:
        got, written = [], []
        for f in range(FRAMES):
            before = b._state["state"].current.data_ptr()
            feeds = toy_feeds(spec, f)
            row: dict[str, np.ndarray] = {}
            for g in spec.graphs:
                row.update(b.run(g.name, feeds[g.name]))
            got.append(row)
            after = b._state["state"].current.data_ptr()
            assert before != after  # the output buffer was never the input buffer
            written.append(after)
        # frame 0 reads the initial value; from then on two buffers alternate
        assert len(set(written)) == 2 and all(a != b_ for a, b_ in zip(written, written[1:]))
        np.testing.assert_array_equal(b.read_state("state"), got[-1]["state_out"])
        b.reset_state()
        np.testing.assert_array_equal(b.read_state("state"), np.load(toy / "initial_state.npz")["state"])
    for f in range(FRAMES):
        for k in ref[f]:
            np.testing.assert_array_equal(got[f][k], ref[f][k], err_msg=f"frame {f} {k}")


def test_linked_input_needs_its_producer_first(toy):
    spec = ExportSpec.load(toy)
    with OrtCpuBackend(spec, toy) as be:
        with pytest.raises(Human3RError, match="linked input .* has no value yet"):
            be.run("decoder", toy_feeds(spec, 0)["decoder"])


def test_bad_feeds_are_refused_with_the_spec(toy):
    spec = ExportSpec.load(toy)
    feeds = toy_feeds(spec, 0)["encoder"]
    with OrtCpuBackend(spec, toy) as be:
        with pytest.raises(Human3RError, match=r"missing \['img_mhmr'\]"):
            be.run("encoder", {"img": feeds["img"]})
        with pytest.raises(Human3RError, match="incompatible shape"):
            be.run("encoder", {**feeds, "img": feeds["img"][:, :, :16]})
        with pytest.raises(Human3RError, match="incompatible dtype"):
            be.run("encoder", {**feeds, "img": feeds["img"].astype(np.float64)})
        with pytest.raises(Human3RError, match="cannot fetch unknown"):
            be.run("encoder", feeds, ["nope"])


def test_missing_onnx_and_mismatched_spec(toy, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(toy, d)
    (d / "smpl_head.onnx").unlink()
    with pytest.raises(Human3RError, match="ONNX file not found"):
        open_backend("ort-cpu", d).activate()
    shutil.copy(toy / "smpl_head.onnx", d / "smpl_head.onnx")
    spec = json.loads((d / "export.json").read_text())
    spec["graphs"][0]["outputs"][0]["shape"][1] += 1
    (d / "export.json").write_text(json.dumps(spec))
    with pytest.raises(Human3RError, match="does not match export.json"):
        open_backend("ort-cpu", d).activate()


def test_options_are_typed(toy):
    spec = ExportSpec.load(toy)
    with pytest.raises(ConfigError, match="unknown option"):
        OrtCpuBackend(spec, toy, threads=2)
    with pytest.raises(ConfigError, match="unknown level"):
        OrtCpuBackend(spec, toy, graph_opt_level="max")
    import onnxruntime as ort

    so = session_options(ort, OrtOptions(allow_spinning=False, intra_op_threads=1), strict=True)
    assert so.get_session_config_entry("session.disable_cpu_ep_fallback") == "1"
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.intra_op_num_threads == 1
    with OrtCpuBackend(spec, toy, intra_op_threads=1, allow_spinning=False, mem_arena=False,
                       graph_opt_level="basic") as be:
        assert run_frames(be, spec, 1)[0]["camera_pose"].shape == (1, 7)


def test_memory_and_order_options(toy):
    """The CPU memory options change how ORT runs, never what it computes."""
    import onnxruntime as ort

    spec = ExportSpec.load(toy)
    with pytest.raises(ConfigError, match="unknown order"):
        OrtCpuBackend(spec, toy, execution_order="fastest")
    so = session_options(ort, OrtOptions(execution_order="priority", prepacking=False, mem_pattern=False,
                                         config_entries=(("session.x_test", "7"),)), strict=False)
    assert so.execution_order == ort.ExecutionOrder.PRIORITY_BASED
    assert not so.enable_mem_pattern
    assert so.get_session_config_entry("session.disable_prepacking") == "1"
    assert so.get_session_config_entry("session.x_test") == "7"
    assert so.get_session_config_entry("session.use_env_allocators") == "1"  # the exact-size CPU arena
    assert session_options(ort, OrtOptions(), strict=False).execution_order == ort.ExecutionOrder.PRIORITY_BASED
    plain = session_options(ort, OrtOptions(execution_order="default", cpu_arena_exact=False), strict=False)
    assert plain.execution_order == ort.ExecutionOrder.DEFAULT
    with pytest.raises(RuntimeError):  # ORT raises for an entry that was never set
        plain.get_session_config_entry("session.use_env_allocators")
    with OrtCpuBackend(spec, toy) as be:
        assert not be.opts.mem_pattern  # the CPU backend's default
        tuned = run_frames(be, spec, 3)
    with OrtCpuBackend(spec, toy, execution_order="default", cpu_arena_exact=False, mem_pattern=True) as be:
        plain_rows = run_frames(be, spec, 3)
    for a, b in zip(tuned, plain_rows):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_trt_ep_options(toy):
    be = OrtTrtBackend(ExportSpec.load(toy), toy, fp16=True, trt_workspace_mb=512)
    o = be.trt_options()
    assert o["trt_fp16_enable"] == "1" and o["trt_layer_norm_fp32_fallback"] == "1"
    assert o["trt_engine_cache_enable"] == "1" and Path(o["trt_engine_cache_path"]).is_dir()
    assert o["trt_timing_cache_enable"] == "1" and o["trt_max_workspace_size"] == str(512 << 20)
    assert [p[0] for p in be.providers()] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]


def _gpu_backend_works(cls, toy) -> bool:
    try:
        cls(ExportSpec.load(toy), toy).activate().deactivate()
    except BackendUnavailable:
        return False
    return True


@pytest.mark.parametrize("cls", [OrtCudaBackend, OrtTrtBackend], ids=["ort-cuda", "ort-trt"])
def test_gpu_providers_refuse_cleanly_without_gpu(cls, toy):
    spec = ExportSpec.load(toy)
    try:
        cls(spec, toy).activate()
    except BackendUnavailable as exc:
        text = str(exc)
        assert cls.primary_provider in text and "Hint:" in text
        return
    pytest.skip(f"{cls.primary_provider} works on this machine: the refusal path cannot be shown here")


@pytest.mark.gpu
@pytest.mark.parametrize("cls", [OrtCudaBackend, OrtTrtBackend], ids=["ort-cuda", "ort-trt"])
def test_gpu_providers_match_cpu(cls, toy):
    if not _gpu_backend_works(cls, toy):
        pytest.skip(f"{cls.primary_provider} is not usable here (no GPU or no CUDA/TensorRT libraries)")
    spec = ExportSpec.load(toy)
    with OrtCpuBackend(spec, toy) as a:
        ref = run_frames(a, spec, FRAMES)
    with cls(spec, toy, fp16=False) as b:
        got = run_frames(b, spec, FRAMES)
    for f in range(FRAMES):
        for k in ref[f]:
            scale = float(np.abs(ref[f][k]).max()) or 1.0
            assert float(np.abs(got[f][k] - ref[f][k]).max()) <= 1e-4 * scale, (f, k)
