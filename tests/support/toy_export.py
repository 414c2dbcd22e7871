"""A toy export: three small ONNX graphs with the real tensor names, dtypes and shapes of `runtime/graphs.py`.

It stands in for `human3r-edge export` until real exports exist, so every backend, the engine builder and the
CPU stand-in run end to end here on the same spec files (`export.json`, `initial_state.npz`) the exporter writes.
The math is arbitrary but exercises what matters to the backends and the builder: LayerNormalization, Softmax,
reductions, exp heads, int32 gathers by slot, state and memory updates that depend on the previous state, flags.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from human3r_edge.runtime.config import get_config
from human3r_edge.runtime.graphs import DECODER, ENCODER, SMPL_HEAD, graph_specs
from human3r_edge.runtime.iospec import ExportSpec, GraphSpec, TensorSpec

OPSET = 17
IR_VERSION = 9  # onnxruntime 1.31 refuses the IR 14 that onnx 1.23 writes by default
TOY_W, TOY_H, TOY_K = 64, 48, 4
_ONNX_DTYPE = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int32": TensorProto.INT32,
               "int64": TensorProto.INT64, "bool": TensorProto.BOOL, "uint8": TensorProto.UINT8}


class _Graph:
    """Tiny helper that names nodes and initializers uniquely and keeps seeded random weights."""

    def __init__(self, name: str, seed: int, batched: bool = False) -> None:
        self.name = name
        self.batched = batched  # multi-stream graph: axis 0 is the dynamic stream axis
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def _id(self, base: str) -> str:
        self.n += 1
        return f"{self.name}/{base}_{self.n}"

    def const(self, value: np.ndarray, base: str = "c") -> str:
        name = self._id(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, shape: tuple[int, ...], scale: float | None = None) -> str:
        fan_in = shape[0] if len(shape) > 1 else 1
        s = scale if scale is not None else 1.0 / np.sqrt(fan_in)
        return self.const((self.rng.standard_normal(shape) * s).astype(np.float32), "w")

    def op(self, op_type: str, inputs: list[str], out: str | None = None, n_out: int = 1, **attrs: object) -> str:
        name = self._id(op_type)
        outs = [out] if out else [f"{name}:out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0]

    def linear(self, x: str, d_in: int, d_out: int, scale: float | None = None) -> str:
        y = self.op("MatMul", [x, self.weight((d_in, d_out), scale)])
        return self.op("Add", [y, self.const(np.zeros(d_out, np.float32) + 0.01, "b")])

    def layer_norm(self, x: str, d: int, out: str | None = None) -> str:
        scale = self.const((1.0 + 0.1 * self.rng.standard_normal(d)).astype(np.float32), "ln_w")
        bias = self.const((0.1 * self.rng.standard_normal(d)).astype(np.float32), "ln_b")
        return self.op("LayerNormalization", [x, scale, bias], out, axis=-1, epsilon=1e-6)

    def i64(self, values: list[int]) -> str:
        return self.const(np.asarray(values, np.int64), "shape")

    def reshape(self, x: str, shape: list[int], out: str | None = None) -> str:
        if self.batched and shape[0] == 1:
            shape = [0] + list(shape[1:])  # 0: copy the (dynamic) stream axis of the input
        return self.op("Reshape", [x, self.i64(shape)], out)

    def gather_rows(self, data: str, index: str, width: int) -> str:
        """data (B, N, width) gathered on axis 1 by index: (K,) on a single-stream graph (Gather, B = 1), (B, K)
        per row on a multi-stream one (GatherElements on the index broadcast to (B, K, width))."""
        if not self.batched:
            return self.op("Gather", [data, index], axis=1)
        idx = self.op("Expand", [self.op("Unsqueeze", [index, self.i64([2])]), self.i64([1, 1, width])])
        return self.op("GatherElements", [data, idx], axis=1)

    def slice_last(self, x: str, start: int, end: int) -> str:
        return self.op("Slice", [x, self.i64([start]), self.i64([end]), self.i64([-1])])

    def model(self, spec: GraphSpec) -> onnx.ModelProto:
        def vi(t: TensorSpec) -> onnx.ValueInfoProto:
            dims: list = ["streams", *t.shape[1:]] if t.batched else list(t.shape)
            return helper.make_tensor_value_info(t.name, _ONNX_DTYPE[t.dtype], dims)

        graph = helper.make_graph(self.nodes, spec.name, [vi(t) for t in spec.inputs], [vi(t) for t in spec.outputs],
                                  self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="human3r-edge-toy")
        onnx.checker.check_model(m, full_check=True)
        return m


def _patchify(g: _Graph, x: str, c: int, h: int, w: int, p: int) -> str:
    """(1, c, h, w) -> (1, h/p * w/p, c*p*p), row-major patches."""
    y = g.reshape(x, [1, c, h // p, p, w // p, p])
    y = g.op("Transpose", [y], perm=[0, 2, 4, 1, 3, 5])
    return g.reshape(y, [1, (h // p) * (w // p), c * p * p])


def _is_batched(spec: GraphSpec) -> bool:
    return any(t.batched for t in spec.inputs)


def encoder_graph(spec: GraphSpec, cfg_dims: dict[str, int], seed: int = 1) -> onnx.ModelProto:
    H, W, R, g_, Ce, bd = (cfg_dims[k] for k in ("H", "W", "R", "g", "Ce", "bd"))
    g = _Graph(ENCODER, seed, _is_batched(spec))
    x = _patchify(g, "img", 3, H, W, 16)  # (1, N, 768)
    g.layer_norm(g.linear(x, 3 * 16 * 16, Ce), Ce, out="enc_tokens")
    d = _patchify(g, "img_mhmr", 3, R, R, 14)  # (1, g*g, 588)
    g.layer_norm(g.linear(d, 3 * 14 * 14, bd), bd, out="dino_tokens")
    s = g.op("Sigmoid", [g.linear("dino_tokens", bd, 1, scale=2.0)])
    g.reshape(s, [1, g_, g_], out="det_scores")
    o = g.op("Tanh", [g.linear("dino_tokens", bd, 2)])
    g.reshape(o, [1, g_, g_, 2], out="det_offsets")
    m = g.op("ReduceMean", ["img_mhmr"], axes=[1], keepdims=0)  # (1, R, R)
    g.op("Sigmoid", [m], out="human_mask")
    return g.model(spec)


def decoder_graph(spec: GraphSpec, dims: dict[str, int], seed: int = 2) -> onnx.ModelProto:
    H, W, Ce, D, S, M, K, bd = (dims[k] for k in ("H", "W", "Ce", "D", "S", "M", "K", "bd"))
    names = {t.name for t in spec.outputs}
    g = _Graph(DECODER, seed, _is_batched(spec))
    x = g.linear("enc_tokens", Ce, D)  # (1, N, D)
    xt = g.op("Transpose", [x], perm=[0, 2, 1])  # (1, D, N)
    scores = g.op("Mul", [g.op("MatMul", ["state", xt]), g.const(np.float32(1.0 / np.sqrt(D)))])  # (1, S, N)
    attn = g.op("Softmax", [scores], axis=-1)
    upd = g.op("MatMul", [attn, x])  # (1, S, D)
    gate = g.op("Sigmoid", [g.op("ReduceMean", [scores], axes=[2], keepdims=0)], out="ttt3r_gate")  # (1, S)
    one = g.const(np.float32(1.0))
    use_gate = g.op("Mul", ["ttt3r", g.op("Sub", [one, "first"])])  # (1,)
    if g.batched:  # (B,) -> (B, 1): one flag per stream row
        use_gate = g.op("Unsqueeze", [use_gate, g.i64([1])])
    gate_eff = g.op("Add", [g.op("Sub", [one, use_gate]), g.op("Mul", [use_gate, gate])])  # (1, S)
    gate_eff = g.op("Unsqueeze", [gate_eff, g.i64([2])])  # (1, S, 1)
    new = g.layer_norm(g.op("Add", ["state", upd]), D)
    g.op("Add", ["state", g.op("Mul", [gate_eff, g.op("Sub", [new, "state"])])], out="state_out")
    pooled = g.op("ReduceMean", ["state_out"], axes=[1], keepdims=1)  # (1, 1, D)
    memq = g.op("Tanh", [g.linear(pooled, D, 2 * D)])  # (1, 1, 2D)
    g.op("Add", [g.op("Mul", ["mem", g.const(np.float32(0.9))]), memq], out="mem_out")
    # camera pose: t * expm1(|t|) / |t| written as exp(.)-1, unit quaternion with w >= 0
    p = g.linear(g.reshape(pooled, [1, D]), D, 7, scale=0.3)  # (1, 7)
    t = g.slice_last(p, 0, 3)
    n = g.op("Add", [g.op("ReduceL2", [t], axes=[1], keepdims=1), g.const(np.float32(1e-8))])
    expm1 = g.op("Sub", [g.op("Exp", [n]), one])
    t_out = g.op("Div", [g.op("Mul", [t, expm1]), n])
    q = g.slice_last(p, 3, 7)
    q = g.op("Div", [q, g.op("ReduceL2", [q], axes=[1], keepdims=1)])
    w_neg = g.op("Less", [g.slice_last(q, 0, 1), g.const(np.float32(0.0))])
    q = g.op("Where", [w_neg, g.op("Neg", [q]), q])
    g.op("Concat", [t_out, q], out="camera_pose", axis=1)
    # dense heads: 11 channels per pixel -> pts3d_self(3) conf_self(1) pts3d_other(3) conf_other(1) rgb(3)
    dense = g.linear(x, D, 16 * 16 * 11, scale=0.2)  # (1, N, 2816)
    dense = g.reshape(dense, [1, H // 16, W // 16, 16, 16, 11])
    dense = g.op("Transpose", [dense], perm=[0, 1, 3, 2, 4, 5])
    dense = g.reshape(dense, [1, H, W, 11])
    sq = g.i64([3])
    g.op("Identity", [g.slice_last(dense, 0, 3)], out="pts3d_self")
    g.op("Add", [one, g.op("Exp", [g.op("Squeeze", [g.slice_last(dense, 3, 4), sq])])], out="conf_self")
    if "pts3d_other" in names:
        g.op("Identity", [g.slice_last(dense, 4, 7)], out="pts3d_other")
        g.op("Add", [one, g.op("Exp", [g.op("Squeeze", [g.slice_last(dense, 7, 8), sq])])], out="conf_other")
        g.op("Tanh", [g.slice_last(dense, 8, 11)], out="rgb")
    # human slots: the token of each slot's patch plus pooled state, zeroed for padded slots
    valid = g.reshape("human_valid", [1, K, 1])
    ht = g.op("Add", [g.gather_rows(x, "human_patch", D), pooled])  # (1, K, D)
    g.op("Mul", [g.layer_norm(ht, D), valid], out="human_tokens")
    g.op("Mul", [g.gather_rows("dino_tokens", "human_cell", bd), valid], out="human_dino_tokens")
    del bd, M, S
    return g.model(spec)


def smpl_head_graph(spec: GraphSpec, dims: dict[str, int], seed: int = 3) -> onnx.ModelProto:
    D, K, bd = dims["D"], dims["K"], dims["bd"]
    g = _Graph(SMPL_HEAD, seed, _is_batched(spec))
    h = g.op("Concat", ["human_tokens", "human_dino_tokens"], axis=2)  # (1, K, D+bd)
    h = g.op("Relu", [g.linear(h, D + bd, 64)])  # (1, K, 64)
    six = g.reshape(g.linear(h, 64, 53 * 6), [1, K, 53, 3, 2])
    idx = {k: g.const(np.asarray(v, np.int32), "idx") for k, v in (("a", 0), ("b", 1))}
    a1 = g.op("Gather", [six, idx["a"]], axis=4)  # (1, K, 53, 3)
    a2 = g.op("Gather", [six, idx["b"]], axis=4)
    b1 = g.op("Div", [a1, g.op("ReduceL2", [a1], axes=[-1], keepdims=1)])
    proj = g.op("ReduceSum", [g.op("Mul", [b1, a2]), g.i64([-1])], keepdims=1)
    b2 = g.op("Sub", [a2, g.op("Mul", [proj, b1])])
    b2 = g.op("Div", [b2, g.op("ReduceL2", [b2], axes=[-1], keepdims=1)])
    r1 = g.const(np.asarray([1, 2, 0], np.int32), "idx")
    r2 = g.const(np.asarray([2, 0, 1], np.int32), "idx")

    def roll(v: str, r: str) -> str:
        return g.op("Gather", [v, r], axis=3)

    b3 = g.op("Sub", [g.op("Mul", [roll(b1, r1), roll(b2, r2)]), g.op("Mul", [roll(b1, r2), roll(b2, r1)])])
    cols = [g.op("Unsqueeze", [b, g.i64([-1])]) for b in (b1, b2, b3)]
    g.op("Concat", cols, out="smpl_rotmat", axis=-1)  # (1, K, 53, 3, 3)
    g.linear(h, 64, 10, scale=0.3)
    g.nodes[-1].output[0] = "smpl_shape"
    g.linear(h, 64, 10, scale=0.3)
    g.nodes[-1].output[0] = "smpl_expression"
    t = g.linear(h, 64, 3, scale=0.3)
    z = g.op("Exp", [g.slice_last(t, 2, 3)])
    g.op("Concat", [g.slice_last(t, 0, 2), z], out="smpl_transl", axis=-1)
    del bd
    return g.model(spec)


def fp16_variant(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and math with FP32 I/O and the fragile ops kept in FP32 (what the exporter's FP16 file is).

    Float graph inputs are cast to FP16 on entry and float outputs back to FP32 on exit; every node of
    FP32_OPS gets its float inputs cast to FP32 and its outputs cast back to FP16.
    """
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    is_float = {v.name for v in list(g.input) + list(g.value_info) + list(g.output)
                if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    is_float |= {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT}
    out_names = {o.name for o in g.output}
    nodes: list[onnx.NodeProto] = []
    ren: dict[str, str] = {}
    as_f32: set[str] = set()

    def cast(src: str, dst: str, to: int) -> None:
        nodes.append(helper.make_node("Cast", [src], [dst], name=f"cast/{dst}", to=to))

    for i in g.input:
        if i.name in is_float:
            ren[i.name] = i.name + "__h"
            cast(i.name, ren[i.name], TensorProto.FLOAT16)
    for o in out_names:
        ren[o] = o + "__h"
    inits = [numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)
             if t.data_type == TensorProto.FLOAT else t for t in g.initializer]
    for n in g.node:
        ins = [ren.get(x, x) for x in n.input]
        outs = [ren.get(x, x) for x in n.output]
        if n.op_type in FP32_OPS:
            for k, x in enumerate(n.input):
                if x in is_float:
                    if ins[k] + "__f" not in as_f32:
                        cast(ins[k], ins[k] + "__f", TensorProto.FLOAT)
                        as_f32.add(ins[k] + "__f")
                    ins[k] = ins[k] + "__f"
            body_outs = [o + "__f" if x in is_float else o for o, x in zip(outs, n.output)]
            as_f32.update(body_outs)
            nodes.append(helper.make_node(n.op_type, ins, body_outs, name=n.name, domain=n.domain))
            nodes[-1].attribute.extend(n.attribute)
            for o, b in zip(outs, body_outs):
                if o != b:
                    cast(b, o, TensorProto.FLOAT16)
        else:
            nodes.append(helper.make_node(n.op_type, ins, outs, name=n.name, domain=n.domain))
            nodes[-1].attribute.extend(n.attribute)
    for o in g.output:
        cast(ren[o.name], o.name, TensorProto.FLOAT if o.name in is_float else o.type.tensor_type.elem_type)
    graph = helper.make_graph(nodes, g.name, list(model.graph.input), list(model.graph.output), inits)
    m = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=IR_VERSION,
                          producer_name="human3r-edge-toy-fp16")
    onnx.checker.check_model(m, full_check=True)
    return m


FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceL2", "ReduceSum", "Exp")


def _toposort(graph: onnx.GraphProto) -> None:
    """Reorder nodes topologically in place (the fp16 converter appends its Cast nodes at the end)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"graph {graph.name} has a cycle or a dangling input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def write_toy_export(out: str | Path, *, width: int = TOY_W, height: int = TOY_H, max_people: int = TOY_K,
                     lean: bool = False, fp16: bool = True, seed: int = 0, streams: int = 1) -> ExportSpec:
    """Write encoder/decoder/smpl_head ONNX (+ `.fp16.onnx`), export.json and initial_state.npz into `out`.

    `streams` = N > 1 writes the multi-stream graphs (runtime/graphs.py `graph_specs(streams=N)`): axis 0 of every
    tensor is the ONNX dim_param "streams"; the weights (and the initial state, one row) are those of the
    single-stream export with the same seed, so a batch row equals a single-stream run of the same stream."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = get_config("tiny")
    specs = graph_specs(cfg, width, height, max_people, lean, streams=streams)
    dims = dict(H=height, W=width, R=cfg.mhmr_img_res, g=cfg.mhmr_grid, Ce=cfg.enc_embed_dim,
                bd=cfg.backbone_spec.embed_dim, D=cfg.dec_embed_dim, S=cfg.state_size, M=cfg.local_mem_size,
                K=max_people)
    builders = {ENCODER: encoder_graph, DECODER: decoder_graph, SMPL_HEAD: smpl_head_graph}
    graphs = []
    for k, spec in enumerate(specs):
        m = builders[spec.name](spec, dims, seed + k + 1)
        onnx.save(m, str(out / spec.file))
        fp16_file = None
        if fp16:
            fp16_file = spec.file.replace(".onnx", ".fp16.onnx")
            onnx.save(fp16_variant(m), str(out / fp16_file))
        graphs.append(GraphSpec(spec.name, spec.file, spec.inputs, spec.outputs, spec.state, fp16_file))
    rng = np.random.default_rng(seed + 100)
    dec = next(s for s in specs if s.name == DECODER)
    row = {n: (1,) + tuple(dec.input(n).shape[1:]) for n in ("state", "mem")}  # initial state: one row
    init = {"state": (rng.standard_normal(row["state"]) * 0.5).astype(np.float32),
            "mem": np.zeros(row["mem"], np.float32)}
    np.savez(out / "initial_state.npz", **init)
    spec = ExportSpec(graphs=tuple(graphs), config=cfg.to_dict(), resolution=(width, height), max_people=max_people,
                      opset=OPSET, checkpoint_sha256=None, lean=lean,
                      versions={"onnx": onnx.__version__, "generator": "tests/support/toy_export.py"},
                      extra={"toy": True}, streams=streams)
    spec.save(out)
    return spec


