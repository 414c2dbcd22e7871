"""`human3r-edge export --streams N`: multi-stream graphs with a dynamic stream axis 0 (issue #16).

One streams=3 export (with FP16 variants) of the tiny_a golden's checkpoint at its resolution, against the
single-stream export of the same checkpoint: spec and ONNX I/O, ONNX Runtime rows at B = 1, 2, 3 equal to
single-stream runs with the same inputs and state, the single-stream export unchanged, and the torch backend's
multi-stream runs (gather/scatter of state rows by slot, absent rows untouched)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from human3r_edge.cli import main as cli
from human3r_edge.errors import Human3RError
from human3r_edge.export.onnx_export import STREAM_DIM, ExportOptions, parse_streams
from human3r_edge.runtime.config import Human3RConfig
from human3r_edge.runtime.graphs import DECODER, ENCODER, SMPL_HEAD, graph_specs
from human3r_edge.runtime.iospec import ExportSpec
from support.ci import require
from support.exports import golden_export
from support.goldens import goldens_root

N = 3
TOL = 3e-5  # relative to max|ref| of each output tensor


@pytest.fixture(scope="module")
def tiny_a():
    d = goldens_root() / "tiny_a"
    require((d / "golden.npz").is_file(), f"golden tiny_a not found under {goldens_root()}",
            "CI=true: goldens are required")
    return d


@pytest.fixture(scope="module")
def single(tiny_a, tmp_path_factory):
    return golden_export(tmp_path_factory, tiny_a, fp16=True)  # streams=1 (shared with test_export_onnx.py)


@pytest.fixture(scope="module")
def multi(tiny_a, single, tmp_path_factory):
    from human3r_edge.export.onnx_export import export_model, load_source

    spec1 = ExportSpec.load(single)
    w, h = spec1.resolution
    model, sha, source = load_source(tiny_a / "checkpoint.pth", None, False)
    out = tmp_path_factory.mktemp("export_tiny_a_streams3")
    export_model(model, out, ExportOptions(int(w), int(h), spec1.max_people, fp16=True, streams=N), sha, source,
                 quiet=True)
    return out


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _rows(spec: ExportSpec, directory, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Per graph, N rows of inputs in the multi-stream layout (axis 0 = stream) that differ from row to row:
    different images, states, slot indices, numbers of valid humans (2, K, 0), first and ttt3r flags."""
    rng = np.random.default_rng(seed)
    k = spec.max_people
    out: dict[str, dict[str, np.ndarray]] = {}
    for g in spec.graphs:
        feeds = {}
        for t in g.inputs:
            shape = t.shape_for(N)
            if t.dtype == "int32":
                hi = {"human_cell": spec.graph(ENCODER).output("dino_tokens").shape[1],
                      "human_patch": spec.graph(ENCODER).output("enc_tokens").shape[1]}[t.name]
                feeds[t.name] = rng.integers(0, hi, shape).astype(np.int32)
            else:
                feeds[t.name] = rng.uniform(-1, 1, shape).astype(np.float32)
        if g.name == DECODER:
            feeds["human_valid"] = np.zeros((N, k), np.float32)
            feeds["human_valid"][0, :2] = 1  # two humans, K in row 1, none in row 2
            feeds["human_valid"][1, :] = 1
            feeds["first"] = np.array([1, 0, 0], np.float32)
            feeds["ttt3r"] = np.array([1, 1, 0], np.float32)
            with np.load(directory / spec.initial_state_file) as z:
                for name in ("state", "mem"):  # plausible states, different per row
                    feeds[name] = (z[name] + 0.1 * rng.standard_normal((N,) + z[name].shape[1:])).astype(np.float32)
        out[g.name] = feeds
    return out


def _single_row(spec1: ExportSpec, graph: str, feeds: dict[str, np.ndarray], b: int) -> dict[str, np.ndarray]:
    """Row b of multi-stream feeds in the single-stream layout ((K,) slots, (1,) flags, (1, ...) tensors)."""
    g = spec1.graph(graph)
    return {name: (v[b] if g.input(name).shape[0] != 1 else v[b:b + 1]) for name, v in feeds.items()}


def _close(got: np.ndarray, ref: np.ndarray, what: str) -> float:
    err = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-12)
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    assert err <= TOL * scale, f"{what}: max abs {err:.3e} > {TOL} x {scale:.3e}"
    return err / scale


