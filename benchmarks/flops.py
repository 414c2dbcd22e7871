"""FLOPs per stage, counted from the exported ONNX graphs (MatMul, Gemm, Conv, ConvTranspose, Einsum, attention).

    python -m human3r_edge.benchmarks.flops EXPORT_DIR [--json OUT]

One multiply-add is 2 FLOPs. Element-wise ops, normalisations, softmax and resampling are not counted (as the
reference anchor's FlopCounterMode did not count them), so achieved GFLOP/s is slightly understated. Shapes come
from ONNX shape inference on the graph structure only (weights are never read, so multi-GB exports are cheap).

`torch_stage_flops` counts the same stages on the PyTorch model built on the meta device (no memory, no weights):
the cross-check of the ONNX count, and the source for variants that have not been exported.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from human3r_edge.errors import Human3RError, msg

COUNTED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "FusedMatMul", "FusedConv", "Attention",
               "MultiHeadAttention")
_ELEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


@dataclass
class GraphFlops:
    """FLOPs and weights of one ONNX graph."""

    graph: str
    file: str
    flops: int  # counted FLOPs of one run
    by_op: dict[str, int]  # op type -> FLOPs
    by_scope: dict[str, int]  # top-level module scope (from node names / metadata) -> FLOPs
    weight_bytes: int  # initializers + Constant tensors, at their stored dtype
    weight_fp32_bytes: int  # the same tensors counted at 4 bytes per element (floating point ones)
    params: int  # floating-point weight elements
    activation_peak_bytes: int  # liveness peak of intermediate tensors in node order, at `activation_itemsize`
    activation_itemsize: int
    largest_tensor_bytes: int
    uncounted: list[str] = field(default_factory=list)  # counted-type nodes whose shapes were unknown


# ------------------------------------------------------------------------------------------ shapes
def load_structure(path: str | Path) -> Any:
    """The ONNX model without its external weight data, local functions inlined, shapes inferred."""
    import onnx
    import onnx.inliner
    import onnx.shape_inference

    p = Path(path)
    if not p.is_file():
        raise Human3RError(msg("flops", "ONNX file not found", str(p), hint="pass the export directory"))
    model = onnx.load(str(p), load_external_data=False)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001  shape inference is best-effort; unknown shapes are reported as uncounted
        pass
    return model


def _dims(type_proto: Any) -> tuple[int, ...] | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    out = []
    for d in type_proto.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        out.append(int(d.dim_value))
    return tuple(out)


def shape_table(model: Any) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """(tensor name -> static shape, tensor name -> ONNX element type) for every tensor with a known shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    types: dict[str, int] = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _dims(vi.type)
        if s is not None:
            shapes[vi.name] = s
        if vi.type.HasField("tensor_type"):
            types[vi.name] = int(vi.type.tensor_type.elem_type)
    for t in g.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
        types[t.name] = int(t.data_type)
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    shapes[n.output[0]] = tuple(int(d) for d in a.t.dims)
                    types[n.output[0]] = int(a.t.data_type)
    return shapes, types


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _prod(xs: Iterable[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


# ------------------------------------------------------------------------------------------ per-node FLOPs
def node_flops(node: Any, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """FLOPs of one node (2 per multiply-add), 0 for uncounted op types, None if a needed shape is unknown."""
    op = node.op_type

    def s(i: int, outputs: bool = False) -> tuple[int, ...] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if i < len(names) and names[i] else None

    if op in ("MatMul", "FusedMatMul", "MatMulInteger"):
        a, out = s(0), s(0, True)
        if a is None or out is None:
            return None
        k = a[-1] if len(a) >= 1 else 1
        if op == "FusedMatMul" and _attr(node, "transA", 0):
            k = a[-2]
        return 2 * _prod(out) * k
    if op == "Gemm":
        a, out = s(0), s(0, True)
        if a is None or out is None:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return 2 * _prod(out) * k
    if op in ("Conv", "FusedConv"):
        w, out = s(1), s(0, True)
        if w is None or out is None:
            return None
        return 2 * _prod(out) * _prod(w[1:])  # each output element: Cin/groups * prod(kernel) MACs
    if op == "ConvTranspose":
        x, w = s(0), s(1)
        if x is None or w is None:
            return None
        return 2 * _prod(x) * _prod(w[1:])  # weight (Cin, Cout/groups, k...): each input scatters Cout/g * k
    if op == "Einsum":
        eq = _attr(node, "equation")
        eq = eq.decode() if isinstance(eq, bytes) else eq
        ins = [s(i) for i in range(len(node.input))]
        if eq is None or any(x is None for x in ins):
            return None
        lhs = eq.replace(" ", "").split("->")[0].split(",")
        sizes: dict[str, int] = {}
        for term, shp in zip(lhs, ins):
            if "..." in term or shp is None or len(term) != len(shp):
                return None
            for ch, d in zip(term, shp):
                sizes[ch] = max(sizes.get(ch, 1), int(d))
        return 2 * _prod(sizes.values()) if len(lhs) > 1 else 0
    if op == "Attention" and node.domain in ("", "ai.onnx"):
        return _onnx_attention(node, s)
    if op == "MultiHeadAttention":  # com.microsoft: query (B, S, D), key (B, L, D) or packed
        query, key = s(0), s(1)
        if query is None:
            return None
        if key is None or len(key) != 3:
            if len(query) == 5:  # packed QKV (B, S, N, 3, H)
                b, sq, n, _, h = query
                return 4 * b * n * sq * sq * h
            return None
        return 4 * query[0] * query[1] * key[1] * query[2]
    if op == "Attention" and node.domain == "com.microsoft":  # input (B, S, Din) x weights (Din, 3D)
        x, w = s(0), s(1)
        if x is None or w is None:
            return None
        d = w[1] // 3
        return 2 * x[0] * x[1] * x[2] * w[1] + 4 * x[0] * x[1] * x[1] * d
    return 0


def _onnx_attention(node: Any, s: Any) -> int | None:
    """ONNX (opset 23) Attention: Q (B, H, Sq, E) or (B, Sq, H*E); K, V likewise."""
    q, k, v = s(0), s(1), s(2)
    if q is None or k is None or v is None:
        return None
    if len(q) == 4:
        b, h, sq, e = q
        sk, ev = k[2], v[3]
        return 2 * b * h * sq * sk * e + 2 * b * h * sq * sk * ev
    b, sq, hd = q  # (B, Sq, H*E): per head Sq*Sk*E, summed over heads = Sq*Sk*H*E
    return 2 * b * sq * k[1] * hd + 2 * b * sq * k[1] * v[2]


def node_scope(node: Any) -> str:
    """Top-level module of a node: from exporter metadata (dynamo) or the '/a/b/Op' node name (TorchScript)."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            parts = [x.strip(" '\"") for x in p.value.strip("[]").split(",")]
            parts = [x for x in parts if x]
            if parts:
                return parts[0] if parts[0] not in ("", "model") or len(parts) == 1 else parts[1]
        if p.key == "namespace" and p.value:
            first = p.value.split("/")[0].split(":")[0].strip()
            if first:
                return first
    name = node.name.lstrip("/")
    if "/" in name:
        return name.split("/")[0]
    return "(unscoped)"


# ------------------------------------------------------------------------------------------ graphs
def count_model(model: Any, graph: str = "", file: str = "", activation_itemsize: int = 4) -> GraphFlops:
    """Count FLOPs, weights and an activation liveness peak of a loaded (structure-only) ONNX model."""
    shapes, types = shape_table(model)
    g = model.graph
    by_op: dict[str, int] = defaultdict(int)
    by_scope: dict[str, int] = defaultdict(int)
    uncounted = []
    total = 0
    for n in _all_nodes(g):
        f = node_flops(n, shapes)
        if f is None:
            uncounted.append(f"{n.op_type}:{n.name or n.output[0]}")
            continue
        if f:
            total += f
            by_op[n.op_type] += f
            by_scope[node_scope(n)] += f
    wbytes, w32, params = _weights(model)
    peak, largest = activation_peak(model, shapes, activation_itemsize)
    return GraphFlops(graph, file, int(total), dict(by_op), dict(sorted(by_scope.items(), key=lambda kv: -kv[1])),
                      wbytes, w32, params, peak, activation_itemsize, largest, uncounted)


def _all_nodes(g: Any) -> Iterable[Any]:
    """Nodes of a graph and of its subgraphs (If/Loop/Scan bodies: counted once each)."""
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.HasField("g"):
                yield from _all_nodes(a.g)
            for sub in a.graphs:
                yield from _all_nodes(sub)


def _weights(model: Any) -> tuple[int, int, int]:
    float_types = {1, 10, 11, 16}
    stored = fp32 = params = 0
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                if a.name == "value" and a.HasField("t")]
    for t in tensors:
        count = _prod(t.dims)
        stored += count * _ELEM_BYTES.get(int(t.data_type), 4)
        if int(t.data_type) in float_types:
            fp32 += count * 4
            params += count
        else:
            fp32 += count * _ELEM_BYTES.get(int(t.data_type), 4)
    return stored, fp32, params


def activation_peak(model: Any, shapes: Mapping[str, tuple[int, ...]], itemsize: int) -> tuple[int, int]:
    """(peak, largest) bytes of non-weight tensors alive at once when nodes run in file order, each tensor
    freed after its last consumer; graph inputs and outputs included. No fusion or in-place reuse is assumed,
    so this is an upper bound for an engine that fuses attention."""
    g = model.graph
    weights = {t.name for t in g.initializer}
    weights |= {n.output[0] for n in g.node if n.op_type == "Constant"}
    last_use: dict[str, int] = {}
    for i, n in enumerate(g.node):
        for x in n.input:
            if x:
                last_use[x] = i
    outputs = {o.name for o in g.output}
    size = {name: _prod(s) * itemsize for name, s in shapes.items() if name not in weights}
    live: dict[str, int] = {i.name: size.get(i.name, 0) for i in g.input if i.name not in weights}
    cur = sum(live.values())
    peak = cur
    largest = max(live.values(), default=0)
    for i, n in enumerate(g.node):
        for o in n.output:
            if o and o not in weights and o not in live:
                live[o] = size.get(o, 0)
                cur += live[o]
                largest = max(largest, live[o])
        peak = max(peak, cur)
        for x in set(n.input) | set(n.output):
            if x in live and last_use.get(x, -1) <= i and x not in outputs:
                cur -= live.pop(x)
    return peak, largest


def count_export(directory: str | Path, activation_itemsize: int = 4, fp16: bool = False) -> dict[str, GraphFlops]:
    """Count every graph of an export directory (its export.json), keyed by graph name ('encoder', ...).

    fp16: count the `fp16_file` variants where the export has them (same FLOPs, half the weight bytes).
    """
    from human3r_edge.runtime.iospec import ExportSpec

    d = Path(directory)
    spec = ExportSpec.load(d)
    out = {}
    for g in spec.graphs:
        name = g.fp16_file if fp16 and g.fp16_file else g.file
        out[g.name] = count_model(load_structure(d / name), g.name, name, activation_itemsize)
    return out


def summarize(graphs: Mapping[str, GraphFlops]) -> dict:
    """The `flops` JSON block: FLOPs per graph/stage, total, weights and where the numbers came from."""
    return {
        "source": "onnx",
        "stages": {k: v.flops for k, v in graphs.items()},
        "total": int(sum(v.flops for v in graphs.values())),
        "weight_fp32_bytes": int(sum(v.weight_fp32_bytes for v in graphs.values())),
        "weight_bytes": int(sum(v.weight_bytes for v in graphs.values())),
        "params": int(sum(v.params for v in graphs.values())),
        "activation_peak_bytes": {k: v.activation_peak_bytes for k, v in graphs.items()},
        "graphs": {k: asdict(v) for k, v in graphs.items()},
    }


# ------------------------------------------------------------------------------------------ torch (meta) counts
def torch_stage_flops(cfg: Any, width: int, height: int, humans: int, lean: bool = True,
                      activation_itemsize: int = 2) -> dict:
    """FLOPs per deployment stage of the PyTorch model on the meta device (torch FlopCounterMode).

    humans: decoder human tokens / SMPL-X head rows (the export's K slots, or the detected count for the
    reference). lean=False adds the cross-view DPT with final_transform and the rgb DPT (the full reference).
    Returns {"source", "stages": {encoder, decoder, smpl_head}, "total", "params", "weight_fp32_bytes",
    "activation_peak_bytes": {stage: bytes}} where params are those of the modules the stages run (the unused
    ray-map encoder and heads excluded) and activation peaks are eager liveness peaks (attention unfused) at
    `activation_itemsize` bytes per element, the stage's inputs included.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from human3r_edge.export.model import build_model

    m = build_model(cfg, "meta").requires_grad_(False)
    R, K = cfg.mhmr_img_res, int(humans)
    counts: dict[str, int] = {}
    act: dict[str, int] = {}
    live = _LiveBytes(activation_itemsize)
    with torch.no_grad(), FlopCounterMode(display=False) as fc, live:
        enc = m.encode_image(torch.zeros(1, 3, height, width, device="meta"))  # (1, N, Ce)
        dino = m.encode_human(torch.zeros(1, 3, R, R, device="meta"))  # (1, g*g, bd)
        m.detect(dino)
        m.human_mask(dino)
        counts["encoder"], act["encoder"] = fc.get_total_flops(), live.restart()
        idx = torch.zeros(K, dtype=torch.int64, device="meta")
        dino_h, enc_h, pos = m.gather_humans(enc, dino, idx, idx, width)
        prompts = m.fuse_humans(dino_h, enc_h)  # (1, K, D)
        state, mem = m.initial_state()
        pose_q = m.pose_query(enc, mem, False)
        dec = m.decode(enc, pose_q, state, height, width, prompts, pos, ttt3r=True)
        m.update_mem(mem, enc, dec.final_tokens[:, 0:1])
        m.heads(dec.hooks, height, width, cross=not lean, rgb=not lean)
        counts["decoder"], act["decoder"] = fc.get_total_flops() - counts["encoder"], live.restart()
        m.smpl_heads(dec.final_tokens[:, dec.final_tokens.shape[1] - K:], dino_h)
        counts["smpl_head"] = fc.get_total_flops() - counts["encoder"] - counts["decoder"]
        act["smpl_head"] = live.restart()
    params = _executed_params(m, lean)
    return {"source": "torch-meta", "humans": K, "lean": lean, "stages": {k: int(v) for k, v in counts.items()},
            "total": int(sum(counts.values())), "params": params, "weight_fp32_bytes": 4 * params,
            "activation_peak_bytes": act, "activation_itemsize": activation_itemsize}


class _LiveBytes:
    """Context manager tracking bytes of live floating-point tensors created by torch ops (views not counted):
    each output is registered with a weakref finalizer, so freeing is exact for eager execution."""

    def __init__(self, itemsize: int) -> None:
        self.itemsize = itemsize
        self.current = 0
        self.peak = 0
        self._mode: Any = None

    def __enter__(self) -> "_LiveBytes":
        import weakref

        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and t.is_floating_point() and not t._is_view():
                        n = t.numel() * tracker.itemsize
                        tracker.current += n
                        weakref.finalize(t, tracker._free, n)
                tracker.peak = max(tracker.peak, tracker.current)
                return out

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)

    def _free(self, n: int) -> None:
        self.current -= n

    def restart(self) -> int:
        """The peak since the last restart; the next stage's peak starts from what is alive now."""
        peak, self.peak = self.peak, self.current
        return int(peak)


def _executed_params(model: Any, lean: bool) -> int:
    """Parameters + buffers of the modules a (lean) step runs: everything but the ray-map encoder (and, lean,
    the cross/rgb DPTs and final_transform). Alias keys are counted once."""
    skip: tuple[str, ...] = ("patch_embed_ray_map.", "enc_blocks_ray_map.", "enc_norm_ray_map.", "masked_")
    if lean:
        skip += ("downstream_head.dpt_cross.", "downstream_head.dpt_rgb.", "downstream_head.final_transform.")
    seen = set()
    total = 0
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if name.startswith(skip) or id(t) in seen:
            continue
        seen.add(id(t))
        total += int(t.numel())
    return total


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m human3r_edge.benchmarks.flops", description=__doc__.splitlines()[0])
    p.add_argument("export_dir", type=Path)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--fp16", action="store_true", help="count the fp16 graph files where present")
    args = p.parse_args(argv)
    graphs = count_export(args.export_dir, fp16=args.fp16)
    for g in graphs.values():
        top = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in list(g.by_scope.items())[:6])
        print(f"{g.graph:>10}: {g.flops / 1e9:9.2f} GFLOP, weights {g.weight_bytes / 2**20:8.1f} MiB, activation "
              f"peak {g.activation_peak_bytes / 2**20:7.1f} MiB; {top}" + (f"; {len(g.uncounted)} nodes without "
                                                                           "shapes" if g.uncounted else ""))
    s = summarize(graphs)
    if args.json:
        args.json.write_text(json.dumps(s, indent=1))
    print(f"flops | {s['total'] / 1e9:.2f} GFLOP per frame, {s['params'] / 1e6:.1f} M weights in {args.export_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
