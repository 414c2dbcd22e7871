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

import dataclasses
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from human3r_edge.runtime.errors import Human3RError, msg

from .onnx_passes import prune, skeleton
from .trt_ops import fp32_nodes

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


# ------------------------------------------------------------------------------------------------ measuring
def fp16_view(export_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A folder that presents the FP16 files of `export_dir` as a plain export (export.json `file` = the FP16
    file), so any backend runs them unchanged. Files are symlinked; returns `out_dir`."""
    from human3r_edge.runtime.iospec import SPEC_FILE, ExportSpec

    src, out = Path(export_dir).resolve(), Path(out_dir)
    spec = ExportSpec.load(src)
    missing = [g.name for g in spec.graphs if not g.fp16_file]
    if missing:
        raise Human3RError(msg(f"export {src}", "has no FP16 variant for", missing, hint="re-export with --fp16"))
    out.mkdir(parents=True, exist_ok=True)
    names = [spec.initial_state_file] + [g.fp16_file for g in spec.graphs if g.fp16_file]
    for name in names:
        for f in (src / name, src / f"{name}.data"):
            link = out / f.name
            if f.exists() and not link.exists():
                link.symlink_to(f)
    graphs = tuple(dataclasses.replace(g, file=str(g.fp16_file), fp16_file=None) for g in spec.graphs)
    dataclasses.replace(spec, graphs=graphs, extra={**spec.extra, "fp16_view_of": str(src)}).save(out)
    return out


@dataclass
class StreamError:
    """FP16-vs-FP32 differences over one stream of frames (the budgets' metrics)."""

    frames: int = 0
    finite: bool = True  # every fetched FP16 output and the state stayed finite (all frames)
    same_decisions: int = 0  # frames with identical detections, head patches and track ids
    flip_frames: list[int] = field(default_factory=list)  # frames where a discrete decision differed
    # over the frames with the same decisions (a flipped decision feeds the decoder other inputs):
    camera_translation_rel: float = 0.0  # max |t16 - t32| / max |t32| over frames
    camera_rotation_deg: float = 0.0  # max angle of R32^T R16
    smpl_rotation_deg: float = 0.0  # max joint-rotation angle difference (frames with the same detections)
    smpl_transl_abs: float = 0.0  # model units (metres for a real checkpoint)
    vertices_cam_abs: float = 0.0  # max per-vertex distance, camera frame
    vertices_world_abs: float = 0.0  # max per-vertex distance, world frame
    depth_rel: float = 0.0  # max |z16 - z32| / max |z32| of the self-view point maps

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Max rotation angle (degrees) between rotation stacks a, b (..., 3, 3): |Ra - Rb|_F = 2 sqrt(2) sin(t/2),
    which stays accurate for small angles (arccos of the trace has a ~0.03 degree floor in float32)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if not d.size:
        return 0.0
    s = np.sqrt((d * d).sum(axis=(-2, -1))) / (2.0 * math.sqrt(2.0))
    return float(np.degrees(2.0 * np.arcsin(np.clip(s, 0.0, 1.0))).max())


def stream_error(fp32_dir: str | Path, fp16_dir: str | Path, frames: np.ndarray,
                 smplx_model: str | os.PathLike, ttt3r: bool = True, threads: int = 2) -> StreamError:
    """Run the same frames (F, 3, H, W) float32 through the runtime pipeline on ONNX Runtime CPU with the FP32
    and the FP16 graphs, each with its own recurrent state, and measure the differences frame by frame.

    A frame where a discrete decision differs (a detection at the 0.3 threshold, a head location on a patch
    boundary, a track id) is counted in `flip_frames` and left out of the continuous metrics: its decoder ran on
    other inputs. Its effect on the following frames (through the state) stays in."""
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.config import Human3RConfig
    from human3r_edge.runtime.pipeline import FramePipeline, PipelineOptions
    from human3r_edge.runtime.preprocess import pad_image
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    body = SMPLXModel.load(smplx_model)
    opts = PipelineOptions(ttt3r=ttt3r, max_remembered=None)
    res = StreamError()
    t_scale = z_scale = 0.0
    t_err = z_err = 0.0
    with open_backend("ort-cpu", fp32_dir, intra_op_threads=threads) as b32, \
            open_backend("ort-cpu", fp16_dir, intra_op_threads=threads) as b16:
        side = Human3RConfig.from_dict(b32.spec.config).mhmr_img_res
        p32, p16 = FramePipeline(b32, opts), FramePipeline(b16, opts)
        for img in frames:
            mh = pad_image(img, side)[0]
            a, b = p32.step(img, mh), p16.step(img, mh)
            res.frames += 1
            arrays = [b.pose, b.pts3d_self, b.conf_self, *b.smpl.values(), b16.read_state("state"),
                      b16.read_state("mem")]
            res.finite = res.finite and all(bool(np.isfinite(x).all()) for x in arrays)
            t_scale = max(t_scale, float(np.linalg.norm(a.c2w[:3, 3])))
            z_scale = max(z_scale, float(np.abs(a.pts3d_self[..., 2]).max()))
            same = (np.array_equal(a.detections.cells_hw, b.detections.cells_hw)
                    and np.array_equal(a.detections.patch_yx, b.detections.patch_yx)
                    and np.array_equal(a.track_ids, b.track_ids))
            if not same:
                res.flip_frames.append(res.frames - 1)
                continue
            res.same_decisions += 1
            t_err = max(t_err, float(np.linalg.norm(b.c2w[:3, 3] - a.c2w[:3, 3])))
            res.camera_rotation_deg = max(res.camera_rotation_deg, _angle_deg(a.c2w[:3, :3], b.c2w[:3, :3]))
            z_err = max(z_err, float(np.abs(b.pts3d_self[..., 2] - a.pts3d_self[..., 2]).max()))
            if a.detections.count == 0:
                continue
            res.smpl_rotation_deg = max(res.smpl_rotation_deg, _angle_deg(a.smpl["smpl_rotmat"],
                                                                          b.smpl["smpl_rotmat"]))
            res.smpl_transl_abs = max(res.smpl_transl_abs,
                                      float(np.abs(a.smpl["smpl_transl"] - b.smpl["smpl_transl"]).max()))
            sa = body.skin(a.smpl["smpl_rotmat"], a.smpl["smpl_shape"], a.smpl["smpl_expression"],
                           a.smpl["smpl_transl"], a.c2w)
            sb = body.skin(b.smpl["smpl_rotmat"], b.smpl["smpl_shape"], b.smpl["smpl_expression"],
                           b.smpl["smpl_transl"], b.c2w)
            res.vertices_cam_abs = max(res.vertices_cam_abs,
                                       float(np.linalg.norm(sa.v_cam - sb.v_cam, axis=-1).max()))
            if sa.v_world is not None and sb.v_world is not None:
                res.vertices_world_abs = max(res.vertices_world_abs,
                                             float(np.linalg.norm(sa.v_world - sb.v_world, axis=-1).max()))
    res.camera_translation_rel = t_err / t_scale if t_scale > 0 else t_err
    res.depth_rel = z_err / z_scale if z_scale > 0 else z_err
    return res


def graph_errors(fp32_dir: str | Path, fp16_dir: str | Path, frames: np.ndarray, record: int = 4,
                 threads: int = 2) -> dict[str, dict[str, float]]:
    """Per graph output: max |fp16 - fp32| and the max relative error, measured with polygraphy's Comparator on
    the complete inputs each graph received in an FP32 pipeline run of `frames` (the first `record` frames)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator

    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.check import RecordingBackend
    from human3r_edge.runtime.config import Human3RConfig
    from human3r_edge.runtime.iospec import ExportSpec
    from human3r_edge.runtime.pipeline import FramePipeline, PipelineOptions
    from human3r_edge.runtime.preprocess import pad_image

    rec = RecordingBackend(open_backend("ort-cpu", fp32_dir, intra_op_threads=threads), max_frames=record)
    with rec:
        side = Human3RConfig.from_dict(rec.spec.config).mhmr_img_res
        pipe = FramePipeline(rec, PipelineOptions(max_remembered=None))
        for img in frames[:record]:
            pipe.step(img, pad_image(img, side)[0])
    s32, s16 = ExportSpec.load(fp32_dir), ExportSpec.load(fp16_dir)
    out: dict[str, dict[str, float]] = {}
    for g32, g16 in zip(s32.graphs, s16.graphs):
        feeds = rec.records[g32.name]
        runners = [OnnxrtRunner(SessionFromOnnx(str(Path(fp32_dir) / g32.file), providers=["cpu"]), name="fp32"),
                   OnnxrtRunner(SessionFromOnnx(str(Path(fp16_dir) / g16.file), providers=["cpu"]), name="fp16")]
        results = Comparator.run(runners, data_loader=feeds)
        for ref, cand in zip(results[0][1], results[1][1]):
            for name in ref.keys():
                a, b = np.asarray(ref[name], np.float64), np.asarray(cand[name], np.float64)
                diff = np.abs(a - b)
                e = out.setdefault(f"{g32.name}/{name}", {"max_abs": 0.0, "max_rel": 0.0, "ref_max": 0.0})
                e["max_abs"] = max(e["max_abs"], float(diff.max()) if diff.size else 0.0)
                e["max_rel"] = max(e["max_rel"], float((diff / (np.abs(a) + 1e-6)).max()) if diff.size else 0.0)
                e["ref_max"] = max(e["ref_max"], float(np.abs(a).max()) if a.size else 0.0)
    return out


def replay_errors(golden_dir: str | os.PathLike, fp16_dir: str | os.PathLike, reference: str = "golden.npz",
                  smplx_model: str | os.PathLike | None = None) -> tuple[dict[str, float], list[str], bool]:
    """Golden replay on the FP16 graphs (ONNX Runtime CPU): (rel error per float key, mismatching exact keys,
    every float output finite). rel = max|out - ref| / max|ref| as `compare` measures it."""
    from human3r_edge.runtime.compare import compare_dicts
    from human3r_edge.runtime.run import replay_golden

    g = Path(golden_dir)
    out = replay_golden(g, "ort-cpu", preprocessed=True, reference_npz=reference, smplx_model=smplx_model,
                        engines=Path(fp16_dir), intra_op_threads=2)
    with np.load(g / reference, allow_pickle=False) as z:
        ref = {k: z[k] for k in z.files}
    report = compare_dicts(out, ref)
    rel = {r.key: float(r.rel) for r in report.results if r.kind != "exact"}
    exact_bad = [r.key for r in report.results if r.kind == "exact" and not r.ok] + list(report.missing)
    finite = all(bool(np.isfinite(v).all()) for v in out.values() if np.asarray(v).dtype.kind == "f")
    return rel, exact_bad, finite


STREAM_LIMITS = {  # the project's FP16 acceptance limits on the tiny config against FP32 (issue 4)
    "camera_translation_rel": 1e-2,
    "camera_rotation_deg": 0.5,
    "smpl_rotation_deg": 0.5,
    "vertices_cam_abs": 0.01,  # 1 cm in metres (SMPL-X vertices in the camera frame)
}


def _budget(measured: float, floor: float) -> float:
    """Twice the measured error rounded up to 2 significant digits, at least `floor`."""
    v = max(2.0 * float(measured), floor)
    exp = math.floor(math.log10(v))
    return math.ceil(v / 10 ** (exp - 1)) * 10 ** (exp - 1)


def measure_budgets(golden_dir: str | os.PathLike, workdir: str | os.PathLike, frames: int = 200,
                    smplx_model: str | os.PathLike | None = None, log: Any = print) -> dict:
    """Export the golden's checkpoint with FP16 variants, measure FP16 against FP32 and the goldens, and return
    the budgets document (`export/data/fp16_budgets.json`): measured errors and the budgets derived from them."""
    from human3r_edge.runtime.iospec import ExportSpec

    from .assets import synthetic_frames
    from .onnx_export import ExportOptions, export_model, load_source, tool_versions

    g = Path(golden_dir)
    work = Path(workdir)
    smplx = Path(smplx_model) if smplx_model else g.resolve().parent / "smplx_synthetic" / "SMPLX_NEUTRAL.npz"
    with np.load(g / "golden.npz") as z:
        _, _, h, w = z["input/img"].shape
    model, sha, source = load_source(g / "checkpoint.pth", None, False)
    exp = work / "export"
    spec = export_model(model, exp, ExportOptions(int(w), int(h), 4, fp16=True), sha, source, quiet=True)
    view = fp16_view(exp, work / "fp16")
    log(f"exported {spec.config['name']} {w}x{h} with FP16 variants")
    replay: dict[str, float] = {}
    finite = True
    for reference in ("golden.npz", "golden_nottt3r.npz"):
        if not (g / reference).is_file():
            continue
        rel, bad, ok = replay_errors(g, view, reference, smplx)
        if bad:
            raise Human3RError(msg("FP16 replay", f"integer outputs differ from {reference}", bad,
                                   "identical detections, counts and track ids"))
        finite = finite and ok
        for k, v in rel.items():
            replay[k] = max(replay.get(k, 0.0), v)
    log(f"golden replay on FP16: worst {max(replay, key=replay.__getitem__)} rel {max(replay.values()):.3g}")
    imgs = synthetic_frames(int(w), int(h), frames, seed=1)
    stream = stream_error(exp, view, imgs, smplx)
    log(f"{frames} frames FP16 vs FP32: {stream.to_json()}")
    graphs = graph_errors(exp, view, imgs)
    for k, limit in STREAM_LIMITS.items():
        if getattr(stream, k) > limit:
            raise Human3RError(msg("FP16 stream error", f"{k} above the acceptance limit", getattr(stream, k), limit))
    if not (stream.finite and finite):
        raise Human3RError(msg("FP16", "inf or NaN in the outputs or the state"))
    doc = {
        "placeholder": False,
        "what": "FP16 error budgets: twice the errors measured on the tiny golden config (ONNX Runtime CPU, FP16 "
                "graphs of `export --fp16` vs FP32 graphs and vs the goldens), rounded up; see export/fp16.py",
        "measured_with": {"golden": g.name, "frames": frames, "resolution": [int(w), int(h)],
                          "command": f"python -m human3r_edge.export.fp16 --golden {g} --frames {frames}",
                          "versions": tool_versions()},
        "replay": {"": _budget(max(replay.values()), 1e-4),
                   **{p: _budget(max(v for k, v in replay.items() if k.startswith(p)), 1e-4)
                      for p in ("step/", "demo/", "smplx/") if any(k.startswith(p) for k in replay)},
                   **{k: _budget(v, 1e-4) for k, v in sorted(replay.items()) if v > 5e-5}},
        "graphs": {"": {"atol": 1e-2, "rtol": 1e-2},
                   **{k: {"atol": _budget(v["max_abs"], 1e-6), "rtol": _budget(v["max_rel"], 1e-6)}
                      for k, v in sorted(graphs.items())}},
        "stream": {"frames": frames, "min_same_decisions": max(0, stream.same_decisions - max(4, frames // 20)),
                   **{k: min(_budget(getattr(stream, k), 1e-6), STREAM_LIMITS.get(k, math.inf)) for k in
                      ("camera_translation_rel", "camera_rotation_deg", "smpl_rotation_deg", "smpl_transl_abs",
                       "vertices_cam_abs", "vertices_world_abs", "depth_rel")}},
        "limits": STREAM_LIMITS,
        "measured": {"replay_rel": replay, "graphs": graphs, "stream": stream.to_json()},
    }
    return doc


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m human3r_edge.export.fp16",
                                 description="measure FP16 error budgets on a golden (writes the budgets JSON)")
    ap.add_argument("--golden", required=True, type=Path)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data" / "fp16_budgets.json")
    args = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            doc = measure_budgets(args.golden, tmp, args.frames,
                                  log=lambda s: print(f"fp16 | {s}", file=sys.stderr, flush=True))
    except Human3RError as exc:
        print(f"fp16 | {exc}", file=sys.stderr)
        return 2
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"fp16 | budgets -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
