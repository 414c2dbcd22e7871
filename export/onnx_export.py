"""`human3r-edge export`: trace the encoder, decoder-step and SMPL-X-head graphs to ONNX with their I/O spec.

    human3r-edge export (--checkpoint CKPT [--config NAME] | --config NAME --random-weights [--seed S])
                        --resolution WxH --out DIR [--max-people K] [--lean] [--fp16] [--streams N]
                        [--no-trt-check]

Writes `encoder.onnx`, `decoder.onnx`, `smpl_head.onnx` (opset 17: LayerNormalization is one op; a graph with
more than ~1.8 GB of weights keeps them in `<file>.data`), with `--fp16` also `<graph>.fp16.onnx`, then
`initial_state.npz` and last `export.json` (the I/O spec the runtime reads; its presence marks a finished export).

`--streams N` (N > 1) writes the multi-stream graphs: every input and output gets a leading stream axis, the
ONNX dim_param `streams` (dynamic 1..N at run time; see runtime/iospec.py); they are traced with a batch of 2 so no
batch size is baked into a constant, and export.json records `streams`. initial_state.npz keeps one row.

Tracing uses torch's TorchScript-based ONNX exporter (static shapes, so the traced graph is the whole program);
clean-up passes fold the tracer's static shape arithmetic and give gathers INT32 indices (onnx_passes.py). Every
graph is checked with onnx.checker, its I/O against the spec, and its ops against TensorRT 10.3 (trt_ops.py).

Why three graphs and not four (separate scene and human encoders): the runtime, every backend and the engine
builder run the spec of `runtime/graphs.py`; both encoders always run on every frame and their outputs are
linked straight into the decoder, so one engine runs them back to back on one stream with nothing gained by a
split, while a split adds a graph boundary, a binding and a launch per frame. The one reason to split, the 2 GB
protobuf limit of the 672L/896L encoders (2.4 GB in FP32), is handled by external data.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.graphs import DECODER, LEAN_DROPPED, check_resolution, graph_specs
from human3r_edge.runtime.iospec import SPEC_FILE, ExportSpec, GraphSpec

OPSET = 17  # LayerNormalization is one op from 17; TensorRT 10.3's parser takes opsets up to 20
TRACE_BATCH = 2  # the batch multi-stream graphs are traced with
IR_VERSION = 8  # what opset 17 needs; read by ONNX Runtime 1.31 and TensorRT 10.3's parser
_ONNX_TYPES = {1: "float32", 10: "float16", 6: "int32", 7: "int64", 9: "bool", 2: "uint8"}


@dataclass(frozen=True)
class ExportOptions:
    """What to export: image size, human slots, heads, FP16 variants."""

    width: int
    height: int
    max_people: int = 16  # K human slots of the decoder
    lean: bool = False  # drop the heads the runtime never uses (cross-view DPT + final_transform, rgb DPT)
    fp16: bool = False  # also write <graph>.fp16.onnx (FP16 weights, fragile math in FP32)
    opset: int = OPSET
    trt_check: bool = True  # run the TensorRT 10.3 op-support checker on every written graph
    streams: int = 1  # N > 1: multi-stream graphs, a dynamic stream axis 0 of 1..N on every tensor

    def __post_init__(self) -> None:
        check_resolution(self.width, self.height)
        if not isinstance(self.streams, int) or isinstance(self.streams, bool) or self.streams < 1:
            raise Human3RError(msg("--streams", "N must be an integer >= 1", repr(self.streams), ">= 1 (default 1)",
                                   "N is the most camera streams one set of engines batches"))
        if not isinstance(self.max_people, int) or isinstance(self.max_people, bool) or self.max_people < 1:
            raise Human3RError(msg("--max-people", "K must be an integer >= 1", self.max_people,
                                   ">= 1 (default 16)", "K is the number of static human slots of the decoder"))
        if not 17 <= self.opset <= 20:
            raise Human3RError(msg("opset", "unsupported", self.opset, "17..20 (TensorRT 10.3 parses <= 20)"))


def parse_streams(text: Any) -> int:
    """'4' -> 4; a clear error for anything that is not an integer >= 1."""
    try:
        n = int(str(text).strip())
    except ValueError as exc:
        raise Human3RError(msg("--streams", "not an integer", repr(text), "an integer N >= 1 (default 1)",
                               "N is the most camera streams one set of engines batches")) from exc
    if n < 1:
        raise Human3RError(msg("--streams", "N must be an integer >= 1", n, ">= 1 (default 1)",
                               "N is the most camera streams one set of engines batches"))
    return n


def parse_resolution(text: str) -> tuple[int, int]:
    """'512x288' -> (512, 288); a clear error for anything else (multiples of 16 are checked by ExportOptions)."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError as exc:
        raise Human3RError(msg("--resolution", "not WxH", repr(text), "e.g. 512x288",
                               "width x height of the CUT3R image, both multiples of 16")) from exc
    return w, h


