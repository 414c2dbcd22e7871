"""FP16 variant of an exported graph: FP16 weights and activations, the numerically fragile math kept in FP32.

The result is explicitly typed (what a strongly typed TensorRT network builds from): every float tensor is
FLOAT16 except inside the FP32 islands, with Cast nodes at their borders; graph inputs and outputs keep the
FP32 types of the I/O spec, so a runtime binds the FP16 file exactly like the FP32 one.

Kept in FP32 (the node rules of `trt_ops.fp32_nodes`, shared with the weakly typed TensorRT build, plus the
detection tails), and why:
* LayerNormalization: mean/variance over 1024-wide rows lose precision or overflow in FP16;
* Softmax: exp of attention logits and the row sum overflow or lose mass (masked keys carry a large bias);
* summing reductions (ReduceSum/Mean/L2): the TTT3R logit mean over layers x heads x keys, mean(enc_tokens)
  for the pose retriever, vector norms;
* Exp and its +-1 (depth `exp(|x|)-1`, confidence `1+exp`, pose and translation scale): FP16 exp overflows
  above 11.09 and `exp(x)-1` cancels for small x;
* norm heads: Sqrt/Div by a norm (quaternion normalisation, Gram-Schmidt, `t/|t|`);
* the camera-pose and SMPL-X translation tails back to their last linear layer (metric translation needs
  ~1e-4 relative precision); the SMPL-X rotation tail (last linear layer, 6D + mean pose, Gram-Schmidt with its
  cross product: FP16 6D values turned into rotations cost 2.5 degrees on the tiny config); the detection
  score/offset tails (a 0.3 threshold and a floor to a patch).
Float constants are clipped to the FP16 range before the cast (the -1e9 key bias would become -inf, and
`0 * -inf` is NaN).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from human3r_edge.errors import Human3RError, msg
from human3r_edge.export.onnx_passes import prune, skeleton
from human3r_edge.export.trt_ops import fp32_nodes

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = 65504.0
# output tails walked back to their last linear layer and kept FP32
PINNED_TAILS = ("camera_pose", "smpl_transl", "smpl_rotmat", "det_scores", "det_offsets")
# ops whose float inputs at these positions keep their own type (ONNX fixes them to float32 or leaves them free)
_FREE_INPUTS = {"Resize": {1, 2}, "Cast": {0}, "Pow": {1}}


@dataclass
class Fp16Report:
    """What the conversion did (written into export.json)."""

    fp32_nodes: int = 0
    fp16_nodes: int = 0
    casts: int = 0
    clipped_constants: list[str] = field(default_factory=list)
    kept_ops: dict[str, int] = field(default_factory=dict)  # op type -> FP32 node count

    def to_json(self) -> dict:
        return {"fp32_nodes": self.fp32_nodes, "fp16_nodes": self.fp16_nodes, "casts": self.casts,
                "clipped_constants": self.clipped_constants[:20], "fp32_ops": dict(sorted(self.kept_ops.items()))}


def _to_f16(arr: np.ndarray, name: str, report: Fp16Report) -> np.ndarray:
    a = np.asarray(arr, np.float32)
    if a.size and float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)) > FP16_MAX:
        report.clipped_constants.append(name)
    return np.clip(a, -FP16_MAX, FP16_MAX).astype(np.float16)


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of FLOAT tensors of the graph (inputs, initializers, node outputs) from shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)  # a skeleton: no weight data
    g = inferred.graph
    out = {v.name for v in list(g.input) + list(g.value_info) + list(g.output)
           if v.type.tensor_type.elem_type == F32}
    out |= {t.name for t in g.initializer if t.data_type == F32}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value" \
                and n.attribute[0].t.data_type == F32:
            out.add(n.output[0])
    return out


def convert_to_fp16(model: onnx.ModelProto, keep: Iterable[str] = (), pinned_tails: Iterable[str] = PINNED_TAILS
                    ) -> tuple[onnx.ModelProto, Fp16Report]:
    """An FP16 copy of the FP32 graph `model` (weights in memory) and what was kept FP32.

    keep: extra node names to keep in FP32; pinned_tails: graph outputs whose tail back to the last linear layer
    stays FP32. Graph inputs and outputs keep their types. Raises Human3RError if the result does not type-check.
    `model` is not modified; the returned model shares no buffers with it.
    """
    src = model.graph
    bones = skeleton(model)
    floats = _float_tensors(bones)
    tails = [o for o in pinned_tails if o in {x.name for x in src.output}]
    pinned = {p.name for p in fp32_nodes(bones, pose_outputs=tails)} | set(keep)
    report = Fp16Report()

    inits = {t.name: t for t in src.initializer}
    consts = {n.output[0]: n for n in src.node if n.op_type == "Constant"}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: dict[str, onnx.TensorProto] = {}
    # current element type of every float tensor name as produced in the new graph
    dtype: dict[str, int] = {}
    for t in src.input:
        if t.name in floats:
            dtype[t.name] = F32
    casts: dict[tuple[str, int], str] = {}

    def node_name(n: onnx.NodeProto) -> str:
        return n.name or f"<{n.op_type}:{n.output[0] if n.output else '?'}>"

    def typed(name: str, want: int) -> str:
        """`name` as a tensor of type `want`: a converted constant or a Cast node (cached)."""
        if name in inits and name not in dtype:
            key = f"{name}__fp16" if want == F16 else name
            if key not in new_inits:
                t = inits[name]
                arr = numpy_helper.to_array(t)
                new_inits[key] = numpy_helper.from_array(_to_f16(arr, name, report) if want == F16 else arr, key)
            return key
        have = dtype.get(name, F32)
        if have == want:
            return name
        if (name, want) not in casts:
            out = f"{name}__to{'16' if want == F16 else '32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], name=f"cast_{out}", to=want))
            report.casts += 1
            casts[(name, want)] = out
            dtype[out] = want
        return casts[(name, want)]

    for n in src.node:
        float_out = any(o in floats for o in n.output)
        float_in = [k for k, i in enumerate(n.input) if i in floats]
        if n.op_type == "Constant":
            continue  # materialised lazily, typed for each consumer
        if not float_out and not float_in:
            node = onnx.NodeProto()
            node.CopyFrom(n)
            node.input[:] = [_materialise(i, consts, inits, new_inits) for i in n.input]
            new_nodes.append(node)
            continue
        want = F32 if node_name(n) in pinned else F16
        if want == F32:
            report.fp32_nodes += 1
            report.kept_ops[n.op_type] = report.kept_ops.get(n.op_type, 0) + 1
        else:
            report.fp16_nodes += 1
        node = onnx.NodeProto()
        node.CopyFrom(n)
        free = _FREE_INPUTS.get(n.op_type, set())
        inputs = []
        for k, i in enumerate(n.input):
            if not i:
                inputs.append(i)
            elif i in floats and k not in free:
                if i in consts and i not in dtype:
                    _constant_initializer(i, consts[i], inits)
                inputs.append(typed(i, want))
            else:
                inputs.append(_materialise(i, consts, inits, new_inits))
        node.input[:] = inputs
        if n.op_type == "Cast":
            to = next(a for a in node.attribute if a.name == "to")
            if to.i in (F32, F16):
                to.i = want
        if n.op_type == "ConstantOfShape" and want == F16:
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == F32:
                    a.t.CopyFrom(numpy_helper.from_array(_to_f16(numpy_helper.to_array(a.t), n.output[0], report)))
        for o in n.output:
            if o in floats:
                dtype[o] = want
        new_nodes.append(node)

    outputs = []
    for o in src.output:
        if dtype.get(o.name, F32) == F16:
            # rename the FP16 producer's tensor, then cast back to the FP32 output name
            inner = f"{o.name}__fp16"
            for node in new_nodes:
                node.output[:] = [inner if x == o.name else x for x in node.output]
                node.input[:] = [inner if x == o.name else x for x in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [o.name], name=f"cast_out_{o.name}", to=F32))
            report.casts += 1
        outputs.append(o)
    for name, t in inits.items():
        if t.data_type != F32 and name not in new_inits:
            new_inits[name] = t
    graph = helper.make_graph(new_nodes, src.name, list(src.input), outputs, list(new_inits.values()))
    out = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name=model.producer_name,
                            producer_version=model.producer_version)
    out.ir_version = model.ir_version
    prune(out)
    _check_types(skeleton(out))  # the structure and types, without copying the weights
    return out, report


def _constant_initializer(name: str, node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> None:
    t = onnx.TensorProto()
    t.CopyFrom(node.attribute[0].t)
    t.name = name
    inits[name] = t


def _materialise(name: str, consts: dict[str, onnx.NodeProto], inits: dict[str, onnx.TensorProto],
                 new_inits: dict[str, onnx.TensorProto]) -> str:
    """A tensor used with its own type: Constant-node values and initializers are copied into the new graph."""
    if name in new_inits:
        return name
    if name in inits:
        new_inits[name] = inits[name]
    elif name in consts:
        t = onnx.TensorProto()
        t.CopyFrom(consts[name].attribute[0].t)
        t.name = name
        new_inits[name] = t
    return name


def _check_types(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise Human3RError(msg("FP16 conversion", "the converted graph does not type-check", str(exc)[:600],
                               hint="a bug in export/fp16.py: report the graph and the op named above")) from exc
