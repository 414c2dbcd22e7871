"""Native TensorRT backend: engines run with execute_async_v3 on one stream, state held on the device.

Device buffers are allocated once at activation and bound by tensor name with set_tensor_address:
* every output (except state outputs) has one buffer; a linked input is bound to its producer's buffer;
* every host input has a device buffer fed from a pinned host staging buffer;
* every state pair (state/state_out, mem/mem_out) has two buffers A and B. A frame reads `current` and writes the
  other one, then they swap (two set_tensor_address calls), so an input never aliases an output. Reset is a
  device-to-device copy from the initial state uploaded once at activation.
* only the requested outputs are copied back, through pinned buffers.
Optional CUDA graphs (`cuda_graph=True`): one graph per set of bound addresses, i.e. two for the ping-pong parity
of the decoder, each with its own execution context; each is captured after one plain warm-up enqueue with the
same addresses, with no allocation inside the capture.

Engines are refused when their sidecar (written by `human3r-edge build`) does not match this TensorRT version,
this GPU, the ONNX they were built from (when it is reachable) or the engine file's own SHA-256.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.runtime.cuda_util import CudaGraphs, gpu_identity, make_logger, require_pycuda, require_tensorrt
from human3r_edge.errors import BackendUnavailable, ConfigError, Human3RError, msg
from human3r_edge.runtime.integrity import sha256_file
from human3r_edge.runtime.iospec import ExportSpec, GraphSpec
from human3r_edge.runtime.backends.base import Backend, OnDevice, PingPong

SIDECAR_FORMAT = 1
ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".engine.json"


def activation_figures(per_context_bytes: int, has_state: bool) -> dict[str, int]:
    """Activation (scratch) memory of one engine in both run modes, for its sidecar (issue 13, risk 9).

    Enqueue mode runs one execution context per engine. CUDA-graph mode runs one per ping-pong slot: two for an
    engine with state pairs (the bound addresses alternate), one otherwise. With TensorRT's default allocation
    every context owns `per_context_bytes`; TrtBackend instead gives all contexts of all engines one shared
    USER_MANAGED block (`set_device_memory`) of the largest engine's size, so this engine needs its
    `per_context_bytes` once in either mode."""
    per = int(per_context_bytes)
    graph_contexts = 2 if has_state else 1
    return {"bytes_per_context": per, "enqueue_contexts": 1, "cuda_graph_contexts": graph_contexts,
            "enqueue_per_context_bytes": per, "cuda_graph_per_context_bytes": graph_contexts * per,
            "enqueue_shared_bytes": per, "cuda_graph_shared_bytes": per}


def _activation_bytes(engine: Any) -> int:
    """Activation (scratch) memory one execution context of `engine` needs."""
    v2 = getattr(engine, "device_memory_size_v2", None)
    return int(v2 if v2 is not None else engine.device_memory_size)


def free_pinned(arr: Any) -> None:
    """Free a pycuda page-locked array now (its `.base` is the PagelockedHostAllocation); drop the array after."""
    free = getattr(getattr(arr, "base", None), "free", None)
    if callable(free):
        free()


def engine_paths(directory: Path, graph: str) -> tuple[Path, Path]:
    return directory / f"{graph}{ENGINE_SUFFIX}", directory / f"{graph}{SIDECAR_SUFFIX}"


# ------------------------------------------------------------------------------------------ sidecar
@dataclass(frozen=True)
class EngineSidecar:
    """What an engine was built from and for; written next to `<graph>.engine` as `<graph>.engine.json`."""

    graph: str
    engine_file: str
    engine_sha256: str
    engine_bytes: int
    onnx_file: str  # file name inside the export directory (the FP16 file for strongly typed builds)
    onnx_sha256: str
    onnx_path: str  # absolute path at build time (checked again when it still exists)
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # 'major.minor'
    precision: str  # fp16 | fp32
    typing: str  # weak | strong
    flags: tuple[str, ...]
    builder_optimization_level: int
    workspace_bytes: int
    device_memory_bytes: int  # engine.device_memory_size_v2 (or device_memory_size)
    io: dict  # the GraphSpec of export.json
    activation: dict = field(default_factory=dict)  # activation_figures(): both run modes (empty: older builds)
    fp32_layers: tuple[dict, ...] = ()  # {node, op, reason, layers}
    unmatched_fp32_nodes: tuple[str, ...] = ()
    build_seconds: float = 0.0
    created_utc: str = ""
    versions: dict = field(default_factory=dict)
    format: int = SIDECAR_FORMAT
    streams: int = 1  # M: the largest batch of streams (optimization profile 1..M on axis 0; 1 = single-stream)

    def save(self, directory: Path) -> Path:
        path = Path(directory) / f"{self.graph}{SIDECAR_SUFFIX}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        os.replace(tmp, path)
        return path

    @staticmethod
    def load(path: Path) -> "EngineSidecar":
        if not path.is_file():
            raise Human3RError(msg(f"engine sidecar {path.name}", "missing", str(path),
                                   "the JSON written next to the engine by `human3r-edge build`",
                                   "rebuild: human3r-edge build --onnx-dir ONNX_DIR --out ENGINE_DIR"))
        try:
            d = json.loads(path.read_text())
            known = {f.name for f in dataclasses.fields(EngineSidecar)}
            d = {k: v for k, v in d.items() if k in known}
            d["flags"] = tuple(d.get("flags", ()))
            d["fp32_layers"] = tuple(d.get("fp32_layers", ()))
            d["unmatched_fp32_nodes"] = tuple(d.get("unmatched_fp32_nodes", ()))
            sc = EngineSidecar(**d)
        except (ValueError, TypeError) as exc:
            raise Human3RError(msg(str(path), "corrupt engine sidecar", repr(exc),
                                   hint="rebuild: human3r-edge build --onnx-dir ONNX_DIR --out ENGINE_DIR")) from exc
        if sc.format != SIDECAR_FORMAT:
            raise Human3RError(msg(str(path), "unknown sidecar format", sc.format, SIDECAR_FORMAT,
                                   "rebuild with this version of human3r-edge"))
        return sc


def _rebuild_hint(sc: EngineSidecar) -> str:
    src = str(Path(sc.onnx_path).parent) if sc.onnx_path else "ONNX_DIR"
    return f"engines are tied to one TensorRT version, GPU and ONNX: rebuild on this machine with " \
           f"`human3r-edge build --onnx-dir {src} --out ENGINE_DIR`"


def verify_sidecar(sc: EngineSidecar, engine_path: Path, graph: GraphSpec, tensorrt_version: str,
                   gpu: tuple[str, str] | None, onnx_dir: Path | None = None) -> None:
    """Refuse an engine built for another TensorRT, GPU, ONNX or I/O spec, or whose file is corrupt/truncated.

    gpu: (name, 'major.minor') of this device, or None to skip the GPU check.
    onnx_dir: export directory to hash the source ONNX in; else the build-time path is checked if it exists.
    """
    what = f"engine {engine_path.name}"
    if not engine_path.is_file():
        raise Human3RError(msg(what, "missing", str(engine_path), hint=_rebuild_hint(sc)))
    size = engine_path.stat().st_size
    if size != sc.engine_bytes or sha256_file(engine_path) != sc.engine_sha256:
        raise Human3RError(msg(what, "corrupt or truncated (SHA-256 differs from its sidecar)",
                               f"{size} bytes", f"{sc.engine_bytes} bytes with sha256 {sc.engine_sha256[:16]}...",
                               _rebuild_hint(sc)))
    if sc.tensorrt_version != tensorrt_version:
        raise Human3RError(msg(what, "built with another TensorRT version", sc.tensorrt_version,
                               f"TensorRT {tensorrt_version} (this machine)", _rebuild_hint(sc)))
    if gpu is not None and (sc.gpu_name, sc.compute_capability) != tuple(gpu):
        raise Human3RError(msg(what, "built for another GPU", f"{sc.gpu_name} (sm {sc.compute_capability})",
                               f"{gpu[0]} (sm {gpu[1]})", _rebuild_hint(sc)))
    spec_io = dataclasses.asdict(graph)

    def norm(io: dict) -> dict:  # `batched` false is the default (sidecars written before it existed lack it)
        out = json.loads(json.dumps({k: io.get(k) for k in ("inputs", "outputs", "state")}))
        for k in ("inputs", "outputs"):
            for t in out.get(k) or ():
                if isinstance(t, dict) and not t.get("batched", False):
                    t.pop("batched", None)
        return out

    if norm(sc.io) != norm(spec_io):
        raise Human3RError(msg(what, "I/O differs from export.json", sc.io.get("file"), graph.file,
                               "export.json and the engines come from different exports; " + _rebuild_hint(sc)))
    onnx = (Path(onnx_dir) / sc.onnx_file) if onnx_dir is not None else Path(sc.onnx_path)
    if onnx_dir is not None and not onnx.is_file():
        raise Human3RError(msg(what, "source ONNX not found in --onnx-dir", str(onnx), hint=_rebuild_hint(sc)))
    if onnx.is_file() and sha256_file(onnx) != sc.onnx_sha256:
        raise Human3RError(msg(what, "built from a different ONNX", f"{onnx} has sha256 "
                               f"{sha256_file(onnx)[:16]}...", f"sha256 {sc.onnx_sha256[:16]}...", _rebuild_hint(sc)))


_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
           "UINT8": "uint8", "INT8": "int8"}


def dtype_name(trt_dtype: Any) -> str:
    """numpy dtype name of a tensorrt.DataType."""
    key = str(getattr(trt_dtype, "name", None) or str(trt_dtype).split(".")[-1])
    return _DTYPES.get(key, key.lower())


def verify_engine_io(engine: Any, graph: GraphSpec, what: str, streams: int = 1) -> None:
    """Engine tensor names, modes, shapes and dtypes must equal the graph spec. A batched (multi-stream) input
    must be dynamic on axis 0 with the profile 1 / `streams` / `streams` there and the spec's other dims."""
    import tensorrt as trt

    want = {t.name: ("input", t) for t in graph.inputs} | {t.name: ("output", t) for t in graph.outputs}
    problems = []
    seen = set()
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        seen.add(name)
        if name not in want:
            problems.append(f"unexpected tensor {name}")
            continue
        kind, t = want[name]
        mode = engine.get_tensor_mode(name)
        if (mode == trt.TensorIOMode.INPUT) != (kind == "input"):
            problems.append(f"{name} is not an {kind}")
        shape = tuple(engine.get_tensor_shape(name))
        if t.batched and mode == trt.TensorIOMode.INPUT:
            prof = [tuple(int(v) for v in p) for p in engine.get_tensor_profile_shape(name, 0)] \
                if shape and int(shape[0]) < 0 else []
            rest = tuple(t.shape[1:])
            expect = [(1, *rest), (streams, *rest), (streams, *rest)]
            if prof != expect:
                problems.append(f"{name} is {list(shape)} with profile {prof}, expected axis 0 dynamic with profile "
                                f"{expect} (1..{streams} streams)")
                continue
            shape = tuple(t.shape)
        elif any(int(d) < 0 for d in shape):
            # a dynamic dim reads -1 even when the profile pins it (min = opt = max, as `build` sets it)
            if mode == trt.TensorIOMode.INPUT:
                prof = [tuple(int(v) for v in p) for p in engine.get_tensor_profile_shape(name, 0)]
                if len(prof) != 3 or not prof[0] == prof[1] == prof[2]:
                    problems.append(f"{name} is dynamic {list(shape)} with profile {prof}, spec {list(t.shape)} "
                                    "(min = opt = max needed)")
                    continue
                shape = prof[0]
            elif len(shape) == len(t.shape) and all(int(d) < 0 or int(d) == s for d, s in zip(shape, t.shape)):
                shape = tuple(t.shape)  # resolved by the input shapes: checked per context in _new_slot
        dt = dtype_name(engine.get_tensor_dtype(name))
        if shape != tuple(t.shape) or dt != t.dtype:
            problems.append(f"{name} is {dt}{list(shape)}, spec {t.dtype}{list(t.shape)}")
        if engine.get_tensor_location(name) != trt.TensorLocation.DEVICE:
            problems.append(f"{name} is not a device tensor")
    problems += [f"missing tensor {n}" for n in sorted(set(want) - seen)]
    if problems:
        raise Human3RError(msg(what, "engine I/O differs from export.json", "; ".join(problems),
                               hint="rebuild the engine from this export"))


