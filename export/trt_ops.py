"""TensorRT readiness of exported ONNX graphs: op support for TensorRT 10.3, INT64 hot paths, and the FP32 pins.

* `check_onnx_trt_support(model_or_path)`: every op against the onnx-tensorrt operator table committed in
  `export/data/` (with its source and the changelog delta to 10.3), the attribute/type restrictions that matter,
  DOUBLE / internal UINT8 tensors, and INT64 tensors on hot paths where INT32 serves.
* `fp32_nodes(model)`: which nodes must stay FP32 in a weakly typed FP16 engine, and why. A pure function of the
  ONNX graph; `trt_build` maps it onto TensorRT layers.

Command line (for the exporter): `python -m human3r_edge.export.trt_ops DIR_OR_ONNX [...]`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from human3r_edge.errors import Human3RError, msg

DATA = Path(__file__).resolve().parent / "data"
SOURCE_FILE = DATA / "trt_ops_source.json"

_TYPE_NAMES: dict[int, str] = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
               TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.INT8: "INT8",
               TensorProto.UINT8: "UINT8", TensorProto.BOOL: "BOOL", TensorProto.DOUBLE: "DOUBLE",
               TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.INT4: "INT4"}
_FLOATS: set[int] = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


# ------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class OpSupport:
    op: str
    supported: bool
    types: frozenset[str]
    restriction: str


@dataclass(frozen=True)
class SupportTable:
    ops: dict[str, OpSupport]
    opset_range: tuple[int, int]
    source: dict

    @property
    def target(self) -> str:
        return str(self.source.get("target", "TensorRT"))


def parse_operator_table(text: str) -> dict[str, OpSupport]:
    """Rows of an onnx-tensorrt `docs/operators.md` support matrix: | Op | Y/N | types | restrictions |."""
    ops = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[1] not in ("Y", "N") or not re.fullmatch(r"[A-Za-z0-9]+", cells[0]):
            continue
        types = frozenset(t.strip().replace("INF64", "INT64") for t in (cells[2] if len(cells) > 2 else "").split(",")
                          if t.strip())
        ops[cells[0]] = OpSupport(cells[0], cells[1] == "Y", types, cells[3] if len(cells) > 3 else "")
    return ops


@lru_cache(maxsize=4)
def load_support_table(source_file: str | None = None) -> SupportTable:
    """The committed table with the delta of `trt_ops_source.json` applied (cached)."""
    src_path = Path(source_file) if source_file else SOURCE_FILE
    source = json.loads(src_path.read_text())
    table_path = src_path.parent / source["table"]["file"]
    ops = parse_operator_table(table_path.read_text(encoding="utf-8"))
    if len(ops) < 100:
        raise Human3RError(msg(str(table_path), "operator table parsed to too few rows", len(ops), ">= 100"))
    for d in source.get("delta_to_target", []):
        op, drop = d.get("op"), d.get("remove_restriction")
        if op and drop and op in ops:
            o = ops[op]
            ops[op] = OpSupport(op, o.supported, o.types, o.restriction.replace(drop, "").strip(" .|"))
    lo, hi = source.get("opset_range", (9, 20))
    return SupportTable(ops, (int(lo), int(hi)), source)


# ------------------------------------------------------------------------------------------ problems
@dataclass(frozen=True)
class Problem:
    graph: str
    node: str  # node name, or the tensor name for tensor-level problems
    op_type: str
    kind: str  # unsupported-op | restriction | dtype | int64-hot-path | dynamic-shape | opset | advice
    severity: str  # error | warning | note
    message: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.graph}:{self.node} ({self.op_type}) {self.kind}: {self.message}"


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


class _Graph:
    """Lookup tables over one (shape-inferred) ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        except Exception:  # onnx raises several types; inference is best effort, types fall back to declared ones
            inferred = model
        g = inferred.graph
        self.model = inferred
        self.name = g.name or "graph"
        self.nodes = list(_all_nodes(g))
        self.types: dict[str, int] = {}
        self.shapes: dict[str, tuple] = {}
        for v in list(g.input) + list(g.value_info) + list(g.output):
            tt = v.type.tensor_type
            if tt.elem_type:
                self.types[v.name] = tt.elem_type
            if tt.HasField("shape"):
                self.shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        self.initializers = {t.name: t for t in g.initializer}
        for t in g.initializer:
            self.types[t.name] = t.data_type
            self.shapes[t.name] = tuple(t.dims)
        self.constants = set(self.initializers)
        for n in self.nodes:
            if n.op_type == "Constant":
                self.constants.update(n.output)
                for a in n.attribute:
                    if a.name == "value":
                        self.types[n.output[0]] = a.t.data_type
        self.inputs = {i.name for i in g.input} - set(self.initializers)
        self.outputs = [o.name for o in g.output]
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for n in self.nodes:
            for k, i in enumerate(n.input):
                if i:
                    self.consumers.setdefault(i, []).append((n, k))

    def const_value(self, name: str) -> Any:
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None