# ------------------------------------------------------------------------------------------ spec and files
def test_multi_stream_spec_and_onnx_io(multi, single):
    spec = ExportSpec.load(multi)
    spec1 = ExportSpec.load(single)
    raw = json.loads((multi / "export.json").read_text())
    assert raw["streams"] == spec.streams == N
    cfg = Human3RConfig.from_dict(spec.config)
    w, h = spec.resolution
    want = graph_specs(cfg, w, h, spec.max_people, streams=N)
    for g, wg, g1 in zip(spec.graphs, want, spec1.graphs):
        assert [(t.name, t.dtype, t.shape, t.batched) for t in g.inputs + g.outputs] == \
               [(t.name, t.dtype, t.shape, t.batched) for t in wg.inputs + wg.outputs]
        assert all(t.batched and t.shape[0] == N for t in g.inputs + g.outputs)
        assert [t.name for t in g.inputs + g.outputs] == [t.name for t in g1.inputs + g1.outputs]
        for f in (g.file, g.fp16_file):
            m = onnx.load(str(multi / f), load_external_data=False)
            ops = {n.op_type for n in m.graph.node}
            assert not ops & {"NonZero", "Einsum", "If", "Loop", "Scan", "Expm1", "Cross", "GatherND"}, (f, ops)
            casts64 = [n.name for n in m.graph.node if n.op_type == "Cast"
                       and any(a.name == "to" and a.i == onnx.TensorProto.INT64 for a in n.attribute)]
            assert not casts64, (f, casts64)  # INT32 gather indices all the way (the TensorRT check: no INT64 data)
            if g.name == DECODER:
                assert "GatherElements" in ops  # each stream's slots read that stream's tokens
            init = {t.name for t in m.graph.initializer}
            ios = [v for v in m.graph.input if v.name not in init] + list(m.graph.output)
            assert len(ios) == len(g.inputs) + len(g.outputs)
            for v in ios:
                dims = v.type.tensor_type.shape.dim
                t = next(x for x in g.inputs + g.outputs if x.name == v.name)
                assert dims[0].dim_param == STREAM_DIM, (f, v.name)
                assert tuple(d.dim_value for d in dims[1:]) == t.shape[1:], (f, v.name)
    assert all(r["errors"] == 0 for r in spec.extra["trt_ops"].values()), spec.extra["trt_ops"]
    dec = spec.graph(DECODER)
    with np.load(multi / spec.initial_state_file) as z, np.load(single / spec1.initial_state_file) as z1:
        for p in dec.state:  # one row for every stream, the single-stream initial state
            assert z[p.input].shape == (1,) + dec.input(p.input).shape[1:]
            assert np.array_equal(z[p.input], z1[p.input])


def test_single_stream_export_unchanged(single):
    spec = ExportSpec.load(single)
    assert spec.streams == 1
    cfg = Human3RConfig.from_dict(spec.config)
    w, h = spec.resolution
    for g, wg in zip(spec.graphs, graph_specs(cfg, w, h, spec.max_people, streams=1)):
        assert [(t.name, t.dtype, t.shape, t.batched) for t in g.inputs + g.outputs] == \
               [(t.name, t.dtype, t.shape, False) for t in wg.inputs + wg.outputs]
        m = onnx.load(str(single / g.file), load_external_data=False)
        init = {t.name for t in m.graph.initializer}
        got = [(v.name, tuple(d.dim_value for d in v.type.tensor_type.shape.dim),
                any(d.HasField("dim_param") for d in v.type.tensor_type.shape.dim))
               for v in [i for i in m.graph.input if i.name not in init] + list(m.graph.output)]
        assert got == [(t.name, t.shape, False) for t in g.inputs + g.outputs]
    assert spec.graph(DECODER).input("human_cell").shape == (spec.max_people,)
    assert spec.graph(DECODER).input("first").shape == (1,)


# ------------------------------------------------------------------------------------------ ONNX Runtime rows
@pytest.mark.parametrize("graph", [ENCODER, DECODER, SMPL_HEAD])
def test_ort_rows_equal_single_stream_runs(multi, single, graph):
    spec, spec1 = ExportSpec.load(multi), ExportSpec.load(single)
    feeds = _rows(spec, multi, seed=1)[graph]
    g, g1 = spec.graph(graph), spec1.graph(graph)
    s3, s1 = _session(multi / g.file), _session(single / g1.file)
    names = [t.name for t in g.outputs]
    ref = [dict(zip(names, s1.run(names, _single_row(spec1, graph, feeds, b)))) for b in range(N)]
    worst = 0.0
    for rows in ([0, 1, 2], [2, 0], [1]):  # B = 3, 2, 1 (in any order of rows)
        got = dict(zip(names, s3.run(names, {k: v[rows] for k, v in feeds.items()})))
        for i, b in enumerate(rows):
            for name in names:
                worst = max(worst, _close(got[name][i:i + 1], ref[b][name], f"{graph} B={len(rows)} row {b} {name}"))
    if graph == DECODER:  # the rows really differ (flags, humans, states): a mixed-up row would be caught
        assert np.abs(ref[0]["state_out"] - ref[1]["state_out"]).max() > 1e-3
        assert np.all(ref[2]["human_tokens"] == 0) and np.any(ref[1]["human_tokens"][:, -1] != 0)
    print(f"{graph}: worst row error {worst:.2e} x max|ref|")