class _Log:
    """Step lines on stderr with elapsed time and peak RSS (the progress display of long exports)."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total, self.quiet, self.step, self.t0 = total, quiet, 0, time.perf_counter()

    def __call__(self, text: str, advance: bool = True) -> None:
        if advance:
            self.step += 1
        if not self.quiet:
            print(f"export | [{self.step}/{self.total}] {text} ({time.perf_counter() - self.t0:.1f} s, "
                  f"peak RSS {peak_rss_bytes() / 2**30:.2f} GiB)", file=sys.stderr, flush=True)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    import onnx
    import torch

    from human3r_edge import __version__

    v = {"human3r_edge": __version__, "python": platform.python_version(), "torch": torch.__version__,
         "onnx": onnx.__version__, "numpy": np.__version__}
    for dist in ("onnxruntime-gpu", "onnxscript"):
        try:
            v[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return v


# ------------------------------------------------------------------------------------------------ one graph
STREAM_DIM = "streams"  # the ONNX dim_param of the stream axis of multi-stream graphs


def onnx_dims(spec_tensor: Any) -> tuple[int | str, ...]:
    """The ONNX dims a spec tensor has in an exported graph: axis 0 of a batched tensor is `STREAM_DIM`."""
    dims: tuple[int | str, ...] = tuple(int(d) for d in spec_tensor.shape)
    return ((STREAM_DIM,) + dims[1:]) if spec_tensor.batched else dims


def verify_io(model: Any, spec: GraphSpec) -> None:
    """The ONNX graph's inputs and outputs equal the spec's names, dtypes and shapes, in order (a batched
    tensor's axis 0 is the dim_param `streams`)."""
    def sig(values: Any) -> list[tuple[str, str, tuple[int | str, ...]]]:
        out = []
        for v in values:
            tt = v.type.tensor_type
            out.append((v.name, _ONNX_TYPES.get(tt.elem_type, str(tt.elem_type)),
                        tuple(str(d.dim_param) if d.HasField("dim_param") else int(d.dim_value)
                              for d in tt.shape.dim)))
        return out

    init = {t.name for t in model.graph.initializer}
    got_in = sig([i for i in model.graph.input if i.name not in init])
    got_out = sig(model.graph.output)
    want_in = [(t.name, t.dtype, onnx_dims(t)) for t in spec.inputs]
    want_out = [(t.name, t.dtype, onnx_dims(t)) for t in spec.outputs]
    if got_in != want_in or got_out != want_out:
        raise Human3RError(msg(f"graph {spec.name}", "traced I/O differs from the spec",
                               f"inputs {got_in} outputs {got_out}", f"inputs {want_in} outputs {want_out}",
                               "a bug in export/graphs_torch.py"))


def _declare_batched_outputs(model: Any, spec: GraphSpec, traced: list[tuple[int, ...]], batch: int) -> None:
    """Give the outputs of a multi-stream graph their spec dims (`streams`, static dims): ONNX shape inference
    cannot follow the dynamic stream axis through the tracer's shape arithmetic, so the exporter names the
    other dims itself. Checked first against the output shapes of the traced call (at `batch` streams)."""
    want = [t.shape_for(batch) for t in spec.outputs]
    if traced != want:
        raise Human3RError(msg(f"graph {spec.name}", "traced output shapes differ from the spec", traced,
                               f"{want} (at {batch} streams)", "a bug in export/graphs_torch.py"))
    by_name = {t.name: t for t in spec.outputs}
    for out in model.graph.output:
        t = by_name.get(out.name)
        if t is None:
            continue
        dims = out.type.tensor_type.shape.dim
        del dims[:]
        for d in onnx_dims(t):
            dim = dims.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d


def trace_graph(spec: GraphSpec, module: Any, workdir: Path, opset: int, weights: bool = True) -> Any:
    """Trace `module` to ONNX in `workdir`, fold, INT32-index and verify it -> ModelProto with weights loaded.

    weights=False traces the structure only: no initializers are written, the weights become extra graph inputs
    after the spec's (op and type checks of the full-size presets without writing gigabytes).
    """
    import onnx
    import torch
    from onnx.external_data_helper import load_external_data_for_model

    from human3r_edge.export.graphs_torch import example_inputs
    from human3r_edge.export.onnx_passes import fold_static, int32_gather_indices, load_small_external_data

    path = workdir / f"{spec.name}.onnx"
    batched = [t.name for t in spec.inputs + spec.outputs if t.batched]
    # a batch of 2 (never 1, which the tracer would broadcast away; never N, so N is baked nowhere)
    batch = TRACE_BATCH if batched else None
    dynamic = {name: {0: STREAM_DIM} for name in batched} or None
    traced: list[tuple[int, ...]] = []  # output shapes of the traced call

    def record(_mod: Any, _args: Any, outs: Any) -> None:
        traced[:] = [tuple(int(d) for d in o.shape) for o in (outs if isinstance(outs, (tuple, list)) else [outs])]

    hook = module.register_forward_hook(record)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # "legacy TorchScript-based exporter"
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(module, example_inputs(spec, batch=batch), str(path),
                              input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
                              opset_version=opset, dynamo=False, do_constant_folding=True, export_params=weights,
                              dynamic_axes=dynamic)
    finally:
        hook.remove()
    model = onnx.load(str(path), load_external_data=False)
    load_small_external_data(model, workdir)
    fold_static(model)
    int32_gather_indices(model)
    if batched:
        _declare_batched_outputs(model, spec, traced, TRACE_BATCH)
    if not weights:
        extra = [i for i in model.graph.input if i.name not in {t.name for t in spec.inputs}]
        del model.graph.input[len(spec.inputs):]
        verify_io(model, spec)
        model.graph.input.extend(extra)
        return model
    verify_io(model, spec)
    load_external_data_for_model(model, str(workdir))
    model.ir_version = IR_VERSION
    model.producer_name, model.producer_version = "human3r-edge", tool_versions()["human3r_edge"]
    return model


# ------------------------------------------------------------------------------------------------ export
def export_model(model: Any, out_dir: str | os.PathLike, opts: ExportOptions, checkpoint_sha256: str | None = None,
                 source: dict | None = None, quiet: bool = False) -> ExportSpec:
    """Export `model` (a loaded Human3R, eval mode, CPU) into `out_dir`; returns the written ExportSpec.

    `source` (plain data) is recorded in export.json `extra.source`; the torch backend rebuilds the model from it.
    Files in `out_dir` with the same names are replaced; export.json is written last.
    """
    import torch

    from human3r_edge.export.fp16 import convert_to_fp16
    from human3r_edge.export.graphs_torch import build_graphs
    from human3r_edge.export.onnx_passes import check_model, save_model, weight_bytes

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Human3RError(msg(f"--out {out}", "cannot create the export folder", repr(exc))) from exc
    (out / SPEC_FILE).unlink(missing_ok=True)  # an interrupted export must not look finished
    cfg = model.cfg
    log = _Log(3 * (2 + opts.fp16) + 2, quiet)
    t0 = time.perf_counter()
    graphs = build_graphs(model, opts.width, opts.height, opts.max_people, opts.lean, streams=opts.streams)
    specs: list[GraphSpec] = []
    extra: dict[str, Any] = {"source": source or {}, "ir_version": IR_VERSION, "files": {}, "fp16": {},
                             "trt_ops": {}, "exporter": f"torch.onnx TorchScript tracer (torch {torch.__version__})"}
    for spec, module in graphs:
        with tempfile.TemporaryDirectory(dir=out, prefix=f".{spec.name}-") as tmp:
            log(f"{spec.name}: tracing")
            onnx_model = trace_graph(spec, module, Path(tmp), opts.opset)
        files = save_model(onnx_model, out / spec.file)
        check_model(out / spec.file)
        log(f"{spec.name}: {weight_bytes(onnx_model) / 1e6:.1f} MB of weights, {len(onnx_model.graph.node)} nodes "
            f"-> {spec.file}")
        extra["files"].update({f.name: f.stat().st_size for f in files})
        if opts.fp16:
            fp16_model, report = convert_to_fp16(onnx_model)
            del onnx_model
            name = spec.file.replace(".onnx", ".fp16.onnx")
            files = save_model(fp16_model, out / name)
            check_model(out / name)
            extra["files"].update({f.name: f.stat().st_size for f in files})
            extra["fp16"][spec.name] = report.to_json()
            spec = dataclasses.replace(spec, fp16_file=name)
            log(f"{spec.name}: FP16 variant, {report.fp32_nodes} nodes kept FP32 -> {name}")
            del fp16_model
        else:
            del onnx_model
        gc.collect()
        specs.append(spec)
    if opts.trt_check:
        extra["trt_ops"] = _trt_check(out, specs)
        bad = {f: r for f, r in extra["trt_ops"].items() if r["errors"]}
        log(f"TensorRT 10.3 op support: {'PASSED' if not bad else 'FAILED ' + json.dumps(bad)}")
    else:
        log("TensorRT op check skipped (--no-trt-check)")
    with torch.no_grad():
        state, mem = model.initial_state()
    dec = next(s for s in specs if s.name == DECODER)
    init = {p.input: v.detach().cpu().numpy().astype(np.float32) for p, v in zip(dec.state, (state, mem))}
    for p in dec.state:  # one row (1, ...) for every stream, also in multi-stream exports
        dec.input(p.input).check(init[p.input], "initial state", batch=1 if dec.input(p.input).batched else None)
    _savez(out / "initial_state.npz", init)
    extra["seconds"] = round(time.perf_counter() - t0, 2)
    extra["peak_rss_bytes"] = peak_rss_bytes()
    spec_out = ExportSpec(graphs=tuple(specs), config=cfg.to_dict(), resolution=(opts.width, opts.height),
                          max_people=opts.max_people, opset=opts.opset, checkpoint_sha256=checkpoint_sha256,
                          lean=opts.lean, dropped_outputs=LEAN_DROPPED if opts.lean else (),
                          versions=tool_versions(), extra=extra, streams=opts.streams)
    spec_out.save(out)
    from human3r_edge.runtime.integrity import write_checksums

    write_checksums(out, [SPEC_FILE, "initial_state.npz", *extra["files"]])  # `run` verifies every byte
    log(f"wrote {SPEC_FILE}, initial_state.npz and checksums.sha256")
    return spec_out


def export_structure(config: str, width: int, height: int, max_people: int = 16, lean: bool = False,
                     seed: int = 0, streams: int = 1) -> dict[str, Any]:
    """The traced and cleaned graphs of a preset without their weights ({graph: ModelProto}), for op and type
    checks of the full-size presets. The model gets seeded random weights like `--random-weights` (all-zero
    weights would let the tracer merge identical initializers into another graph); the tracer runs it once;
    nothing is written but small temporary files."""
    from human3r_edge.runtime.config import get_config

    from human3r_edge.export.assets import randomize_
    from human3r_edge.export.graphs_torch import build_graphs
    from human3r_edge.export.model import build_model

    opts = ExportOptions(width, height, max_people, lean, streams=streams)
    model = build_model(get_config(config))
    randomize_(model, seed)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec, module in build_graphs(model, opts.width, opts.height, opts.max_people, lean, streams=streams):
            d = Path(tmp) / spec.name
            d.mkdir()
            out[spec.name] = trace_graph(spec, module, d, opts.opset, weights=False)
    return out


def _trt_check(out: Path, specs: list[GraphSpec]) -> dict[str, dict]:
    from human3r_edge.export.trt_ops import check_onnx_trt_support, errors

    result = {}
    for s in specs:
        for name in [s.file] + ([s.fp16_file] if s.fp16_file else []):
            probs = check_onnx_trt_support(out / name)
            errs = errors(probs)
            result[name] = {"errors": len(errs), "warnings": sum(p.severity == "warning" for p in probs),
                            "first_errors": [str(p) for p in errs[:5]]}
    return result


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    savez: Any = np.savez
    savez(tmp, **arrays)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ sources
def load_source(checkpoint: str | os.PathLike | None, config: str | None, random_weights: bool, seed: int = 0,
                log: Callable[[str], None] | None = None) -> tuple[Any, str | None, dict]:
    """(model, checkpoint sha256 or None, source record) from a checkpoint or seeded random weights.

    With a checkpoint, `config` (a preset name) asserts its variant: a file of another variant is refused.
    """
    from human3r_edge.runtime.config import get_config

    if checkpoint is not None and random_weights:
        raise Human3RError(msg("export", "--checkpoint and --random-weights exclude each other",
                               hint="export a checkpoint, or --config NAME --random-weights"))
    if checkpoint is None and not random_weights:
        raise Human3RError(msg("export", "no weights given", None, "--checkpoint CKPT or --config NAME "
                               "--random-weights", "random weights must be asked for explicitly"))
    if checkpoint is None:
        if config is None:
            raise Human3RError(msg("export --random-weights", "needs --config", None,
                                   "one of tiny, 672S, 672B, 672L, 896L"))
        cfg = get_config(config)
        from human3r_edge.export.assets import random_model

        if log:
            log(f"random {cfg.name} weights (seed {seed}, untrained)")
        model, _ = random_model(cfg, seed, calibrate=False)
        return model, None, {"kind": "random", "config": cfg.name, "seed": int(seed), "calibrated": False}
    from human3r_edge.export.checkpoint import load_checkpoint, load_state_dict_into
    from human3r_edge.export.model import build_model

    want = get_config(config) if config is not None else None
    if log:
        log(f"loading {checkpoint}")
    ckpt = load_checkpoint(checkpoint, want)
    if ckpt.config is None:
        raise Human3RError(msg(f"checkpoint {checkpoint}", "carries no config (a bare state dict)", None,
                               "--config NAME for it", "pass --config 896L (or the preset it is)"))
    # a meta model takes the file's tensors as its parameters: the weights are in memory once, not twice
    model = build_model(ckpt.config, device="meta")
    load_state_dict_into(model, ckpt.state_dict, source=str(checkpoint))
    ckpt.state_dict = {}
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise Human3RError(msg(f"checkpoint {checkpoint}", "tensors left unloaded", left[:10]))
    return model.eval(), ckpt.sha256, {"kind": "checkpoint", "path": str(Path(checkpoint).resolve()),
                                       "sha256": ckpt.sha256}


def _remove_if_new(out: Path, existed: bool) -> None:
    """After a failed export: remove --out when this export created it (never a folder that was there)."""
    if not existed and out.is_dir():
        import shutil

        shutil.rmtree(out, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=None, metavar="CKPT", help="Human3R checkpoint (.pth, "
                   ".safetensors)")
    p.add_argument("--config", default=None, help="preset (tiny, 672S, 672B, 672L, 896L): with --random-weights "
                   "the model to build; with --checkpoint the variant the file must be")
    p.add_argument("--random-weights", action="store_true", help="seeded random (untrained) weights")
    p.add_argument("--seed", type=int, default=0, help="seed of --random-weights")
    p.add_argument("--resolution", required=True, help="WxH of the CUT3R image, multiples of 16 (e.g. 512x288)")
    p.add_argument("--out", required=True, type=Path, help="export folder")
    p.add_argument("--max-people", type=int, default=16, metavar="K", help="human slots of the decoder (16)")
    p.add_argument("--lean", action="store_true", help="drop the heads the runtime does not use (pts3d_other, "
                   "conf_other, rgb: cross-view DPT with final_transform, rgb DPT)")
    p.add_argument("--fp16", action="store_true", help="also write <graph>.fp16.onnx (FP16 weights, fragile math "
                   "FP32) for strongly typed TensorRT")
    p.add_argument("--streams", default="1", metavar="N", help="the most camera streams one set of graphs batches "
                   "(1): N > 1 gives every input and output a dynamic stream axis 0 of 1..N")
    p.add_argument("--no-trt-check", action="store_true", help="skip the TensorRT 10.3 op-support check")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _check_out(out: Path) -> bool:
    """--out before the (slow) checkpoint load: a folder, or creatable. Returns whether it exists already."""
    if out.exists() and not out.is_dir():
        raise Human3RError(msg(f"--out {out}", "exists and is not a folder", hint="give a folder path for --out"))
    parent = out if out.exists() else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise Human3RError(msg(f"--out {out}", "not writable", f"{parent} is not a writable folder",
                               hint="choose another --out"))
    return out.exists()


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    existed = True
    try:
        w, h = parse_resolution(args.resolution)
        opts = ExportOptions(w, h, args.max_people, args.lean, args.fp16, trt_check=not args.no_trt_check,
                             streams=parse_streams(getattr(args, "streams", 1)))
        existed = _check_out(Path(args.out))
        if args.checkpoint is not None and not Path(args.checkpoint).is_file():
            raise Human3RError(msg(f"--checkpoint {args.checkpoint}", "file not found"))
        say = None if args.quiet else (lambda s: print(f"export | {s}", file=sys.stderr, flush=True))
        try:
            model, sha, source = load_source(args.checkpoint, args.config, args.random_weights, args.seed, say)
        except (Human3RError, KeyboardInterrupt, ModuleNotFoundError):
            raise
        except Exception as exc:  # whatever else a damaged checkpoint provokes: still the user's file
            if args.checkpoint is None:
                raise
            raise Human3RError(msg(f"checkpoint {args.checkpoint}", "cannot be loaded",
                                   f"{type(exc).__name__}: {str(exc)[:300]}", hint="the file is damaged or not a "
                                   "Human3R checkpoint: download it again (compare its sha256)")) from exc
        spec = export_model(model, args.out, opts, sha, source, quiet=args.quiet)
    except Human3RError as exc:
        _remove_if_new(Path(args.out), existed)
        print(f"human3r-edge export | {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _remove_if_new(Path(args.out), existed)
        print(f"human3r-edge export | interrupted; {args.out} holds no finished export", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # torch / onnx: the [export] extra is not installed
        _remove_if_new(Path(args.out), existed)
        print("human3r-edge export | " + msg("exporting", "needs the [export] extra", f"no module {exc.name!r}",
                                             hint="pip install 'human3r-edge[export]' (from the repository: "
                                             "pip install -e '.[export]'; README: which torch to install)"),
              file=sys.stderr)
        return 3
    bad = [f for f, r in spec.extra.get("trt_ops", {}).items() if r["errors"]]
    size = sum(spec.extra["files"].values())
    print(f"export | {spec.config['name']} {w}x{h}, K={opts.max_people}{', lean' if opts.lean else ''}"
          f"{f', streams={opts.streams}' if opts.streams > 1 else ''}"
          f"{', fp16' if opts.fp16 else ''}: {len(spec.extra['files'])} files, {size / 1e6:.1f} MB -> {args.out} in "
          f"{time.perf_counter() - t0:.1f} s, peak RSS {peak_rss_bytes() / 2**30:.2f} GiB"
          + (f"; TensorRT op check FAILED for {bad}" if bad else ""))
    return 0