def toy_feeds(spec: ExportSpec, frame: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Deterministic host feeds of every graph for frame `frame` (a person count that varies per frame)."""
    rng = np.random.default_rng(seed * 1000 + frame)
    feeds: dict[str, dict[str, np.ndarray]] = {}
    for g in spec.graphs:
        f = {}
        for t in spec.host_inputs(g.name):
            if t.name == "human_valid":
                n = frame % (t.shape[0] + 1)
                f[t.name] = (np.arange(t.shape[0]) < n).astype(np.float32)
            elif t.name == "human_cell":
                f[t.name] = rng.integers(0, spec.graph("encoder").output("dino_tokens").shape[1], t.shape).astype(np.int32)
            elif t.name == "human_patch":
                f[t.name] = rng.integers(0, spec.graph("encoder").output("enc_tokens").shape[1], t.shape).astype(np.int32)
            elif t.name == "first":
                f[t.name] = np.asarray([1.0 if frame == 0 else 0.0], np.float32)
            elif t.name == "ttt3r":
                f[t.name] = np.asarray([1.0], np.float32)
            else:
                f[t.name] = rng.uniform(-1, 1, t.shape).astype(t.np_dtype)
        feeds[g.name] = f
    return feeds


def unbatched(spec: ExportSpec) -> ExportSpec:
    """The single-stream view of a multi-stream spec (each tensor as one stream sees it): for toy_feeds."""
    import dataclasses

    def one(t: TensorSpec) -> TensorSpec:
        if not t.batched:
            return t
        shape = tuple(t.shape[1:]) if t.name in ("human_cell", "human_patch", "human_valid") else \
            (1,) + tuple(t.shape[1:])
        return TensorSpec(t.name, t.dtype, shape, t.doc)

    graphs = tuple(GraphSpec(g.name, g.file, tuple(one(t) for t in g.inputs), tuple(one(t) for t in g.outputs),
                             g.state, g.fp16_file) for g in spec.graphs)
    return dataclasses.replace(spec, graphs=graphs, streams=1)


def stack_rows(spec: ExportSpec, graph: str, rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Single-stream feeds (or outputs) of several streams -> one batch of a multi-stream graph (axis 0 = row)."""
    g = spec.graph(graph)
    shapes = {t.name: t.shape for t in (*g.inputs, *g.outputs)}
    out = {}
    for name in rows[0]:
        rest = tuple(shapes[name][1:])
        out[name] = np.concatenate([np.asarray(r[name]).reshape((1,) + rest) for r in rows], axis=0)
    return out


def stream_feeds(spec: ExportSpec, frame: int, seeds: list[int]) -> dict[str, dict[str, np.ndarray]]:
    """Host feeds of a batch of streams for a multi-stream spec: row i is `toy_feeds(single, frame, seeds[i])`."""
    single = unbatched(spec)
    per = [toy_feeds(single, frame, s) for s in seeds]
    return {g.name: stack_rows(spec, g.name, [p[g.name] for p in per]) for g in spec.graphs}


def run_frames(backend, spec: ExportSpec, frames: int, fetch: dict[str, list[str]] | None = None,
               seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Run encoder -> decoder -> smpl_head for `frames` frames; returns every fetched output per frame."""
    results = []
    for f in range(frames):
        feeds = toy_feeds(spec, f, seed)
        row: dict[str, np.ndarray] = {}
        for g in spec.graphs:
            names = None if fetch is None else fetch.get(g.name, [])
            row.update(backend.run(g.name, feeds[g.name], names))
        results.append(row)
    return results