def test_ort_fp16_variants_run_batched(multi):
    """The FP16 graphs take any batch 1..N too, and batching changes no row beyond FP16 rounding noise."""
    spec = ExportSpec.load(multi)
    feeds_all = _rows(spec, multi, seed=2)
    worst = 0.0
    for g in spec.graphs:
        sess = _session(multi / g.fp16_file)
        names = [t.name for t in g.outputs]
        feeds = feeds_all[g.name]
        whole = sess.run(names, feeds)
        for b in range(N):
            alone = sess.run(names, {k: v[b:b + 1] for k, v in feeds.items()})
            for name, x, y in zip(names, whole, alone):
                assert x.shape[0] == N and y.shape[0] == 1
                scale = max(float(np.abs(y).max()), 1e-6)
                err = float(np.abs(x[b:b + 1].astype(np.float64) - y).max()) / scale
                assert err <= 2e-2, (g.name, name, b, err)
                worst = max(worst, err)
    print(f"fp16: worst batched-vs-alone row error {worst:.2e} x max|ref|")


# ------------------------------------------------------------------------------------------ torch backend
def test_torch_backend_streams_match_single_stream(multi, single):
    from human3r_edge.runtime.backends import open_backend

    spec, spec1 = ExportSpec.load(multi), ExportSpec.load(single)
    feeds = _rows(spec, multi, seed=3)
    enc_f, dec_f = feeds[ENCODER], feeds[DECODER]
    host = [t.name for t in spec.host_inputs(DECODER)]
    slots = [2, 0]  # batch rows 0, 1 of the inputs go to stream slots 2 and 0
    with open_backend("torch", multi) as be, open_backend("torch", single) as one:
        init = {p.input: be.read_state(p.input) for p in spec.graph(DECODER).state}
        assert all(v.shape[0] == N for v in init.values())
        be.run(ENCODER, {k: v[:2] for k, v in enc_f.items()}, slots=slots)
        got = be.run(DECODER, {k: dec_f[k][:2] for k in host}, slots=slots)
        got_h = be.run(SMPL_HEAD, {}, slots=slots)
        after = {name: be.read_state(name) for name in init}
        worst = 0.0
        for b in range(2):
            one.reset_state()
            one.run(ENCODER, {k: v[b:b + 1] for k, v in enc_f.items()})
            ref = one.run(DECODER, _single_row(spec1, DECODER, {k: dec_f[k] for k in host}, b))
            ref_h = one.run(SMPL_HEAD, {})
            for name, r in ref.items():
                worst = max(worst, _close(got[name][b:b + 1], r, f"torch decoder row {b} {name}"))
            for name, r in ref_h.items():
                worst = max(worst, _close(got_h[name][b:b + 1], r, f"torch smpl_head row {b} {name}"))
            for name in init:  # the slot's state rows are the single-stream state after the step
                worst = max(worst, _close(after[name][slots[b]:slots[b] + 1], one.read_state(name),
                                          f"torch state {name} slot {slots[b]}"))
        print(f"torch backend: worst row error {worst:.2e} x max|ref|")
        for name, v in init.items():  # the absent slot 1 is untouched, bit for bit
            assert np.array_equal(after[name][1], v[1]), name
            assert not np.array_equal(after[name][2], v[2]), name
        # a batch of slot 1 alone leaves slots 0 and 2 as they were; resetting slot 2 touches only it
        be.run(ENCODER, {k: v[2:3] for k, v in enc_f.items()}, slots=[1])
        be.run(DECODER, {k: dec_f[k][2:3] for k in host}, slots=[1])
        again = {name: be.read_state(name) for name in init}
        be.reset_streams([2])
        reset = {name: be.read_state(name) for name in init}
        for name in init:
            assert np.array_equal(again[name][[0, 2]], after[name][[0, 2]]), name
            assert not np.array_equal(again[name][1], after[name][1]), name
            assert np.array_equal(reset[name][2], init[name][2]) and np.array_equal(reset[name][:2], again[name][:2])
        with pytest.raises(Human3RError, match="linked to a run of other streams"):
            be.run(DECODER, {k: dec_f[k][:1] for k in host}, slots=[0])  # the encoder last ran for slot 1


# ------------------------------------------------------------------------------------------ options and CLI
def test_streams_option_errors(tmp_path, capsys):
    assert parse_streams("4") == 4
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(Human3RError, match="--streams"):
            parse_streams(bad)
    with pytest.raises(Human3RError, match="--streams"):
        ExportOptions(128, 96, streams=0)
    with pytest.raises(Human3RError, match="--streams"):
        ExportOptions(128, 96, streams=True)
    rc = cli(["export", "--config", "tiny", "--random-weights", "--resolution", "128x96", "--streams", "zero",
              "--out", str(tmp_path / "e")])
    assert rc == 2 and "--streams" in capsys.readouterr().err and not (tmp_path / "e").exists()