# ------------------------------------------------------------------------------------------ the backend
@dataclass(frozen=True)
class TrtOptions:
    device_id: int = 0
    cuda_graph: bool = False  # capture one CUDA graph per bound-address set (two for the decoder's ping-pong)
    onnx_dir: str | None = None  # hash the source ONNX here; default: its build-time path if it still exists
    check_gpu: bool = True
    log_level: str = "warning"  # TensorRT messages printed: internal_error|error|warning|info|verbose

    @staticmethod
    def from_options(options: Mapping[str, Any]) -> "TrtOptions":
        known = {f.name for f in dataclasses.fields(TrtOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(msg("TensorRT backend options", "unknown option(s)", unknown, sorted(known)))
        return TrtOptions(**options)


@dataclass
class _Slot:
    """One execution context, the addresses bound to it, and (with CUDA graphs) its captured graph."""

    context: Any
    bound: dict[str, int] = field(default_factory=dict)
    warmed: bool = False
    graph: int = 0
    graph_exec: int = 0
    no_graph: bool = False  # capture failed: this slot runs with plain enqueues


class TrtBackend(Backend):
    """TensorRT engines from an engine directory (engines + sidecars + export.json + initial_state.npz).

    Returned arrays are fresh host copies owned by the caller. `device_buffer(name)` exposes device pointers.
    """

    name = "trt"
    accepts_device_feeds = True

    def __init__(self, spec: ExportSpec, directory: Path, **options: Any) -> None:
        super().__init__(spec, directory, **options)
        self.opts = TrtOptions.from_options(options)
        self._batched = spec.streams > 1  # multi-stream export: every tensor has the stream axis 0
        self._rows = self._sidecar_streams() if self._batched else 1
        self._reset_members()

    def _sidecar_streams(self) -> int:
        """M of the engines (sidecar `streams`, what `build --streams M` took), before activation; the export's
        N when a sidecar is missing or unreadable (activation then says why)."""
        found = set()
        for g in self.spec.graphs:
            try:
                found.add(int(json.loads(engine_paths(self.directory, g.name)[1].read_text()).get("streams", 1)))
            except (OSError, ValueError, TypeError, AttributeError):
                return int(self.spec.streams)
        return found.pop() if len(found) == 1 else int(self.spec.streams)

    @property
    def streams(self) -> int:
        """M: the largest batch the engines take (`build --streams M`, <= the export's N); state has M rows."""
        return int(self._rows)

    def _reset_members(self) -> None:
        self._cuda: Any = None
        self._ctx: Any = None
        self.stream: Any = None
        self._logger: Any = None
        self._runtime: Any = None
        self._engines: dict[str, Any] = {}
        self._slots: dict[str, dict[tuple, _Slot]] = {}
        self._dev: dict[str, Any] = {}  # tensor -> DeviceAllocation (outputs and host inputs)
        self._state: dict[str, PingPong[Any]] = {}  # state input -> pycuda allocations
        self._state_out: dict[str, str] = {}  # state output -> state input
        self._pinned_in: dict[str, np.ndarray] = {}
        self._pinned_out: dict[str, np.ndarray] = {}
        # multi-stream exports (M rows per state tensor): the rows, the one initial row, the batch in/out buffers
        self._store: dict[str, Any] = {}
        self._init_row: dict[str, Any] = {}
        self._batch: dict[str, tuple[Any, Any]] = {}
        self._row_bytes: dict[str, int] = {}
        self._graphs: CudaGraphs | None = None
        self._graph_warned = False
        self._activation: Any = None  # the shared activation block (USER_MANAGED contexts)
        self.activation_bytes = 0
        self.activation_unshared_bytes = 0
        self.sidecars: dict[str, EngineSidecar] = {}

    # ------------------------------------------------------------------ lifecycle
    def _activate_impl(self) -> None:
        version = require_tensorrt()
        cuda = self._cuda = require_pycuda()
        import tensorrt as trt

        dev = cuda.Device(self.opts.device_id)
        self._ctx = dev.retain_primary_context()
        self._ctx.push()
        try:
            self._setup(trt, version, cuda)
        except BaseException:
            self._teardown()
            raise

    def _setup(self, trt: Any, version: str, cuda: Any) -> None:
        gpu = gpu_identity(cuda, self.opts.device_id) if self.opts.check_gpu else None
        self.stream = cuda.Stream()
        self._logger = make_logger(self.opts.log_level)
        self._runtime = trt.Runtime(self._logger)
        if self._runtime is None:
            raise BackendUnavailable(msg("tensorrt.Runtime", "could not be created", self._logger.errors()))
        onnx_dir = Path(self.opts.onnx_dir) if self.opts.onnx_dir else None
        for g in self.spec.graphs:
            engine_path, sidecar_path = engine_paths(self.directory, g.name)
            if not engine_path.is_file():
                raise Human3RError(msg(f"engine directory {self.directory}", f"no engine for graph {g.name}",
                                       str(engine_path), f"{g.name}{ENGINE_SUFFIX} + {g.name}{SIDECAR_SUFFIX}",
                                       "run `human3r-edge build --onnx-dir ONNX_DIR --out ENGINE_DIR` on this "
                                       "machine and pass that ENGINE_DIR"))
            sc = EngineSidecar.load(sidecar_path)
            verify_sidecar(sc, engine_path, g, version, gpu, onnx_dir)
            want = self._rows if self._batched else 1
            if int(sc.streams) != want or int(sc.streams) > int(self.spec.streams):
                raise Human3RError(msg(f"engine {engine_path.name}", "built for another number of streams",
                                       f"streams {sc.streams}", f"{want} (export.json streams {self.spec.streams}, "
                                       "the same M for every engine)", _rebuild_hint(sc) + " --streams M"))
            data = engine_path.read_bytes()
            engine = self._runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise Human3RError(msg(f"engine {engine_path.name}", "TensorRT refused to deserialize it",
                                       "; ".join(self._logger.errors()[-3:]) or "no message",
                                       hint=_rebuild_hint(sc)))
            verify_engine_io(engine, g, f"engine {engine_path.name}", streams=int(sc.streams))
            self._engines[g.name] = engine
            self.sidecars[g.name] = sc
            self._slots[g.name] = {}
        self._allocate(cuda)
        # One activation block for every execution context: they all run in sequence on one stream, so with CUDA
        # graphs (a context per ping-pong slot) the decoder's activations are not doubled (an 8 GB Orin matters)
        self.activation_bytes = max((_activation_bytes(e) for e in self._engines.values()), default=0)
        if self.activation_bytes and hasattr(trt, "ExecutionContextAllocationStrategy"):
            self._activation = cuda.mem_alloc(self.activation_bytes)
        if self.opts.cuda_graph:
            self._graphs = CudaGraphs()

    def _nbytes(self, t: Any) -> int:
        """Device bytes of tensor spec `t`: M rows of a batched (multi-stream) one."""
        return t.nbytes // t.shape[0] * self._rows if t.batched else t.nbytes

    def _host_shape(self, t: Any) -> tuple[int, ...]:
        return t.shape_for(self._rows) if t.batched else tuple(t.shape)

    def _allocate(self, cuda: Any) -> None:
        if self._batched:
            self._allocate_rows(cuda)
            return
        for p, t, value in self._checked_initial_state():
            staging = cuda.pagelocked_empty(t.shape, t.np_dtype)
            np.copyto(staging, value)
            first = cuda.mem_alloc(t.nbytes)
            cuda.memcpy_htod(first, staging)
            a = cuda.mem_alloc(t.nbytes)
            self._state[p.input] = PingPong(first, a, cuda.mem_alloc(t.nbytes), t.nbytes, start=a)
            self._state_out[p.output] = p.input
            self._pinned_out[p.input] = staging  # also the read_state staging buffer
        for g in self.spec.graphs:
            for t in g.outputs:
                if t.name not in self._state_out:
                    self._dev[t.name] = cuda.mem_alloc(t.nbytes)
                self._pinned_out[t.name] = cuda.pagelocked_empty(t.shape, t.np_dtype)
            for t in self.spec.host_inputs(g.name):
                self._dev[t.name] = cuda.mem_alloc(t.nbytes)
                self._pinned_in[t.name] = cuda.pagelocked_empty(t.shape, t.np_dtype)
        for g in self.spec.graphs:
            for name in self.spec.linked_inputs(g.name):
                if name in self._state_out:
                    raise Human3RError(msg(f"graph {g.name}", "linked input produced by a state output", name,
                                           hint="not supported: link a non-state output"))

    def _allocate_rows(self, cuda: Any) -> None:
        """Multi-stream buffers: every state tensor as M rows (`_store`, slot k at row k) plus its one initial row
        and a batch in/out pair (M rows each); outputs and host inputs M rows, bound as their first B rows."""
        for p, t, value in self._checked_initial_state():
            rb = t.nbytes // t.shape[0]
            staging = cuda.pagelocked_empty(self._host_shape(t), t.np_dtype)
            staging[:1] = value
            self._init_row[p.input] = cuda.mem_alloc(rb)
            cuda.memcpy_htod(self._init_row[p.input], staging[:1])
            self._store[p.input] = cuda.mem_alloc(rb * self._rows)
            self._batch[p.input] = (cuda.mem_alloc(rb * self._rows), cuda.mem_alloc(rb * self._rows))
            self._row_bytes[p.input] = rb
            self._state_out[p.output] = p.input
            self._pinned_out[p.input] = staging  # the read_state staging buffer
        for g in self.spec.graphs:
            for t in g.outputs:
                if t.name not in self._state_out:
                    self._dev[t.name] = cuda.mem_alloc(self._nbytes(t))
                self._pinned_out[t.name] = cuda.pagelocked_empty(self._host_shape(t), t.np_dtype)
            for t in self.spec.host_inputs(g.name):
                self._dev[t.name] = cuda.mem_alloc(self._nbytes(t))
                self._pinned_in[t.name] = cuda.pagelocked_empty(self._host_shape(t), t.np_dtype)
        for g in self.spec.graphs:
            for name in self.spec.linked_inputs(g.name):
                if name in self._state_out:
                    raise Human3RError(msg(f"graph {g.name}", "linked input produced by a state output", name,
                                           hint="not supported: link a non-state output"))

    def _new_slot(self, graph: str, batch: int | None = None) -> _Slot:
        import tensorrt as trt

        engine = self._engines[graph]
        if self._activation is not None:
            context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if context is not None:
                if hasattr(context, "set_device_memory"):  # TensorRT >= 10.1
                    context.set_device_memory(int(self._activation), self.activation_bytes)
                else:
                    context.device_memory = int(self._activation)
        else:
            context = engine.create_execution_context()
        if context is None:
            raise Human3RError(msg(f"engine {graph}", "create_execution_context failed",
                                   "; ".join(self._logger.errors()[-3:]) or "out of device memory?"))
        for t in self.spec.graph(graph).inputs:  # multi-stream: axis 0 is the batch size B of this context
            if not context.set_input_shape(t.name, t.shape_for(batch)):
                raise Human3RError(msg(f"engine {graph}", "set_input_shape refused", f"{t.name} {t.shape_for(batch)}",
                                       hint="the engine was built for other shapes; rebuild"))
        for t in self.spec.graph(graph).outputs:  # dynamic dims are resolved now: they must give the spec
            got = tuple(int(d) for d in context.get_tensor_shape(t.name))
            if got != t.shape_for(batch):
                raise Human3RError(msg(f"engine {graph}", "output shape differs from export.json", f"{t.name} {got}",
                                       t.shape_for(batch), "rebuild the engine from this export"))
        self.activation_unshared_bytes += _activation_bytes(engine)
        return _Slot(context)

    def memory_report(self) -> dict[str, int]:
        """Activation memory: the one shared block, and what one block per execution context would take; beside
        them the same two figures predicted by the engines' sidecars for this run mode (`activation`, see
        activation_figures; 0 for sidecars of older builds)."""
        mode = "cuda_graph" if self.opts.cuda_graph else "enqueue"
        figures = [sc.activation for sc in self.sidecars.values() if sc.activation]
        return {"activation_shared_bytes": int(self.activation_bytes),
                "activation_unshared_bytes": int(self.activation_unshared_bytes),
                "execution_contexts": sum(len(s) for s in self._slots.values()),
                "sidecar_shared_bytes": max((int(f[f"{mode}_shared_bytes"]) for f in figures), default=0),
                "sidecar_per_context_bytes": sum(int(f[f"{mode}_per_context_bytes"]) for f in figures)}

    def _deactivate_impl(self) -> None:
        self._teardown()

    def _teardown(self) -> None:
        """Release everything made in the context, then the context. The order matters: pycuda frees an object
        by activating the context it was made in, and once that context is detached it swallows
        cannot_activate_dead_context, so a stream, pinned or device buffer freed afterwards simply leaks."""
        try:
            if self.stream is not None:
                self.stream.synchronize()
            self._close_adopted()  # skinner / frame preparer buffers made in this context
            if self._graphs is not None:
                for slots in self._slots.values():
                    for s in slots.values():
                        self._graphs.destroy(s.graph, s.graph_exec)
            self._slots.clear()  # execution contexts are destroyed here, before the memory they use
            self._engines.clear()
            self._runtime = None
            if self._activation is not None:
                self._activation.free()
            for alloc in list(self._dev.values()):
                alloc.free()
            for st in self._state.values():
                for a in (*st.buffers, st.initial):
                    a.free()
            for a in (*self._store.values(), *self._init_row.values(),
                      *(b for pair in self._batch.values() for b in pair)):
                a.free()
            for arr in (*self._pinned_in.values(), *self._pinned_out.values()):
                free_pinned(arr)
            self._dev.clear()
            self._state.clear()
            self._store.clear()
            self._init_row.clear()
            self._batch.clear()
            self._pinned_in.clear()
            self._pinned_out.clear()
            self.stream = None  # pycuda destroys the stream here, while its context is valid
        finally:
            if self._ctx is not None:
                self._ctx.pop()
                self._ctx.detach()
            self._reset_members()

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        if self._batched:
            self._reset_rows(tuple(range(self._rows)))
            return
        for st in self._state.values():
            self._cuda.memcpy_dtod_async(st.current, st.initial, st.nbytes, self.stream)  # fixed addresses
        self.stream.synchronize()

    def _reset_rows(self, slots: tuple[int, ...]) -> None:
        """The initial row copied into the rows of `slots` (device to device, on the backend's stream)."""
        for name, store in self._store.items():
            rb = self._row_bytes[name]
            for k in slots:
                self._cuda.memcpy_dtod_async(int(store) + k * rb, self._init_row[name], rb, self.stream)
        self.stream.synchronize()

    def read_state(self, name: str) -> np.ndarray:
        if name not in self._state and name not in self._store:
            raise Human3RError(msg("read_state", "no such state input", name, sorted(self._state) + sorted(self._store)))
        staging = self._pinned_out[name]
        src = self._store[name] if self._batched else self._state[name].current
        self._cuda.memcpy_dtoh_async(staging, src, self.stream)
        self.stream.synchronize()
        return staging.copy()

    def device_buffer(self, name: str) -> int:
        """Device pointer of the buffer that holds tensor `name` now.

        Outputs and host inputs: fixed for the backend's lifetime. A state input or output name: the buffer with
        the latest state, valid until the next run of its graph. Owned by the backend; never free it.
        """
        if name in self._state_out:
            name = self._state_out[name]
        if name in self._store:  # multi-stream: the M state rows (slot k at row k)
            return int(self._store[name])
        if name in self._state:
            return int(self._state[name].current)
        if name not in self._dev:
            raise Human3RError(msg("device_buffer", "unknown tensor", name, sorted(self._dev) + sorted(self._state)))
        return int(self._dev[name])

    @property
    def stream_handle(self) -> int:
        """The CUDA stream every engine runs on (enqueue dependent kernels here)."""
        return int(self.stream.handle)

    # ------------------------------------------------------------------ execution
    def addresses(self, graph: str) -> dict[str, int]:
        """Tensor name -> device address to bind for the next run of `graph` (state: current in, other out;
        multi-stream: the batch in / out buffers, fixed)."""
        g = self.spec.graph(graph)
        out: dict[str, int] = {}
        if self._batched:
            for t in g.inputs:
                out[t.name] = int(self._batch[t.name][0] if t.name in self._batch else self._dev[t.name])
            for t in g.outputs:
                out[t.name] = int(self._batch[self._state_out[t.name]][1] if t.name in self._state_out
                                  else self._dev[t.name])
            return out
        for t in g.inputs:
            out[t.name] = int(self._state[t.name].current if t.name in self._state else self._dev[t.name])
        for t in g.outputs:
            out[t.name] = int(self._state[self._state_out[t.name]].next_output() if t.name in self._state_out
                              else self._dev[t.name])
        return out

    def _run_streams(self, graph: str, feeds: Mapping[str, Any], fetch: list[str], slots: tuple[int, ...]
                     ) -> dict[str, np.ndarray]:
        """One batch of B = len(slots) streams: host feeds into the first B rows, the state rows of `slots`
        gathered into the batch input buffers (device to device), the engine run by the context of batch size B
        (input shapes set once when it is made; with CUDA graphs, its own graph), the batch outputs scattered back
        into those rows only; every copy on the backend's stream."""
        cuda, stream, b = self._cuda, self.stream, len(slots)
        g = self.spec.graph(graph)
        for name, value in feeds.items():
            if isinstance(value, OnDevice):
                continue  # its first B rows are already in self._dev[name], on this stream
            np.copyto(self._pinned_in[name][:b], value)
            cuda.memcpy_htod_async(self._dev[name], self._pinned_in[name][:b], stream)
        for p in g.state:
            rb, store, (buf_in, _out) = self._row_bytes[p.input], self._store[p.input], self._batch[p.input]
            for i, k in enumerate(slots):
                cuda.memcpy_dtod_async(int(buf_in) + i * rb, int(store) + k * rb, rb, stream)
        addrs = self.addresses(graph)
        self._execute(graph, ("batch", b), addrs, b)
        for p in g.state:
            rb, store, (_in, buf_out) = self._row_bytes[p.input], self._store[p.input], self._batch[p.input]
            for i, k in enumerate(slots):
                cuda.memcpy_dtod_async(int(store) + k * rb, int(buf_out) + i * rb, rb, stream)
        for name in fetch:
            cuda.memcpy_dtoh_async(self._pinned_out[name][:b], addrs[name], stream)
        stream.synchronize()
        return {n: self._pinned_out[n][:b].copy() for n in fetch}

    def _execute(self, graph: str, key: tuple, addrs: dict[str, int], batch: int | None) -> None:
        """Run `graph` with the execution context of `key` (made on first use), bound to `addrs`; with CUDA
        graphs, its graph (captured after one warm-up enqueue)."""
        slots = self._slots[graph]
        slot = slots.get(key)
        if slot is None:
            slot = slots[key] = self._new_slot(graph, batch)
        for name, a in addrs.items():
            if slot.bound.get(name) != a:
                if not slot.context.set_tensor_address(name, a):
                    raise Human3RError(msg(f"engine {graph}", "set_tensor_address refused", f"{name} -> {a:#x}",
                                           hint="; ".join(self._logger.errors()[-2:])))
                slot.bound[name] = a
        if self._graphs is not None and slot.warmed and not slot.no_graph and \
                (slot.graph_exec or self._capture(self._graphs, graph, slot)):
            self._graphs.launch(slot.graph_exec, int(self.stream.handle))
        else:
            self._enqueue(graph, slot)
            slot.warmed = True

    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        if self._batched:  # engines of a multi-stream export built with --streams 1: slot 0, batches of one
            return self._run_streams(graph, feeds, fetch, (0,))
        cuda, stream = self._cuda, self.stream
        for name, value in feeds.items():
            if isinstance(value, OnDevice):
                continue  # already written into self._dev[name] on this stream (e.g. the preprocessing kernels)
            np.copyto(self._pinned_in[name], value)
            cuda.memcpy_htod_async(self._dev[name], self._pinned_in[name], stream)
        addrs = self.addresses(graph)
        key = tuple(sorted(addrs.items())) if self.opts.cuda_graph else ()
        self._execute(graph, key, addrs, None)
        for name in fetch:
            src = addrs[name]
            cuda.memcpy_dtoh_async(self._pinned_out[name], src, stream)
        stream.synchronize()
        for p in self.spec.graph(graph).state:
            self._state[p.input].advance()
        return {n: self._pinned_out[n].copy() for n in fetch}

    def _enqueue(self, graph: str, slot: _Slot) -> None:
        if not slot.context.execute_async_v3(int(self.stream.handle)):
            raise Human3RError(msg(f"engine {graph}", "execute_async_v3 failed",
                                   "; ".join(self._logger.errors()[-3:]) or "no message",
                                   hint="every I/O address and input shape must be set"))

    def _capture(self, graphs: CudaGraphs, graph: str, slot: _Slot) -> bool:
        """Capture the slot's enqueue (addresses already bound, warmed up once) into a CUDA graph. Returns False
        when it cannot be captured: the partial graph is destroyed, the slot runs without a graph from then on,
        and one warning per backend says why (the enqueue's own error, not the capture's consequence)."""
        handle = int(self.stream.handle)
        graphs.begin_capture(handle)
        try:
            self._enqueue(graph, slot)
        except Human3RError as exc:
            try:  # end the broken capture; its "invalidated" error is a consequence of exc, not news
                partial = graphs.end_capture(handle)
                graphs.destroy(partial, 0)
            except Human3RError:
                pass
            self._graph_failed(graph, slot, str(exc))
            return False
        try:
            captured = graphs.end_capture(handle)
        except Human3RError as exc:
            self._graph_failed(graph, slot, str(exc))
            return False
        slot.graph = captured
        try:
            slot.graph_exec = graphs.instantiate(captured)
        except Human3RError as exc:
            graphs.destroy(captured, 0)
            slot.graph = 0
            self._graph_failed(graph, slot, str(exc))
            return False
        return True

    def _graph_failed(self, graph: str, slot: _Slot, why: str) -> None:
        import warnings

        slot.no_graph = True
        if not self._graph_warned:
            self._graph_warned = True
            warnings.warn(msg(f"engine {graph}", "CUDA graph capture failed; running it without a graph", why,
                              hint="results are unchanged; only the launch overhead of the graph is lost"),
                          RuntimeWarning, stacklevel=4)