def _all_nodes(g: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    yield from _all_nodes(sub)


def _attr(n: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in n.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _node_name(n: onnx.NodeProto) -> str:
    return n.name or f"<{n.op_type}:{n.output[0] if n.output else '?'}>"


# ------------------------------------------------------------------------------------------ restrictions
Check = Callable[[onnx.NodeProto, _Graph, bool], list[tuple[str, str]]]  # -> [(severity, message)]
_RESIZE_CT = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_PAD_MODES = {"constant", "reflect", "edge", "wrap"}
_REDUCE = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
           "ReduceProd", "ReduceSum", "ReduceSumSquare")


def _must_be_const(idx: int, what: str) -> Check:
    def check(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
        if len(n.input) > idx and n.input[idx] and n.input[idx] not in g.constants:
            return [("error", f"{what} (input {idx} '{n.input[idx]}') must be an initializer / build-time constant")]
        return []
    return check


def _resize(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    out = []
    mode = _attr(n, "mode", "nearest")
    ct = _attr(n, "coordinate_transformation_mode", "half_pixel")
    if mode not in ("nearest", "linear"):
        out.append(("error", f"mode '{mode}' unsupported (nearest, linear); precompute e.g. bicubic pos-embed "
                             "interpolation as a constant"))
    if ct not in _RESIZE_CT:
        out.append(("error", f"coordinate_transformation_mode '{ct}' unsupported ({sorted(_RESIZE_CT)})"))
    if mode == "nearest" and _attr(n, "nearest_mode", "round_prefer_floor") not in _RESIZE_NEAREST:
        out.append(("error", f"nearest_mode '{_attr(n, 'nearest_mode')}' unsupported"))
    if _attr(n, "keep_aspect_ratio_policy", "stretch") != "stretch":
        out.append(("error", "keep_aspect_ratio_policy must be 'stretch'"))
    if _attr(n, "antialias", 0):
        out.append(("error", "antialias is not supported"))
    axes = _attr(n, "axes")
    if axes is not None and len(n.input) > 2 and n.input[2] and n.input[2] not in g.constants:
        rank = len(g.shapes.get(n.input[0], ()))
        if list(axes) != list(range(rank)):
            out.append(("error", "with a tensor `scales`, `axes` must be an iota vector of length rank(input)"))
    return out


def _pad(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    out = _must_be_const(3, "`axes`")(n, g, static)
    mode = _attr(n, "mode", "constant")
    if mode not in _PAD_MODES:
        out.append(("error", f"mode '{mode}' unknown ({sorted(_PAD_MODES)})"))
    if len(n.input) > 1 and n.input[1] not in g.constants:
        out.append(("warning" if not static else "error", "`pads` is a run-time tensor: output shape is dynamic"))
    return out


def _einsum(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    eq = str(_attr(n, "equation", ""))
    sev = "error" if "..." in eq else "warning"
    return [(sev, f"Einsum '{eq}': write it as MatMul/Transpose (TensorRT<=8.6 refused ellipsis/diagonal/broadcast "
                  "and MatMul takes the faster GEMM path)")]


def _data_dependent(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    return [("error" if static else "warning",
             f"{n.op_type} has a data-dependent output shape: not static, not CUDA-graph friendly; keep it in the "
             "runtime (detections, NMS, gathers)")]


def _scatter_nd(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    red = _attr(n, "reduction", "none")
    return [("error", f"reduction '{red}' unsupported (only 'none')")] if red != "none" else []


def _topk(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    out = _must_be_const(1, "`K`")(n, g, static)
    if _attr(n, "sorted", 1) != 1:
        out.append(("error", "`sorted` must be 1"))
    k = g.const_value(n.input[1]) if len(n.input) > 1 else None
    if k is not None and int(k.reshape(-1)[0]) >= 3840:
        out.append(("error", f"K={int(k.reshape(-1)[0])} must be < 3840"))
    return out


def _dropout(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    if len(n.input) > 2 and n.input[2]:
        v = g.const_value(n.input[2])
        if v is None or bool(v):
            return [("error", "`is_training` must be an initializer that evaluates to False")]
    return []


def _constant(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    bad = [a.name for a in n.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    return [("error", f"attribute {bad[0]} unsupported")] if bad else []


def _extra_outputs(first_bad: int, what: str) -> Check:
    def check(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
        used = [o for o in n.output[first_bad:] if o and (o in g.consumers or o in g.outputs)]
        return [("error", f"{what} output(s) {used} unsupported")] if used else []
    return check


def _pool(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    out = []
    k = _attr(n, "kernel_shape")
    if k is not None and len(k) not in (2, 3):
        out.append(("error", f"{len(k)}-D pooling unsupported (2-D or 3-D only)"))
    d = _attr(n, "dilations")
    if d is not None and any(x != 1 for x in d):
        out.append(("error", "`dilations` must be empty or all ones"))
    if n.op_type == "MaxPool":
        out += _extra_outputs(1, "`Indices`")(n, g, static)
    return out


def _lstm(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    bad = [a for a in ("input_forget", "layout") if _attr(n, a, 0)]
    return [("error", f"attribute(s) {bad} must be 0")] if bad else []


def _grid_sample(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    rank = len(g.shapes.get(n.input[0], (0,) * 4))
    return [] if rank == 4 else [("error", f"input must be 4-D, got rank {rank}")]


def _zero_point(idx: int, what: str) -> Check:
    def check(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
        if len(n.input) > idx and n.input[idx]:
            v = g.const_value(n.input[idx])
            if v is None or bool((v != 0).any()):
                return [("error", f"{what} must be zero")]
        return []
    return check


def _control_flow(n: onnx.NodeProto, g: _Graph, static: bool) -> list[tuple[str, str]]:
    return [("warning", f"{n.op_type}: control flow in an engine (branch outputs must have the same rank and "
                        "distinct names; loops must keep carried shapes); prefer a flag multiplied in")]


RESTRICTION_CHECKS: dict[str, Check] = {
    "Resize": _resize, "Pad": _pad, "Einsum": _einsum, "NonZero": _data_dependent,
    "NonMaxSuppression": _data_dependent, "Unique": _data_dependent, "ScatterND": _scatter_nd, "TopK": _topk,
    "Squeeze": _must_be_const(1, "`axes`"), "Unsqueeze": _must_be_const(1, "`axes`"),
    "CumSum": _must_be_const(1, "`axis`"), "OneHot": _must_be_const(1, "`depth`"), "Dropout": _dropout,
    "Constant": _constant, "LayerNormalization": _extra_outputs(1, "Mean/InvStdDev"),
    "MaxPool": _pool, "AveragePool": _pool, "LpPool": _pool, "LSTM": _lstm, "GridSample": _grid_sample,
    "QuantizeLinear": _zero_point(2, "`y_zero_point`"), "DequantizeLinear": _zero_point(2, "`x_zero_point`"),
    "If": _control_flow, "Loop": _control_flow, "Scan": _control_flow,
    **{r: _must_be_const(1, "`axes`") for r in _REDUCE},
}
# where the table's "Supported Types" apply: input index, or ("out", k) for an output
_TYPE_SLOT: dict[str, Any] = {"ConstantOfShape": ("out", 0), "Constant": ("out", 0), "Where": 1,
                              "RandomNormal": ("out", 0), "RandomUniform": ("out", 0), "EyeLike": ("out", 0)}


# ------------------------------------------------------------------------------------------ INT64
# (op -> input positions that carry shapes, axes or sizes): INT64 there is ONNX's own convention
SHAPE_INPUTS: dict[str, set[int]] = {
    "Reshape": {1}, "Expand": {1}, "Tile": {1}, "Slice": {1, 2, 3, 4}, "Squeeze": {1}, "Unsqueeze": {1},
    "ConstantOfShape": {0}, "Pad": {1, 3}, "Resize": {3}, "TopK": {1}, "Split": {1}, "OneHot": {1},
    "CumSum": {1}, "Trilu": {1}, "Range": {0, 1, 2}, "Upsample": set(), "NonMaxSuppression": {2},
    **{r: {1} for r in _REDUCE},
}
# ops that compute shapes from shapes: their INT64 inputs are shape-only when all their outputs are
SHAPE_ARITH = {"Shape", "Size", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "Cast", "Add", "Sub", "Mul",
               "Div", "Identity", "Max", "Min", "Neg", "ReduceProd", "Equal", "Where", "Abs", "Mod", "Range"}


def shape_only_int64(g: _Graph) -> set[str]:
    """INT64 tensors whose every use is a shape/axes/size input, directly or through shape arithmetic."""
    int64 = {t for t, ty in g.types.items() if ty == TensorProto.INT64}
    ok = set(int64) - set(g.outputs)
    changed = True
    while changed:
        changed = False
        for t in sorted(ok):
            for n, k in g.consumers.get(t, []):
                fine = k in SHAPE_INPUTS.get(n.op_type, set())
                if not fine and n.op_type in SHAPE_ARITH:
                    fine = all(o in ok for o in n.output if o)
                if not fine:
                    ok.discard(t)
                    changed = True
                    break
    return ok


# ------------------------------------------------------------------------------------------ the checker
def _load(model_or_path: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise Human3RError(msg("TensorRT op check", "ONNX file not found", str(path)))
    return onnx.load(str(path), load_external_data=False)  # weights are not needed, only types and dims


def check_onnx_trt_support(model_or_path: onnx.ModelProto | str | Path, *, allow_int64: Sequence[str] = (),
                           allow_shape_int64: bool = True, static_shapes: bool = True,
                           table: SupportTable | None = None) -> list[Problem]:
    """Problems that stop (severity 'error') or hurt (warning/note) a TensorRT 10.3 build of this ONNX graph.

    allow_int64: tensor or node names whose INT64 is accepted (e.g. an index tensor that really needs 64 bits).
    allow_shape_int64: INT64 used only as shapes/axes/sizes (ONNX's convention; folded at build time) is fine.
    static_shapes: data-dependent shapes (NonZero, NMS, run-time pads) are errors, not warnings.
    """
    t = table or load_support_table()
    model = _load(model_or_path)
    g = _Graph(model)
    out: list[Problem] = []

    def add(node: str, op: str, kind: str, sev: str, text: str) -> None:
        out.append(Problem(g.name, node, op, kind, sev, text))

    lo, hi = t.opset_range
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not lo <= imp.version <= hi:
            add("<model>", "-", "opset", "error", f"opset {imp.version} outside {t.target}'s parser range {lo}..{hi}")
    for n in g.nodes:
        name = _node_name(n)
        if n.domain not in ("", "ai.onnx"):
            add(name, n.op_type, "unsupported-op", "error",
                f"custom-domain op {n.domain}::{n.op_type} needs a TensorRT plugin")
            continue
        sup = t.ops.get(n.op_type)
        if sup is None or not sup.supported:
            add(name, n.op_type, "unsupported-op", "error",
                f"{n.op_type} is {'not in' if sup is None else 'marked unsupported in'} the {t.target} operator table")
            continue
        slot = _TYPE_SLOT.get(n.op_type, 0)
        tensor = (n.output[slot[1]] if isinstance(slot, tuple) else
                  (n.input[slot] if len(n.input) > slot else ""))
        ty = g.types.get(tensor)
        if ty is not None and sup.types and _TYPE_NAMES.get(ty, str(ty)) not in sup.types and ty != TensorProto.DOUBLE:
            add(name, n.op_type, "dtype", "error",
                f"{_TYPE_NAMES.get(ty, ty)} '{tensor}' not among supported types {sorted(sup.types)}")
        if n.op_type == "Cast":
            to = _TYPE_NAMES.get(_attr(n, "to", 0), "?")
            if sup.types and to not in sup.types:
                add(name, n.op_type, "dtype", "error", f"Cast to {to} unsupported ({sorted(sup.types)})")
        check = RESTRICTION_CHECKS.get(n.op_type)
        if check is not None:
            for sev, text in check(n, g, static_shapes):
                add(name, n.op_type, "restriction" if sev == "error" else "advice", sev, text)
        elif sup.restriction:
            add(name, n.op_type, "restriction", "note", f"table restriction not checked here: {sup.restriction}")
    internal = set(g.types) - g.inputs - set(g.outputs)
    for tname, ty in sorted(g.types.items()):
        if ty == TensorProto.DOUBLE:
            add(tname, "-", "dtype", "error", "DOUBLE tensor: TensorRT casts it down to FLOAT, clamping; export FP32")
        elif ty == TensorProto.UINT8 and tname in internal and tname not in g.constants:
            add(tname, "-", "dtype", "error", "UINT8 is only supported as a network input or output")
    allowed = set(allow_int64)
    shape_ok = shape_only_int64(g) if allow_shape_int64 else set()
    for tname, ty in sorted(g.types.items()):
        if ty != TensorProto.INT64 or tname in shape_ok or tname in allowed:
            continue
        prod = g.producer.get(tname)
        if prod is not None and _node_name(prod) in allowed:
            continue
        where = ("graph input" if tname in g.inputs else "graph output" if tname in g.outputs else
                 "initializer" if tname in g.initializers else f"output of {_node_name(prod)}" if prod else "tensor")
        users = sorted({f"{c.op_type}[{k}]" for c, k in g.consumers.get(tname, [])})
        add(tname, prod.op_type if prod else "-", "int64-hot-path", "error",
            f"INT64 {where} used as data ({', '.join(users) or 'graph output'}); INT32 serves (indices < 2^31)")
    return out


# ------------------------------------------------------------------------------------------ FP32 pins
@dataclass(frozen=True)
class PinnedNode:
    """A node whose layers stay FP32 (precision and output types) in a weakly typed FP16 engine."""

    name: str
    op_type: str
    outputs: tuple[str, ...]
    reason: str


NORM_OPS = ("LayerNormalization", "InstanceNormalization", "GroupNormalization", "LpNormalization",
            "MeanVarianceNormalization")
SOFTMAX_OPS = ("Softmax", "LogSoftmax")
SUM_REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum",
                  "ReduceLogSumExp", "ReduceProd")
NORM_MATH_OPS = ("Sqrt", "Pow", "Reciprocal", "Log")
LINEAR_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
# why each family stays FP32 (written into the engine sidecar)
REASONS = {
    "norm": "normalisation statistics: a mean/variance over 1024-wide rows loses precision or overflows in FP16",
    "softmax": "softmax: exp of attention logits and the row sum overflow / lose mass in FP16",
    "reduce": "reduction: long FP16 sums lose precision (TTT3R mean gate, norms, pooled state)",
    "exp": "exp head: exp overflows FP16 above 11.09 and exp(x)-1 cancels for small x (depth, conf, pose scale)",
    "normhead": "norm head: a norm and the division by it (quaternion, Gram-Schmidt, t/|t|) need FP32 range",
    "pose": "pose translation: metric translation needs ~1e-4 relative precision; FP16 gives ~1e-3",
}


def fp32_nodes(model_or_path: onnx.ModelProto | str | Path,
               pose_outputs: Sequence[str] = ("camera_pose", "smpl_transl"), max_pose_nodes: int = 64
               ) -> list[PinnedNode]:
    """Nodes of the ONNX graph that must stay FP32 in a weakly typed FP16 build, each with its reason.

    Rules (see REASONS): normalisations, softmax, summing reductions, Exp and the elementwise op that consumes
    it, Sqrt/Pow/Reciprocal/Log and any Div/Mul by a pinned norm, and the tail of each pose output: walking
    back from it through float nodes up to and including the last linear layer (at most `max_pose_nodes`).
    Pure function of the graph; returned in graph order.
    """
    g = _Graph(_load(model_or_path))
    reasons: dict[str, list[str]] = {}
    by_name = {}

    def pin(n: onnx.NodeProto, why: str) -> None:
        key = _node_name(n)
        by_name[key] = n
        if why not in reasons.setdefault(key, []):
            reasons[key].append(why)

    def is_float(t: str) -> bool:
        return g.types.get(t, TensorProto.FLOAT) in _FLOATS

    for n in g.nodes:
        if n.op_type in NORM_OPS:
            pin(n, "norm")
        elif n.op_type in SOFTMAX_OPS:
            pin(n, "softmax")
        elif n.op_type in SUM_REDUCE_OPS:
            pin(n, "reduce")
        elif n.op_type == "Exp":
            pin(n, "exp")
            for c, _ in g.consumers.get(n.output[0], []):
                if c.op_type in ("Sub", "Add", "Mul", "Div"):
                    pin(c, "exp")
        elif n.op_type in NORM_MATH_OPS:
            pin(n, "normhead")
    norm_producers = {o for n in by_name.values() for o in n.output
                      if n.op_type in SUM_REDUCE_OPS + NORM_MATH_OPS}
    for n in g.nodes:
        divides_by_norm = n.op_type == "Div" and len(n.input) > 1 and n.input[1] in norm_producers
        scales_by_norm = n.op_type == "Mul" and any(i in norm_producers for i in n.input)
        if divides_by_norm or scales_by_norm:
            pin(n, "normhead")
    for out_name in pose_outputs:
        frontier = [out_name]
        seen: set[str] = set()
        count = 0
        while frontier and count < max_pose_nodes:
            t = frontier.pop(0)
            prod = g.producer.get(t)
            if prod is None or _node_name(prod) in seen or not any(is_float(o) for o in prod.output if o):
                continue
            seen.add(_node_name(prod))
            pin(prod, "pose")
            count += 1
            if prod.op_type in LINEAR_OPS:
                continue
            frontier += [i for i in prod.input if i and i not in g.constants and is_float(i)]
    order = {_node_name(n): k for k, n in enumerate(g.nodes)}
    return [PinnedNode(k, by_name[k].op_type, tuple(o for o in by_name[k].output if o),
                       "; ".join(REASONS[r] for r in reasons[k])) for k in sorted(reasons, key=order.__getitem__)]


# ------------------------------------------------------------------------------------------ CLI
def _onnx_files(paths: Sequence[str]) -> list[Path]:
    files = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.onnx")) if p.is_dir() else [p]
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m human3r_edge.export.trt_ops", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="ONNX files or export directories")
    ap.add_argument("--allow-int64", nargs="*", default=[], help="tensor/node names whose INT64 is accepted")
    ap.add_argument("--notes", action="store_true", help="also print notes")
    args = ap.parse_args(argv)
    n_err = 0
    for f in _onnx_files(args.paths):
        probs = check_onnx_trt_support(f, allow_int64=args.allow_int64)
        shown = [p for p in probs if args.notes or p.severity != "note"]
        for p in shown:
            print(f"{f.name}: {p}")
        n_err += len(errors(probs))
        print(f"{f.name}: {len(errors(probs))} error(s), {len(probs) - len(errors(probs))} warning(s)/note(s)")
    table = load_support_table()
    print(f"{'PASSED' if n_err == 0 else 'FAILED'}: {n_err} error(s) against {table.target} "
          f"(table {table.source['table']['file']})")
    return 0 if n_err == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
