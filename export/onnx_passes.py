"""Clean-up passes on traced ONNX graphs: fold static shape arithmetic, INT32 gather indices, prune, save.

The tracer leaves small constant subgraphs behind (`expand(1, -1, -1)` becomes Shape/ConstantOfShape/Equal/Where
on INT64, `x[..., 0]` a Gather with an INT64 scalar index, SDPA's default scale a Shape/Cast/Sqrt chain). With
static shapes they are constants: folding them keeps INT64 off the data paths TensorRT sees. Only small tensors
are folded and only by exact operations (no transcendental functions), so numerics are unchanged.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from human3r_edge.errors import Human3RError, msg

# ops folded when every input is a known constant (exact in IEEE arithmetic or pure data movement)
FOLDABLE = {"Add", "Sub", "Mul", "Div", "Neg", "Sqrt", "Reciprocal", "Cast", "Concat", "Reshape", "Unsqueeze",
            "Squeeze", "Slice", "Gather", "Identity", "Expand", "ConstantOfShape", "Equal", "Where", "Range",
            "Transpose", "Less", "Greater", "Not", "And", "Or", "Abs", "Max", "Min", "Floor", "Ceil", "Tile"}
FOLD_LIMIT = 1 << 16  # elements: larger constants are weights/tables and are left to the runtime
# Above this a graph keeps its weights in `<file>.data`: required near protobuf's 2 GB cap, and chosen well below
# it so that tools reading only the structure (op checks, FLOP counts) never parse gigabytes of weights.
EXTERNAL_DATA_BYTES = 512 * 2**20


def _known_constants(g: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        external = t.data_location == TensorProto.EXTERNAL
        if not external and int(np.prod(t.dims, dtype=np.int64)) <= FOLD_LIMIT:
            consts[t.name] = numpy_helper.to_array(t)
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = n.attribute[0].t
            if t.data_location != TensorProto.EXTERNAL and int(np.prod(t.dims, dtype=np.int64)) <= FOLD_LIMIT:
                consts[n.output[0]] = numpy_helper.to_array(t)
    return consts


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Inferred shapes of the graph's tensors, None for a dim that is not a number (e.g. the stream axis).

    With a dynamic input dim, shape values are propagated too (`data_prop`): a Reshape to Concat(batch, 48, 128)
    then still has its static dims."""
    dynamic = any(not d.HasField("dim_value") for i in model.graph.input for d in i.type.tensor_type.shape.dim)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=dynamic)
    out: dict[str, tuple[int | None, ...]] = {}
    g = inferred.graph
    for v in list(g.input) + list(g.value_info) + list(g.output):
        tt = v.type.tensor_type
        if tt.HasField("shape"):
            out[v.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
    for t in g.initializer:
        out[t.name] = tuple(int(d) for d in t.dims)
    return out


def _shape_part(n: onnx.NodeProto, shape_of: dict[str, tuple[int | None, ...]],
                consts: dict[str, np.ndarray]) -> np.ndarray | None:
    """The value of `Gather(Shape(x), i)` or `Slice(Shape(x), ...)` with constant indices when the dims it picks
    are static although `x` has a dynamic dim (the stream axis): the tracer's `x.shape[1]` arithmetic."""
    dims = shape_of.get(n.input[0]) if n.input else None
    if dims is None or any(i and i not in consts for i in n.input[1:]):
        return None
    arr = np.array([-1 if d is None else d for d in dims], np.int64)
    known = np.array([d is not None for d in dims])
    if n.op_type == "Gather" and len(n.input) == 2:
        idx = consts[n.input[1]].astype(np.int64)
        if idx.size and np.all(known[idx]):
            return arr[idx]
    elif n.op_type == "Slice" and len(n.input) >= 3:
        starts, ends = consts[n.input[1]], consts[n.input[2]]
        axes = consts[n.input[3]] if len(n.input) > 3 and n.input[3] else np.zeros(1, np.int64)
        steps = consts[n.input[4]] if len(n.input) > 4 and n.input[4] else np.ones(1, np.int64)
        if starts.size == ends.size == axes.size == steps.size == 1 and int(axes[0]) in (0, -1):
            pick = np.arange(len(dims))[slice(int(starts[0]), int(ends[0]), int(steps[0]))]
            if pick.size and np.all(known[pick]):
                return arr[pick]
    return None


def _evaluate(node: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = [f"out{i}" for i in range(len(node.output))]
    clone = helper.make_node(node.op_type, names, outs, domain=node.domain)
    clone.attribute.extend(node.attribute)
    vis = [helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
           for nm, x in zip(names, inputs) if x is not None]
    graph = helper.make_graph([clone], "fold", vis, [helper.make_empty_tensor_value_info(o) for o in outs])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {nm: x for nm, x in zip(names, inputs) if x is not None}
    return [np.asarray(r) for r in ReferenceEvaluator(m).run(None, feeds)]


def _opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def fold_static(model: onnx.ModelProto, rounds: int = 4) -> int:
    """Fold Shape nodes of statically shaped tensors and small all-constant subgraphs into initializers.

    In graphs with a dynamic stream axis, the static dims picked out of a Shape (`Gather`/`Slice` of it) fold
    too, and folding repeats (up to `rounds` times) while shape inference learns more from the folded constants.
    Works on a model loaded without its external data (weights are never read). Returns the folded node count.
    """
    total = 0
    for _ in range(max(1, rounds)):
        folded = _fold_once(model)
        total += folded
        if not folded:
            break
    return total


def _fold_once(model: onnx.ModelProto) -> int:
    g = model.graph
    consts = _known_constants(g)
    shapes = _static_shapes(skeleton(model, keep_small=True))
    opset = _opset(model)
    keep: list[onnx.NodeProto] = []
    folded = 0
    new_inits: list[onnx.TensorProto] = []
    shape_of: dict[str, tuple[int | None, ...]] = {}  # Shape outputs of tensors with a dynamic dim
    for n in g.node:
        values: list[np.ndarray] | None = None
        if n.op_type == "Shape" and n.input[0] in shapes:
            start = next((a.i for a in n.attribute if a.name == "start"), 0)
            dims = shapes[n.input[0]]
            end = next((a.i for a in n.attribute if a.name == "end"), len(dims))
            if all(d is not None for d in dims[start:end]):
                values = [np.asarray(dims[start:end], np.int64)]
            else:
                shape_of[n.output[0]] = dims[start:end]
        elif n.op_type in ("Gather", "Slice") and n.input and n.input[0] in shape_of:
            part = _shape_part(n, shape_of, consts)
            values = None if part is None else [part]
        elif n.op_type in FOLDABLE and n.domain in ("", "ai.onnx") and n.input \
                and all((not i) or i in consts for i in n.input):
            args = [consts[i] if i else None for i in n.input]
            if sum(a.size for a in args if a is not None) <= FOLD_LIMIT:
                values = _evaluate(n, args, opset)
                if any(v.size > FOLD_LIMIT for v in values):
                    values = None
        if values is None:
            keep.append(n)
            continue
        folded += 1
        for name, v in zip(n.output, values):
            consts[name] = v
            new_inits.append(numpy_helper.from_array(v, name))
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new_inits)
    prune(model)
    return folded


def int32_gather_indices(model: onnx.ModelProto) -> int:
    """Give every Gather with a constant INT64 index an INT32 copy of it (ONNX allows both). Returns the count."""
    g = model.graph
    consts = _known_constants(g)
    made: dict[str, str] = {}
    count = 0
    for n in g.node:
        if n.op_type != "Gather" or len(n.input) < 2 or n.input[1] not in consts:
            continue
        idx = consts[n.input[1]]
        if idx.dtype != np.int64:
            continue
        if np.any(idx > np.iinfo(np.int32).max) or np.any(idx < np.iinfo(np.int32).min):
            continue
        if n.input[1] not in made:
            name = n.input[1] + "_i32"
            g.initializer.append(numpy_helper.from_array(idx.astype(np.int32), name))
            made[n.input[1]] = name
        n.input[1] = made[n.input[1]]
        count += 1
    prune(model)
    return count


def prune(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers that no graph output depends on (in place)."""
    g = model.graph
    needed = {o.name for o in g.output}
    live = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(i for i in n.input if i)
    live.reverse()
    del g.node[:]
    g.node.extend(live)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)


def load_small_external_data(model: onnx.ModelProto, base_dir: str | os.PathLike, limit: int = FOLD_LIMIT) -> None:
    """Read the external data of every tensor (initializers and Constant attributes) with at most `limit`
    elements, in place: the tracer stores even scalars externally in graphs above 2 GB, and folding needs them."""
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    tensors = list(model.graph.initializer)
    for n in model.graph.node:
        tensors += [a.t for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    for t in tensors:
        if uses_external_data(t) and int(np.prod(t.dims, dtype=np.int64)) <= limit:
            load_external_data_for_tensor(t, str(base_dir))


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of initializer data (inline or external), from dims and dtypes."""
    total = 0
    for t in model.graph.initializer:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        total += int(np.prod(t.dims, dtype=np.int64)) * itemsize
    return total


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> list[Path]:
    """Save `model` (its weights in memory) to `path`; external data `<name>.data` beyond EXTERNAL_DATA_BYTES.

    Returns the written files. The directory must exist. Existing files are replaced.
    """
    p = Path(path)
    data = p.with_name(p.name + ".data")
    if data.exists():
        data.unlink()
    if weight_bytes(model) > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(p), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        umask = os.umask(0)
        os.umask(umask)
        data.chmod(0o666 & ~umask)  # onnx creates it owner-only; it must be as readable as the .onnx file
        return [p, data]
    onnx.save_model(model, str(p))
    return [p]


def check_model(path: str | os.PathLike) -> None:
    """onnx.checker on a saved model (path-based, so external data of any size works)."""
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        raise Human3RError(msg(f"ONNX {path}", "onnx.checker rejects the exported graph", str(exc)[:600],
                               hint="a bug in the exporter: please report it with the command line")) from exc


def skeleton(model: onnx.ModelProto, keep_small: bool = False) -> onnx.ModelProto:
    """The graph structure with data-less initializers (names, dtypes, dims): cheap to copy and to shape-infer
    whatever the weight size. Not runnable. `keep_small` keeps the values of small inline initializers (at most
    FOLD_LIMIT elements: shapes, axes, indices) so that shape inference can propagate them."""
    g = model.graph

    def small(t: onnx.TensorProto) -> bool:
        return (keep_small and t.data_location != TensorProto.EXTERNAL
                and int(np.prod(t.dims, dtype=np.int64)) <= FOLD_LIMIT)

    inits = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in g.initializer if not small(t)]
    graph = helper.make_graph(list(g.node), g.name, list(g.input) + inits, list(g.output),
                              initializer=[t for t in g.initializer if small(t)])
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out
