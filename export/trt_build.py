"""TensorRT engine builder, the `build` subcommand: one engine + sidecar per exported graph.

    human3r-edge build --onnx-dir DIR --out DIR [--precision fp16|fp32] [--workspace-mb N] [--timing-cache FILE]
                       [--opt-level N] [--typing auto|weak|strong] [--graphs NAME ...] [--no-op-check]
                       [--streams M]

It branches on the installed TensorRT version:
* TensorRT < 10.12 (JetPack 6: 10.3) builds weakly typed from the FP32 ONNX: BuilderFlag.FP16 plus
  OBEY_PRECISION_CONSTRAINTS, with the layers of `trt_ops.fp32_nodes` (normalisations, softmax, summing
  reductions, exp heads, norm heads, pose translation tails; the reason of each is in the sidecar) pinned to FP32
  by layer precision and output type, plus every normalisation / softmax / reduce layer by type.
* TensorRT >= 10.12 (weak typing deprecated) and 11 (removed) build strongly typed from the exporter's FP16 ONNX
  (`GraphSpec.fp16_file`, FP16 weights with the fragile math already in FP32); no precision flag is ever set on
  a strongly typed network.
fp32 precision builds from the FP32 ONNX with TF32 off. Shapes are static; an optimization profile is added
only for an input with a dynamic dimension. A multi-stream export (`export --streams N`) builds with one profile,
axis 0 of every input min 1 / opt M / max M (`--streams M`, 1 <= M <= N, default N; the sidecar's `streams`). The timing cache is loaded before and saved after every engine.
Every parser result, setter read-back and build result is checked.

The engine directory receives `<graph>.engine`, `<graph>.engine.json` (runtime/backends/trt.EngineSidecar)
and copies of export.json and initial_state.npz, so it is what `--engines DIR` of the runtime expects.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from human3r_edge.runtime.backends.trt import (ENGINE_SUFFIX, EngineSidecar, activation_figures, engine_paths, sha256_file,
                                    verify_engine_io)
from human3r_edge.runtime.cuda_util import gpu_identity, make_logger, require_pycuda, require_tensorrt, trt_version_tuple
from human3r_edge.errors import BackendUnavailable, ConfigError, Human3RError, msg
from human3r_edge.runtime.iospec import SPEC_FILE, ExportSpec, GraphSpec
from human3r_edge.export.trt_ops import PinnedNode, check_onnx_trt_support, errors, fp32_nodes

MIN_WORKSPACE_MB = 16  # NVIDIA's suggested minimum build-time workspace; below it most tactics are skipped
STRONG_TYPING_FROM = (10, 12)  # weak typing deprecated in 10.12, removed in 11


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"  # fp16 | fp32
    workspace_mb: int = 4096
    timing_cache: str | None = None  # default: <out>/timing.cache
    opt_level: int = 3  # builder_optimization_level; 5 made ViT builds slower in peer reports
    typing: str = "auto"  # auto | weak | strong
    graphs: tuple[str, ...] = ()  # default: every graph of the export
    op_check: bool = True  # refuse graphs with TensorRT 10.3 op-support errors before building
    progress: bool = True
    log_level: str = "warning"
    device_id: int = 0
    streams: int | None = None  # multi-stream exports: the largest batch M (1 <= M <= the export's N; default N)

    def __post_init__(self) -> None:
        if self.streams is not None and (not isinstance(self.streams, int) or isinstance(self.streams, bool)
                                         or self.streams < 1):
            raise ConfigError(msg("--streams", "must be an integer >= 1", repr(self.streams),
                                  "1..N, N the export's --streams (default N)"))
        if self.precision not in ("fp16", "fp32"):
            raise ConfigError(msg("--precision", "unknown precision", repr(self.precision), "fp16 or fp32"))
        if self.typing not in ("auto", "weak", "strong"):
            raise ConfigError(msg("--typing", "unknown mode", repr(self.typing), "auto, weak or strong"))
        if not isinstance(self.workspace_mb, int) or self.workspace_mb < MIN_WORKSPACE_MB:
            raise ConfigError(msg("--workspace-mb", "workspace too small", self.workspace_mb,
                                  f">= {MIN_WORKSPACE_MB} MiB (NVIDIA's suggested minimum)",
                                  "give the builder room for its tactics, e.g. --workspace-mb 2048"))
        if not 0 <= int(self.opt_level) <= 5:
            raise ConfigError(msg("--opt-level", "out of range", self.opt_level, "0..5 (default 3)"))


def engine_streams(spec: ExportSpec, requested: int | None) -> int:
    """M, the largest batch of streams the engines take: `--streams` (default the export's N), never above N."""
    n = int(spec.streams)
    m = n if requested is None else int(requested)
    if m > n:
        raise Human3RError(msg("--streams", "more streams than the export batches", m,
                               f"1..{n} (the export's --streams N)" if n > 1 else "1 (a single-stream export)",
                               f"re-export with `human3r-edge export --streams {m}` to batch {m} streams"))
    return m


def profile_shapes(t: Any, streams: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) of input spec `t`: a batched tensor's axis 0 is 1 / M / M, every other dim its spec."""
    if t.batched:
        rest = tuple(t.shape[1:])
        return (1, *rest), (streams, *rest), (streams, *rest)
    shape = tuple(t.shape)
    return shape, shape, shape


def typing_mode(trt_version: str, requested: str) -> str:
    """'weak' or 'strong' for this TensorRT version (see module docstring)."""
    v = trt_version_tuple(trt_version)
    if requested == "weak" and v >= (11, 0):
        raise ConfigError(msg("--typing weak", f"TensorRT {trt_version} has no weak typing", None,
                              "--typing strong (or auto)", "TensorRT 11 removed BuilderFlag.FP16; build from the "
                              "FP16 ONNX instead"))
    if requested == "auto":
        return "strong" if v >= STRONG_TYPING_FROM else "weak"
    return requested


def source_onnx(onnx_dir: Path, g: GraphSpec, precision: str, typing: str) -> Path:
    """The ONNX to build `g` from: the FP16 file for strongly typed FP16 builds, else the FP32 file."""
    if precision == "fp16" and typing == "strong":
        if not g.fp16_file:
            raise Human3RError(msg(f"graph {g.name}", "no FP16 ONNX in export.json (fp16_file)", None,
                                   "an export with FP16 variants for strongly typed TensorRT",
                                   "re-export with the FP16 variant, or on TensorRT 10.12-10.x pass --typing weak"))
        path = onnx_dir / g.fp16_file
    else:
        path = onnx_dir / g.file
    if not path.is_file():
        raise Human3RError(msg(f"graph {g.name}", "ONNX file not found", str(path),
                               hint="run `human3r-edge export ... --out DIR` and pass that DIR as --onnx-dir"))
    return path


# ------------------------------------------------------------------------------------------ FP32 pins
def _float_layer(trt: Any, layer: Any) -> bool:
    """A layer whose precision may be pinned: it computes in floating point. Shape and Constant layers, and any
    layer with a non-float output (indices, shapes, masks), have no FP32 implementation to obey: pinning them
    makes the build fail with "could not find any implementation" under OBEY_PRECISION_CONSTRAINTS."""
    if layer.type in (trt.LayerType.SHAPE, trt.LayerType.CONSTANT):
        return False
    return all(layer.get_output(k).dtype in (trt.float32, trt.float16) for k in range(layer.num_outputs))


def apply_fp32_pins(network: Any, pins: list[PinnedNode]) -> tuple[list[dict], list[str]]:
    """Set precision and float output types to FP32 on the layers of `pins` and on every normalisation /
    softmax / reduce layer. Returns (pinned layer records, pinned ONNX nodes that matched no layer).

    A layer belongs to a pinned node when its name is the node name (or the parser's `<name>_<k>` for extra
    layers of one node) or when it produces one of the node's output tensors.
    """
    import tensorrt as trt

    by_name = {p.name: p for p in pins}
    by_output = {o: p for p in pins for o in p.outputs}
    forced = {trt.LayerType.NORMALIZATION: "normalisation layer", trt.LayerType.SOFTMAX: "softmax layer",
              trt.LayerType.REDUCE: "reduce layer"}
    matched: dict[str, list[str]] = {p.name: [] for p in pins}
    records = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        pin = by_name.get(layer.name)
        if pin is None:
            base = layer.name.rsplit("_", 1)[0] if layer.name.rsplit("_", 1)[-1].isdigit() else None
            pin = by_name.get(base) if base else None
        if pin is None:
            outs = [layer.get_output(k).name for k in range(layer.num_outputs)]
            pin = next((by_output[o] for o in outs if o in by_output), None)
        reason = pin.reason if pin is not None else forced.get(layer.type)
        if reason is None or not _float_layer(trt, layer):
            continue  # FP32 under OBEY_PRECISION_CONSTRAINTS exists only for float math
        layer.precision = trt.float32
        for k in range(layer.num_outputs):
            if layer.get_output(k).dtype in (trt.float32, trt.float16):
                layer.set_output_type(k, trt.float32)
        if pin is not None:
            matched[pin.name].append(layer.name)
        records.append({"layer": layer.name, "node": pin.name if pin else None, "reason": reason})
    return records, [k for k, v in matched.items() if not v]


# ------------------------------------------------------------------------------------------ progress
def make_progress_monitor(enabled: bool) -> Any:
    """A tensorrt.IProgressMonitor driving one tqdm bar per build phase (None when disabled or unsupported)."""
    import tensorrt as trt

    if not enabled or not hasattr(trt, "IProgressMonitor"):
        return None
    from tqdm import tqdm

    class TqdmProgress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = 0 if parent_phase is None else 1 + int(parent_phase in self.bars)
            self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0,
                                         file=sys.stderr, dynamic_ncols=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # returning False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return TqdmProgress()


# ------------------------------------------------------------------------------------------ building
def _load_timing_cache(config: Any, path: Path, logger: Any) -> Any:
    """The timing cache in `path`, or a fresh one when TensorRT refuses it.

    A cache is tied to the GPU and TensorRT version it was timed with: `set_timing_cache(cache, False)` returns
    False for one from another device or version (a cache file shared between machines), and `ignore_mismatch`
    would reuse timings that are wrong for this GPU. So: warn, start fresh (saved back after the build)."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, False):
        return cache
    if data:
        why = "; ".join(logger.errors()[-1:]) or "unreadable"
        print(f"build | timing cache {path} is from another GPU or TensorRT version ({why[:200]}); starting a "
              "fresh one (keep one cache file per device and TensorRT version)", file=sys.stderr)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise Human3RError(msg("timing cache", "could not be set", str(path), hint="; ".join(logger.errors()[-2:])))
    return cache


def _save_timing_cache(config: Any, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(bytes(cache.serialize()))
    tmp.replace(path)


def _verify_network_io(network: Any, g: GraphSpec, path: Path) -> list[str]:
    """Names of inputs with dynamic dims; raises when the parsed network's I/O names differ from the spec."""
    ins = [network.get_input(i) for i in range(network.num_inputs)]
    outs = [network.get_output(i) for i in range(network.num_outputs)]
    got = sorted(t.name for t in ins), sorted(t.name for t in outs)
    want = sorted(t.name for t in g.inputs), sorted(t.name for t in g.outputs)
    if got != want:
        raise Human3RError(msg(str(path), "network I/O differs from export.json", f"inputs {got[0]} outputs {got[1]}",
                               f"inputs {want[0]} outputs {want[1]}", "re-export"))
    return [t.name for t in ins if any(int(d) < 0 for d in t.shape)]


def _build_failure(logger: Any, opts: BuildOptions, graph: str) -> Human3RError:
    errs = logger.errors()
    text = " ".join(errs[-3:]) or "no TensorRT error message"
    if any("workspace" in e.lower() or "out of memory" in e.lower() for e in errs):
        return Human3RError(msg(f"build {graph}", "TensorRT ran out of workspace", text,
                                f"more than --workspace-mb {opts.workspace_mb}",
                                "raise --workspace-mb (e.g. 4096); on an 8 GB Orin close other GPU users"))
    return Human3RError(msg(f"build {graph}", "TensorRT failed to build the engine", text,
                            hint="rerun with --log-level verbose; check `python -m human3r_edge.export.trt_ops`"))


def build_engine(spec: ExportSpec, g: GraphSpec, onnx_dir: Path, out: Path, opts: BuildOptions, typing: str,
                 timing_cache: Path, gpu: tuple[str, str]) -> EngineSidecar:
    """Build, save and verify the engine of graph `g`; returns its sidecar (also written to disk)."""
    import tensorrt as trt

    streams = engine_streams(spec, opts.streams)
    version = str(trt.__version__)
    src = source_onnx(onnx_dir, g, opts.precision, typing)
    if opts.op_check:
        bad = errors(check_onnx_trt_support(src))
        if bad:
            raise Human3RError(msg(f"graph {g.name}", "ONNX has TensorRT op-support errors",
                                   "; ".join(str(p) for p in bad[:5]) + (" ..." if len(bad) > 5 else ""),
                                   "none", "fix the export (or pass --no-op-check to let TensorRT decide)"))
    t0 = time.perf_counter()
    logger = make_logger(opts.log_level)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typing == "strong" else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(src)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise Human3RError(msg(str(src), "TensorRT's ONNX parser failed", "; ".join(errs[:5]) or logger.errors(),
                               hint="check the graph with `python -m human3r_edge.export.trt_ops`"))
    dynamic = _verify_network_io(network, g, src)
    config = builder.create_builder_config()
    if config is None:
        raise Human3RError(msg("create_builder_config", "returned None", logger.errors()))
    workspace = int(opts.workspace_mb) << 20
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    if config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) != workspace:
        raise Human3RError(msg("set_memory_pool_limit", "not applied", workspace))
    config.builder_optimization_level = int(opts.opt_level)
    if config.builder_optimization_level != int(opts.opt_level):
        raise Human3RError(msg("builder_optimization_level", "not applied", opts.opt_level))
    flag_names: list[str] = []
    records: list[dict] = []
    unmatched: list[str] = []
    if opts.precision == "fp32":
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # true FP32: TF32 would move results by ~1e-3
    elif typing == "weak":
        for f in (trt.BuilderFlag.FP16, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS):
            config.set_flag(f)
            if not config.get_flag(f):
                raise Human3RError(msg("set_flag", "not applied", str(f)))
        records, unmatched = apply_fp32_pins(network, fp32_nodes(src))
        if unmatched:
            print(f"build | {g.name}: {len(unmatched)} FP32-pinned ONNX node(s) matched no TensorRT layer "
                  f"(fused or renamed): {unmatched[:5]}", file=sys.stderr)
    flag_names = sorted(n for n in ("FP16", "BF16", "INT8", "TF32", "OBEY_PRECISION_CONSTRAINTS",
                                    "PREFER_PRECISION_CONSTRAINTS")
                        if hasattr(trt.BuilderFlag, n) and config.get_flag(getattr(trt.BuilderFlag, n)))
    batched = [t.name for t in g.inputs if t.batched]
    if set(batched) - set(dynamic):
        raise Human3RError(msg(str(src), "multi-stream inputs with a fixed axis 0", sorted(set(batched) - set(dynamic)),
                               "the dynamic stream axis (ONNX dim_param 'streams')", "re-export with --streams N"))
    if dynamic:  # single-stream: a profile pins any dynamic dim to the spec's shape; multi-stream: axis 0 1..M
        profile = builder.create_optimization_profile()
        for name in dynamic:
            lo, mid, hi = (trt.Dims(list(x)) for x in profile_shapes(g.input(name), streams))
            try:
                profile.set_shape(name, lo, mid, hi)
            except RuntimeError as exc:
                raise Human3RError(msg(f"optimization profile of {name}", "refused", str(exc),
                                       hint="; ".join(logger.errors()))) from exc
        if config.add_optimization_profile(profile) < 0:
            raise Human3RError(msg("add_optimization_profile", "refused", dynamic, hint="; ".join(logger.errors())))
    _load_timing_cache(config, timing_cache, logger)
    monitor = make_progress_monitor(opts.progress)
    if monitor is not None:
        config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise _build_failure(logger, opts, g.name)
    _save_timing_cache(config, timing_cache)
    data = bytes(plan)
    engine_path, _ = engine_paths(out, g.name)
    tmp = engine_path.with_suffix(ENGINE_SUFFIX + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(engine_path)
    engine = trt.Runtime(logger).deserialize_cuda_engine(data)
    if engine is None:
        raise Human3RError(msg(f"engine {engine_path.name}", "just-built engine does not deserialize",
                               "; ".join(logger.errors()[-3:])))
    verify_engine_io(engine, g, f"engine {engine_path.name}", streams=streams)
    mem = getattr(engine, "device_memory_size_v2", None)
    per_context = int(mem if mem is not None else engine.device_memory_size)
    sc = EngineSidecar(
        graph=g.name, engine_file=engine_path.name, engine_sha256=sha256_file(engine_path), engine_bytes=len(data),
        onnx_file=src.name, onnx_sha256=sha256_file(src), onnx_path=str(src.resolve()), tensorrt_version=version,
        gpu_name=gpu[0], compute_capability=gpu[1], precision=opts.precision, typing=typing,
        flags=tuple(flag_names), builder_optimization_level=int(opts.opt_level), workspace_bytes=workspace,
        device_memory_bytes=per_context, activation=activation_figures(per_context, bool(g.state)),
        io=dataclasses.asdict(g), fp32_layers=tuple(records), unmatched_fp32_nodes=tuple(unmatched),
        build_seconds=round(time.perf_counter() - t0, 3),
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        versions={"tensorrt": version, "export": spec.versions}, streams=streams,
    )
    sc.save(out)
    return sc


def build_engines(onnx_dir: str | Path, out: str | Path, opts: BuildOptions = BuildOptions()) -> list[EngineSidecar]:
    """Build every graph of the export in `onnx_dir` into `out` (see module docstring). Needs TensorRT + a GPU."""
    onnx_dir, out = Path(onnx_dir), Path(out)
    if not onnx_dir.is_dir():
        raise Human3RError(msg("--onnx-dir", "not a directory", str(onnx_dir), hint="the --out DIR of `export`"))
    spec = ExportSpec.load(onnx_dir)
    names = list(opts.graphs) or [g.name for g in spec.graphs]
    graphs = [spec.graph(n) for n in names]
    engine_streams(spec, opts.streams)  # a bad --streams fails before TensorRT is even needed
    version = require_tensorrt()
    typing = typing_mode(version, opts.typing)
    for g in graphs:  # fail on a missing file before spending minutes on the first engine
        source_onnx(onnx_dir, g, opts.precision, typing)
    init = onnx_dir / spec.initial_state_file
    if any(g.state for g in graphs) and not init.is_file():
        raise Human3RError(msg("export directory", "missing initial state", str(init), hint="re-run the export"))
    cuda = require_pycuda()
    ctx = cuda.Device(opts.device_id).retain_primary_context()
    ctx.push()
    try:
        gpu = gpu_identity(cuda, opts.device_id)
        out.mkdir(parents=True, exist_ok=True)
        cache = Path(opts.timing_cache) if opts.timing_cache else out / "timing.cache"
        cache.parent.mkdir(parents=True, exist_ok=True)
        sidecars = [build_engine(spec, g, onnx_dir, out, opts, typing, cache, gpu) for g in graphs]
    finally:
        ctx.pop()
        ctx.detach()
    shutil.copy2(onnx_dir / SPEC_FILE, out / SPEC_FILE)
    if init.is_file():
        shutil.copy2(init, out / spec.initial_state_file)
    return sidecars


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx-dir", required=True, help="export directory (export.json + ONNX files)")
    p.add_argument("--out", required=True, help="engine directory to write")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--workspace-mb", type=int, default=4096, help="builder workspace limit (MiB)")
    p.add_argument("--timing-cache", default=None, help="timing cache file (default: OUT/timing.cache)")
    p.add_argument("--opt-level", type=int, default=3, help="builder_optimization_level 0..5")
    p.add_argument("--typing", choices=("auto", "weak", "strong"), default="auto",
                   help="auto: weak below TensorRT 10.12, strong from it")
    p.add_argument("--graphs", nargs="*", default=[], help="only these graphs (default: all)")
    p.add_argument("--no-op-check", action="store_true", help="skip the TensorRT 10.3 op-support check")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--log-level", default="warning", choices=("error", "warning", "info", "verbose"))
    p.add_argument("--streams", type=int, default=None, metavar="M",
                   help="multi-stream exports: the largest batch of streams the engines take (optimization profile "
                        "1..M on axis 0; 1 <= M <= the export's N; default N)")


def main(args: argparse.Namespace) -> int:
    try:
        opts = BuildOptions(precision=args.precision, workspace_mb=args.workspace_mb, timing_cache=args.timing_cache,
                            opt_level=args.opt_level, typing=args.typing, graphs=tuple(args.graphs),
                            op_check=not args.no_op_check, progress=not args.no_progress, log_level=args.log_level,
                            streams=getattr(args, "streams", None))
        t0 = time.perf_counter()
        scs = build_engines(args.onnx_dir, args.out, opts)
    except BackendUnavailable as exc:
        print(f"build | {exc}", file=sys.stderr)
        return 3
    except Human3RError as exc:
        print(f"build | {exc}", file=sys.stderr)
        return 2
    for sc in scs:
        print(f"  {sc.engine_file}: {sc.engine_bytes / 1e6:.1f} MB, device memory {sc.device_memory_bytes / 1e6:.1f} MB, "
              f"{len(sc.fp32_layers)} FP32 layers, {sc.build_seconds:.1f} s")
    print(f"built {len(scs)} engine(s) ({scs[0].precision if scs else '-'}, {scs[0].typing if scs else '-'} typing, "
          f"TensorRT {scs[0].tensorrt_version if scs else '?'}) into {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0
