"""The `tensorrt` flavour of the Triton repository (runtime/triton/tensorrt_flavor.py, bls_model.py), without a GPU.

No TensorRT and no Triton TensorRT backend here, so the engines are fake `.plan` files and nothing loads them:
* every config.pbtxt is parsed with Triton's ModelConfig protobuf (tritonclient) and checked against export.json,
  for a tiny real export and for the 672S `export --lean --fp16` specs (single- and multi-stream);
* deliberately broken configs (dims, dtypes, state-name order / prefixes, growable state, control inputs) fail;
* the BLS model runs against a stand-in for Triton (`FakeTriton`: the repository's configs enforced on every request,
  implicit state per correlation id loaded from the repository's initial_state/*.bin on START, the graphs run by
  ONNX Runtime on the CPU) and gives a local ort-cpu Session's results.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from support.ci import require
from support.exports import random_tiny_export

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.config import get_config
from human3r_edge.runtime.graphs import LEAN_DROPPED, graph_specs
from human3r_edge.runtime.iospec import ExportSpec


def _pb2_ok() -> bool:
    try:
        from human3r_edge.runtime.triton.tensorrt_flavor import model_config_pb2

        model_config_pb2()
        return True
    except Exception:
        return False


@pytest.fixture(scope="module", autouse=True)
def _needs_tritonclient() -> None:
    require(_pb2_ok(), "tritonclient (Triton's model_config_pb2) is not installed: pip install 'tritonclient[http]'")


def _fake_engines(spec: ExportSpec, d: Path) -> None:
    for g in spec.graphs:  # no TensorRT here: stand-in plan files (nothing loads them in these tests)
        (d / f"{g.name}.engine").write_bytes(b"not a real TensorRT plan: " + g.name.encode())


def _spec_672s(streams: int) -> ExportSpec:
    """The I/O spec `human3r-edge export --config 672S --resolution 512x288 --lean --fp16 [--streams N]` writes."""
    cfg = get_config("672S")
    gs = graph_specs(cfg, 512, 288, 16, lean=True, streams=streams)
    gs = tuple(dataclasses.replace(g, fp16_file=g.file.replace(".onnx", ".fp16.onnx")) for g in gs)
    return ExportSpec(graphs=gs, config=cfg.to_dict(), resolution=(512, 288), max_people=16, opset=17,
                      checkpoint_sha256=None, lean=True, dropped_outputs=LEAN_DROPPED, streams=streams)


@pytest.fixture(scope="module", params=[1, 4], ids=["672S-lean-fp16", "672S-lean-fp16-streams4"])
def repo_672s(request, tmp_path_factory) -> tuple[Path, ExportSpec, Path]:
    from human3r_edge.runtime.triton.tensorrt_flavor import write_tensorrt_repo

    spec = _spec_672s(request.param)
    d = tmp_path_factory.mktemp(f"engines_672s_{request.param}")
    spec.save(d)
    dec = spec.graph("decoder")
    rng = np.random.default_rng(0)
    np.savez(d / "initial_state.npz", **{p.input: rng.standard_normal((1,) + dec.input(p.input).shape[1:])
                                         .astype(np.float32) for p in dec.state})
    _fake_engines(spec, d)
    return write_tensorrt_repo(d, tmp_path_factory.mktemp("repo_672s"), max_sequences=8, instances=2), spec, d


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    return random_tiny_export(tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_repo(tiny_export, tmp_path_factory) -> Path:
    from human3r_edge.runtime.triton.tensorrt_flavor import write_tensorrt_repo

    engines = tmp_path_factory.mktemp("tiny_engines")
    for f in ("export.json", "initial_state.npz"):
        shutil.copy2(tiny_export / f, engines / f)
    _fake_engines(ExportSpec.load(engines), engines)
    return write_tensorrt_repo(engines, tmp_path_factory.mktemp("tiny_repo"), max_sequences=4)


# ------------------------------------------------------------------------------------------ generation
def test_672s_repo_parses_and_matches_export(repo_672s):
    from human3r_edge.runtime.triton.tensorrt_flavor import TRT_MODELS, parse_config, validate_repo

    repo, spec, src = repo_672s
    validate_repo(repo, spec)
    n = spec.streams
    enc = parse_config(repo / TRT_MODELS["encoder"] / "config.pbtxt")
    dec = parse_config(repo / TRT_MODELS["decoder"] / "config.pbtxt")
    head = parse_config(repo / TRT_MODELS["smpl_head"] / "config.pbtxt")
    assert enc.platform == dec.platform == head.platform == "tensorrt_plan"
    if n == 1:  # static batch-1 engines: max_batch_size 0, full dims, no dynamic batching
        assert enc.max_batch_size == 0 and list(enc.input[0].dims) == [1, 3, 288, 512]
        assert enc.WhichOneof("scheduling_choice") is None
        states = {s.input_name: list(s.dims) for s in dec.sequence_batching.state}
        assert states == {"state": [1, 768, 768], "mem": [1, 256, 1536]}
    else:  # axis 0 dynamic 1..N: max_batch_size N, dims without it, dynamic batching
        assert enc.max_batch_size == n and list(enc.input[0].dims) == [3, 288, 512]
        assert list(enc.dynamic_batching.preferred_batch_size) == [n]
        states = {s.input_name: list(s.dims) for s in dec.sequence_batching.state}
        assert states == {"state": [768, 768], "mem": [256, 1536]}
        ttt3r = next(i for i in dec.input if i.name == "ttt3r")
        assert list(ttt3r.dims) == [1] and list(ttt3r.reshape.shape) == [] and ttt3r.HasField("reshape")
    assert {s.output_name for s in dec.sequence_batching.state} == {"state_out", "mem_out"}
    assert not {o.name for o in dec.output} & {"state_out", "mem_out", "pts3d_other", "rgb"}  # lean, state hidden
    assert {i.name for i in dec.input} == {"enc_tokens", "dino_tokens", "human_cell", "human_patch", "human_valid",
                                           "first", "ttt3r"}
    assert dec.sequence_batching.WhichOneof("strategy_choice") == "oldest"
    assert dec.sequence_batching.oldest.max_candidate_sequences == 4  # 8 sequences over 2 instances
    for s in dec.sequence_batching.state:
        init = s.initial_state[0]
        assert init.WhichOneof("state_data") == "data_file" and init.name
        raw = (repo / TRT_MODELS["decoder"] / "initial_state" / init.data_file).read_bytes()
        assert len(raw) == 4 * int(np.prod(list(s.dims)))
    with np.load(src / "initial_state.npz") as z:
        got = np.frombuffer((repo / TRT_MODELS["decoder"] / "initial_state" / "mem.bin").read_bytes(), np.float32)
        np.testing.assert_array_equal(got, z["mem"].reshape(-1))  # raw row-major bytes of initial_state.npz
    for model in TRT_MODELS.values():
        assert (repo / model / "1" / "model.plan").is_file()
    readme = (repo / "README.md").read_text()
    assert "UNTESTED ON A GPU" in readme
    meta = json.loads((repo / "human3r" / "1" / "repo.json").read_text())
    assert meta["flavor"] == "tensorrt" and meta["gpu_tested"] is False
    assert (meta["width"], meta["height"]) == (512, 288)


def test_onnx_export_source_writes_configs_without_engines(tiny_export, tmp_path):
    from human3r_edge.runtime.triton.tensorrt_flavor import validate_repo, write_tensorrt_repo

    repo = write_tensorrt_repo(tiny_export, tmp_path / "repo")
    spec = ExportSpec.load(tiny_export)
    validate_repo(repo, spec, require_engines=False)
    assert (repo / "human3r_decoder" / "1" / "ENGINE_MISSING.txt").is_file()
    with pytest.raises(Human3RError, match="engine missing"):
        validate_repo(repo, spec)


# ------------------------------------------------------------------------------------------ broken configs
def _broken(repo: Path, tmp_path: Path, model: str, edit) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(repo, bad)
    p = bad / model / "config.pbtxt"
    text = p.read_text()
    new = edit(text)
    assert new != text, "the edit must change the config"
    p.write_text(new)
    return bad


BROKEN = {
    "wrong-dims": ("human3r_encoder", lambda t: t.replace("288, 512 ]", "288, 511 ]", 1), "wrong dims"),
    "wrong-dtype": ("human3r_decoder", lambda t: t.replace('"human_cell" data_type: TYPE_INT32',
                                                           '"human_cell" data_type: TYPE_INT64'), "wrong data_type"),
    "state-dims": ("human3r_decoder", lambda t: t.replace("768, 768 ]", "768, 767 ]", 1), "wrong dims"),
    "missing-output": ("human3r_smpl_head", lambda t: re.sub(r',\n  \{ name: "smpl_transl"[^\n]*', "", t),
                       "output names differ"),
    "growable": ("human3r_decoder", lambda t: t.replace('output_name: "mem_out"',
                                                        'output_name: "mem_out"\n      use_growable_memory: true'),
                 "growable"),
    "control-input": ("human3r_decoder", lambda t: t.replace(
        "  state [", '  control_input [ { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID '
                     "data_type: TYPE_UINT64 } ] } ]\n  state ["), "control inputs"),
    "batching": ("human3r_encoder", lambda t: t.replace("max_batch_size: 0", "max_batch_size: 8"),
                 "wrong max_batch_size"),
    "not-protobuf": ("human3r_decoder", lambda t: t.replace("sequence_batching {", "sequence_batching {{"),
                     "not a valid Triton model configuration"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_config_fails_validation(case, repo_672s, tmp_path):
    from human3r_edge.runtime.triton.tensorrt_flavor import validate_repo

    repo, spec, _ = repo_672s
    model, edit, problem = BROKEN[case]
    if case == "batching" and spec.streams > 1:
        edit = lambda t: t.replace(f"max_batch_size: {spec.streams}", "max_batch_size: 0")  # noqa: E731
    with pytest.raises(Human3RError, match=problem):
        validate_repo(_broken(repo, tmp_path, model, edit), spec)


def test_state_names_triton_would_swap_fail(repo_672s, tmp_path):
    """server#8586: Triton pairs states by rank in name order. A rename that breaks the order (or leaves a prefix
    across pairs) must fail, with the config still consistent otherwise."""
    from human3r_edge.runtime.triton.tensorrt_flavor import check_state_names, validate_repo

    check_state_names([("state", "state_out"), ("mem", "mem_out")])  # ours: same order, prefix only within a pair
    with pytest.raises(Human3RError, match="swap"):  # the case: cache < cache_len but cache_len_next < ...
        check_state_names([("cache", "cache_next"), ("cache_len", "cache_len_next")])
    with pytest.raises(Human3RError, match="prefix"):  # same order today, but a prefix across pairs
        check_state_names([("a", "a_out"), ("ab", "ab_out")])
    repo, spec, _ = repo_672s
    bad = _broken(repo, tmp_path, "human3r_decoder", lambda t: t.replace('output_name: "mem_out"',
                                                                         'output_name: "z_mem_out"'))
    with pytest.raises(Human3RError, match="implicit state pairs differ|swap"):
        validate_repo(bad, spec)


def test_bad_arguments_are_clear(tiny_export, tmp_path):
    from human3r_edge.runtime.triton.tensorrt_flavor import write_tensorrt_repo

    with pytest.raises(Human3RError, match="max-sequences"):
        write_tensorrt_repo(tiny_export, tmp_path / "r", max_sequences=0)
    with pytest.raises(Human3RError, match="missing I/O spec"):
        write_tensorrt_repo(tmp_path, tmp_path / "r")


def test_multi_stream_view_is_the_single_stream_spec():
    """A Session inside the BLS model sees single-stream shapes; each request is a batch of 1 of the served dims."""
    from human3r_edge.runtime.triton.bls_model import request_shape, single_stream_view

    multi, single = _spec_672s(4), _spec_672s(1)
    view = single_stream_view(multi)
    assert view.streams == 1
    for g, h in zip(view.graphs, single.graphs):
        assert [(t.name, t.dtype, t.shape) for t in g.inputs + g.outputs] == \
            [(t.name, t.dtype, t.shape) for t in h.inputs + h.outputs]
    for g, h in zip(multi.graphs, single.graphs):
        for t, u in zip(g.inputs + g.outputs, h.inputs + h.outputs):
            assert request_shape(u, single) == u.shape  # max_batch_size 0: the full dims
            assert request_shape(t, multi)[0] == 1 and np.prod(request_shape(t, multi)) == np.prod(u.shape)


# ------------------------------------------------------------------------------------------ the BLS model
class _Tensor:
    def __init__(self, name: str, arr: np.ndarray) -> None:
        self._name, self._arr = name, np.asarray(arr)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._arr

    def is_cpu(self) -> bool:
        return True


class _Error:
    def __init__(self, m: str) -> None:
        self._m = m

    def message(self) -> str:
        return self._m


class _Response:
    def __init__(self, output_tensors=(), error=None) -> None:
        self.tensors = {t.name(): t for t in output_tensors}
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> Any:
        return self._error

    def output_tensors(self) -> list:
        return list(self.tensors.values())


class FakeTriton:
    """What Triton would do with the repository, for the BLS model's requests: every request is checked against the
    parsed config (input names, dims with max_batch_size 0, requested outputs), the decoder's implicit state is kept
    per correlation id and loaded from initial_state/<data_file> on START (so the files are what is tested), a
    request without START on an unknown id is refused, END frees the state. Graphs run on ONNX Runtime (CPU)."""

    TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
    TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
    TRITONSERVER_MEMORY_CPU = 0

    def __init__(self, repo: Path, export_dir: Path) -> None:
        import onnxruntime as ort

        from human3r_edge.runtime.backends.ort import OrtOptions, session_options
        from human3r_edge.runtime.triton.tensorrt_flavor import TRT_MODELS, parse_config

        spec = ExportSpec.load(export_dir)
        so = session_options(ort, OrtOptions(mem_pattern=False), strict=False)
        self.configs = {m: parse_config(repo / m / "config.pbtxt") for m in TRT_MODELS.values()}
        self.sessions = {m: ort.InferenceSession(str(export_dir / spec.graph(g).file), sess_options=so,
                                                 providers=["CPUExecutionProvider"]) for g, m in TRT_MODELS.items()}
        self.repo = repo
        self.states: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self.log: list[tuple[str, int, int]] = []

    # pb_utils API
    Tensor = _Tensor
    InferenceResponse = _Response
    TritonError = _Error

    class PreferredMemory:
        def __init__(self, kind: int, device: int) -> None:
            self.kind = kind

    @staticmethod
    def get_input_tensor_by_name(request: Any, name: str) -> Any:
        return request.inputs.get(name)

    @staticmethod
    def get_output_tensor_by_name(response: Any, name: str) -> Any:
        return response.tensors.get(name)

    def InferenceRequest(self, model_name: str, inputs: list, requested_output_names: list, correlation_id: int = 0,
                         flags: int = 0, timeout: int = 0, preferred_memory: Any = None) -> Any:
        server = self

        class _Req:
            def exec(self) -> _Response:
                try:
                    return server.infer(model_name, inputs, requested_output_names, correlation_id, flags)
                except AssertionError as exc:
                    return _Response(error=_Error(str(exc)))
        return _Req()

    def infer(self, model: str, inputs: list, wanted: list, corrid: int, flags: int) -> _Response:
        from human3r_edge.runtime.triton.tensorrt_flavor import model_config_pb2

        pb2 = model_config_pb2()
        c = self.configs[model]
        assert c.max_batch_size == 0, "the fake serves single-stream repositories only"
        feeds = {t.name(): t.as_numpy() for t in inputs}
        assert sorted(feeds) == sorted(i.name for i in c.input), f"{model}: inputs {sorted(feeds)}"
        for i in c.input:
            assert tuple(feeds[i.name].shape) == tuple(i.dims), f"{model}.{i.name}: {feeds[i.name].shape} {i.dims}"
            assert pb2.DataType.Name(i.data_type) == "TYPE_" + {"float32": "FP32", "int32": "INT32"}[
                str(feeds[i.name].dtype)]
        assert set(wanted) <= {o.name for o in c.output}, f"{model}: cannot request {wanted}"
        self.log.append((model, corrid, flags))
        sb = c.sequence_batching if c.WhichOneof("scheduling_choice") == "sequence_batching" else None
        key = (model, corrid)
        if sb is not None:
            if flags & self.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START:
                self.states[key] = {}
                for s in sb.state:
                    init = s.initial_state[0]
                    raw = (self.repo / model / "initial_state" / init.data_file).read_bytes()
                    self.states[key][s.input_name] = np.frombuffer(raw, np.float32).reshape(tuple(init.dims))
            assert key in self.states, f"sequence {corrid} must specify the START flag"
            feeds.update(self.states[key])
        names = [o.name for o in self.sessions[model].get_outputs()]
        outs = dict(zip(names, self.sessions[model].run(names, feeds)))
        if sb is not None:
            for s in sb.state:
                self.states[key][s.input_name] = outs[s.output_name]
            if flags & self.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END:
                del self.states[key]
        return _Response([_Tensor(n, outs[n]) for n in wanted])


def _frames(n: int, w: int = 128, h: int = 96) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [np.roll(base, 7 * i, axis=1) for i in range(n)]


def _compare(a: Any, b: Any) -> None:
    assert a.track_ids == b.track_ids and a.segment == b.segment
    for x, y in ((a.c2w, b.c2w), (a.intrinsics, b.intrinsics)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * (1 + float(np.abs(y).max())))
    for p, q in zip(a.people, b.people):
        np.testing.assert_allclose(p.rotmat, q.rotmat, atol=1e-5)
        np.testing.assert_allclose(p.transl, q.transl, atol=1e-5 * (1 + float(np.abs(q.transl).max())))


def test_bls_backend_matches_local_session_with_resets(tiny_repo, tiny_export):
    """Session + FramePipeline over TritonBlsBackend (decoder state in the fake Triton, loaded from the repository's
    initial_state files on START) equals a local ort-cpu Session, reset_interval resets included."""
    from human3r_edge.runtime.pipeline import PipelineOptions
    from human3r_edge.runtime.session import Session, SessionOptions
    from human3r_edge.runtime.triton.bls_model import TritonBlsBackend

    fake = FakeTriton(tiny_repo, tiny_export)
    spec = ExportSpec.load(tiny_repo / "human3r" / "1" / "export")
    opts = SessionOptions(preprocessing="cpu", pipeline=PipelineOptions(reset_interval=2))
    frames = _frames(5)
    with Session(TritonBlsBackend(fake, spec, corrid=77), None, opts) as bls, \
            Session.open(tiny_export, "ort-cpu", None, opts) as local:
        for f in frames:
            _compare(bls.step(f), local.step(f))
    dec = [(cid, fl) for m, cid, fl in fake.log if m == "human3r_decoder"]
    # frames f0..f4 with resets after f1 and f3 (each followed by a duplicate view with START); END at close:
    # f0 START, f1, dup START, f2, f3, dup START, f4, END
    assert [fl for _, fl in dec] == [1, 0, 1, 0, 0, 1, 0, 2] and {cid for cid, _ in dec} == {77}
    assert not fake.states  # END freed the decoder's state


def test_bls_sequence_model_serves_interleaved_sequences(tiny_repo, tiny_export):
    """The repository's BLS model (SequenceModel over the BLS backend) with two interleaved client sequences."""
    from human3r_edge.runtime.session import Session, SessionOptions
    from human3r_edge.runtime.triton.bls_model import BlsSequenceModel

    fake = FakeTriton(tiny_repo, tiny_export)
    config = (tiny_repo / "human3r" / "config.pbtxt").read_text()
    from google.protobuf import json_format

    from human3r_edge.runtime.triton.tensorrt_flavor import parse_config

    cfg = json_format.MessageToDict(parse_config(tiny_repo / "human3r" / "config.pbtxt"),
                                    preserving_proto_field_name=True,
                                    always_print_fields_with_no_presence=True)  # as Triton passes it
    assert "UNTESTED" not in config  # the config itself carries no prose; the README does
    model = BlsSequenceModel(fake, {"model_config": json.dumps(cfg), "model_repository": str(tiny_repo / "human3r"),
                                    "model_version": "1", "model_name": "human3r"})

    class _Req:
        def __init__(self, corrid: int, start: bool, end: bool, frame: np.ndarray) -> None:
            self.inputs = {"CORRID": _Tensor("CORRID", np.array([[corrid]], np.uint64)),
                           "START": _Tensor("START", np.array([[start]])),
                           "END": _Tensor("END", np.array([[end]])), "FRAME": _Tensor("FRAME", frame[None])}

        def requested_output_names(self) -> list[str]:
            return ["POSE", "TRACK_IDS", "INTRINSICS"]

    frames = _frames(3)
    try:
        got: dict[int, list] = {1: [], 2: []}
        for i, f in enumerate(frames):
            for cid in (1, 2):
                f2 = f if cid == 1 else frames[len(frames) - 1 - i]
                (resp,) = model.execute([_Req(cid, i == 0, i == len(frames) - 1, f2)])
                assert not resp.has_error(), resp.error().message()
                got[cid].append(resp.tensors)
        assert not fake.states  # both decoder sequences ended with their client sequences
        starts = [cid for m, cid, fl in fake.log if m == "human3r_decoder" and fl & 1]
        assert len(starts) == 2 and len(set(starts)) == 2  # one decoder sequence (own id) per client sequence
        with Session.open(tiny_export, "ort-cpu", None, SessionOptions(preprocessing="cpu")) as local:
            for i, f in enumerate(frames[::-1]):
                r = local.step(f)
                np.testing.assert_allclose(got[2][i]["POSE"].as_numpy()[0], r.c2w, rtol=1e-5, atol=1e-5)
                assert list(got[2][i]["TRACK_IDS"].as_numpy()[0]) == r.track_ids
        (resp,) = model.execute([_Req(5, False, False, frames[0])])
        assert resp.has_error() and "START" in resp.error().message()
    finally:
        model.finalize()
