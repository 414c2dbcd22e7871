"""ONNX Runtime backends behind the Backend protocol: CPU, CUDA EP and TensorRT EP (onnxruntime imported lazily).

* `OrtCpuBackend`: plain sessions; state and linked tensors are numpy arrays held by the backend.
* `OrtCudaBackend`, `OrtTrtBackend`: IOBinding. State (two buffers per state tensor, ping-pong), linked tensors
  and every output live on the device as OrtValues allocated once at activation; host feeds are copied into
  preallocated device OrtValues; only fetched outputs are copied to the host.
  They also take `ON_DEVICE` feeds (base.py): `device_buffer(name)` is the address of a host input's device
  OrtValue, and `stream` a pycuda stream in the device's *primary* CUDA context, the context ONNX Runtime's CUDA
  runtime calls use, so the preprocessing kernels (runtime/device_frames.py) write the model images straight into
  the buffers the session reads. pycuda is needed only for that, and imported on first use.

GPU sessions set `session.disable_cpu_ep_fallback=1`, so a node that would silently run on the CPU is an error,
and a provider that ONNX Runtime lists but cannot load (no GPU, missing CUDA/cuDNN/TensorRT libraries) raises
`BackendUnavailable` instead of quietly running on the CPU.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import BackendUnavailable, ConfigError, Human3RError, msg
from human3r_edge.runtime.iospec import ExportSpec, GraphSpec
from human3r_edge.runtime.backends.base import Backend, OnDevice, PingPong

_OPT_LEVELS = ("disable", "basic", "extended", "all")
_EXEC_ORDERS = ("default", "priority")
_NP_OF_ORT = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int32)": np.int32,
              "tensor(int64)": np.int64, "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int32)": "int32",
              "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(uint8)": "uint8"}


def import_onnxruntime() -> Any:
    """The onnxruntime module, or BackendUnavailable with the install hint."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(msg("onnxruntime", "not installed", repr(exc), "onnxruntime-gpu",
                                     "pip install onnxruntime-gpu (never together with the CPU `onnxruntime` "
                                     "wheel: the CUDA EP disappears)")) from exc
    return ort


def preload_cuda_libraries(ort: Any) -> list[str]:
    """Call `onnxruntime.preload_dlls()` where this onnxruntime has it (>= 1.21) and return what it printed.

    ORT's CUDA/TensorRT provider libraries carry no RPATH, so CUDA and cuDNN from pip wheels (nvidia-*-cu13)
    are found only after this preload; on JetPack they come from the system and it finds nothing to do. Called
    before a GPU provider is used (not for ort-cpu: on a machine without CUDA it only prints failures)."""
    preload = getattr(ort, "preload_dlls", None)
    if not callable(preload):
        return []
    import contextlib
    import io

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            preload()
    except Exception as exc:  # a broken nvidia-* wheel layout must not stop the provider probe that follows
        buf.write(f"preload_dlls failed: {exc!r}\n")
    return [line for line in buf.getvalue().splitlines() if line.strip()]


def preload_tensorrt() -> str | None:
    """Import the TensorRT Python module where it is really installed, so the TensorRT EP finds
    `libnvinfer.so.10`: the tensorrt wheel loads its bundled libraries on import (ORT's provider library has no
    RPATH to find them). Returns its version, or None (stubs only / absent: the provider probe then says why)."""
    from human3r_edge.runtime.cuda_util import require_tensorrt

    try:
        return require_tensorrt()
    except BackendUnavailable:
        return None


@dataclass(frozen=True)
class OrtOptions:
    """Session and provider options of the ONNX Runtime backends (pass them as keyword options)."""

    intra_op_threads: int = 0  # 0: one per physical core
    inter_op_threads: int = 0  # only matters with a parallel execution mode
    graph_opt_level: str = "all"  # disable | basic | extended | all
    allow_spinning: bool = True  # session.intra_op.allow_spinning; 0 saves CPU when the caller idles between frames
    mem_arena: bool = True  # enable_cpu_mem_arena; off saves RAM for ~10% speed
    mem_pattern: bool = True  # enable_mem_pattern: pre-plans activation buffers (more RAM; ort-cpu defaults to off)
    # node order: "priority" (ExecutionOrder.PRIORITY_BASED) frees tensors sooner than ORT's default topological
    # order; 672S decoder transformer: +293 MB vs +560 MB live activations, and 5% faster on the CPU
    execution_order: str = "priority"  # priority | default
    cpu_arena_exact: bool = True  # CPU arena grows by the requested size (kSameAsRequested), not to the next power of 2
    prepacking: bool = True  # False sets session.disable_prepacking: no second, re-laid-out copy of Gemm weights
    config_entries: tuple[tuple[str, str], ...] = ()  # extra session config entries, passed through verbatim
    log_severity: int = 3  # 0 verbose .. 4 fatal
    strict_device: bool = True  # GPU backends: a node falling back to the CPU EP is an error
    device_id: int = 0
    # CUDA EP
    use_tf32: bool = False  # TF32 changes FP32 results at the 1e-3 level; off keeps the golden tolerances
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    arena_extend_strategy: str = "kSameAsRequested"
    gpu_mem_limit_mb: int = 0  # 0: no limit
    # TensorRT EP
    fp16: bool = True
    engine_cache_dir: str | None = None  # default: <export dir>/ort_trt_cache
    timing_cache_dir: str | None = None  # default: the engine cache dir
    layer_norm_fp32_fallback: bool = True
    trt_workspace_mb: int = 2048
    trt_opt_level: int = 3

    @staticmethod
    def from_options(options: Mapping[str, Any]) -> "OrtOptions":
        known = {f.name for f in dataclasses.fields(OrtOptions)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(msg("ONNX Runtime backend options", "unknown option(s)", unknown, sorted(known)))
        o = OrtOptions(**options)
        if o.graph_opt_level not in _OPT_LEVELS:
            raise ConfigError(msg("graph_opt_level", "unknown level", repr(o.graph_opt_level), _OPT_LEVELS))
        if o.execution_order not in _EXEC_ORDERS:
            raise ConfigError(msg("execution_order", "unknown order", repr(o.execution_order), _EXEC_ORDERS))
        return o


# ------------------------------------------------------------------------------------------ sessions
_CPU_ARENA_REGISTERED = False


def _register_cpu_arena(ort: Any) -> bool:
    """Register, once per process, a CPU arena allocator that grows by exactly the requested size.

    The default CPU arena doubles its chunks (kNextPowerOfTwo); on 672S that keeps ~100 MB more resident at no
    speed benefit (measured: 3.96 vs 4.06 GB peak, same ms/frame). Sessions opt in with session.use_env_allocators.
    Returns False where this onnxruntime lacks the API (the session then keeps its own default arena).
    """
    global _CPU_ARENA_REGISTERED
    if _CPU_ARENA_REGISTERED:
        return True
    try:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # OrtArenaCfg(max_mem=0: no limit, arena_extend_strategy=1: kSameAsRequested, defaults for the rest)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
    except (AttributeError, RuntimeError, TypeError):
        return False
    _CPU_ARENA_REGISTERED = True
    return True


def session_options(ort: Any, o: OrtOptions, strict: bool) -> Any:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(o.intra_op_threads)
    so.inter_op_num_threads = int(o.inter_op_threads)
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so.graph_optimization_level = levels[o.graph_opt_level]
    so.enable_cpu_mem_arena = bool(o.mem_arena)
    so.enable_mem_pattern = bool(o.mem_pattern)
    if o.execution_order not in _EXEC_ORDERS:
        raise ConfigError(msg("execution_order", "unknown order", repr(o.execution_order), _EXEC_ORDERS))
    so.execution_order = {"default": ort.ExecutionOrder.DEFAULT,
                          "priority": ort.ExecutionOrder.PRIORITY_BASED}[o.execution_order]
    so.log_severity_level = int(o.log_severity)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if o.allow_spinning else "0")
    if not o.prepacking:
        so.add_session_config_entry("session.disable_prepacking", "1")
    if o.mem_arena and o.cpu_arena_exact and _register_cpu_arena(ort):
        so.add_session_config_entry("session.use_env_allocators", "1")
    for key, value in o.config_entries:
        so.add_session_config_entry(str(key), str(value))
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return so


def verify_session_io(sess: Any, g: GraphSpec, path: Path) -> None:
    """Raise Human3RError if the session's inputs/outputs differ from the graph spec in export.json."""
    problems = []
    for kind, got, want in (("input", sess.get_inputs(), g.inputs), ("output", sess.get_outputs(), g.outputs)):
        have = {a.name: a for a in got}
        for t in want:
            a = have.pop(t.name, None)
            if a is None:
                problems.append(f"{kind} {t.name} missing")
                continue
            dtype = _ORT_TYPES.get(a.type, a.type)
            shape = tuple(a.shape)
            if t.batched and shape and not isinstance(shape[0], int):
                shape = (t.shape[0],) + shape[1:]  # the dynamic stream axis (dim_param "streams"): 1..N
            elif t.batched and shape:
                shape = ("fixed " + str(shape[0]),) + shape[1:]  # a fixed axis 0 cannot run batches of B < N
            if dtype != t.dtype or shape != tuple(t.shape):
                problems.append(f"{kind} {t.name} is {dtype}{list(shape)}, spec {t.dtype}{list(t.shape)}")
        problems += [f"unexpected {kind} {n}" for n in sorted(have)]
    if problems:
        raise Human3RError(msg(f"ONNX file {path}", "does not match export.json", "; ".join(problems),
                               "the I/O spec the exporter wrote", "re-export; never mix files of two exports"))


def onnx_path(directory: Path, g: GraphSpec) -> Path:
    path = directory / g.file
    if not path.is_file():
        raise Human3RError(msg(f"graph {g.name}", "ONNX file not found", str(path),
                               hint="run `human3r-edge export ... --out DIR` and pass that DIR"))
    return path


def _probe_model_bytes() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9).SerializeToString()


def probe_provider(ort: Any, providers: list, o: OrtOptions, strict: bool) -> None:
    """Create a one-node session with `providers`; BackendUnavailable unless the first provider really loads."""
    primary = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if primary not in ort.get_available_providers():
        raise BackendUnavailable(msg(f"ONNX Runtime {primary}", "not in this build of onnxruntime",
                                     ort.get_available_providers(), primary,
                                     "install onnxruntime-gpu (desktop: the CUDA-13 wheels; JetPack 6: the Jetson "
                                     "wheels), see docs/deploy-*.md"))
    try:
        sess = ort.InferenceSession(_probe_model_bytes(), sess_options=session_options(ort, o, strict),
                                    providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidArgument, ...)
        raise BackendUnavailable(msg(f"ONNX Runtime {primary}", "listed but could not be used", str(exc)[:400],
                                     f"a session running on {primary}",
                                     "check the GPU driver, CUDA 13 / cuDNN 9 (and TensorRT for the TRT EP) "
                                     "libraries on LD_LIBRARY_PATH; ORT's log above names the missing library"))
    got = sess.get_providers()
    if not got or got[0] != primary:
        raise BackendUnavailable(msg(f"ONNX Runtime {primary}", "listed but fell back", got, f"[{primary}, ...]",
                                     "onnxruntime-gpu lists GPU providers even without a GPU or CUDA libraries; "
                                     "its log above names the missing library (e.g. libcublasLt.so.13)"))


# ------------------------------------------------------------------------------------------ CPU
class OrtCpuBackend(Backend):
    """ONNX Runtime on the CPU: plain sessions, numpy state (a fresh output array replaces the input each frame).

    Returned arrays are owned by the caller.
    """

    name = "ort-cpu"

    def __init__(self, spec: ExportSpec, directory: Path, **options: Any) -> None:
        super().__init__(spec, directory, **options)
        # memory pattern planning pre-allocates one block per run: on the CPU it costs ~0.3x the weights in RAM
        # for no measurable speed (672S: 1.68x -> 1.40x weights at 7.33 s/frame either way)
        self.opts = OrtOptions.from_options({"mem_pattern": False, **options})
        self._sessions: dict[str, Any] = {}
        self._state: dict[str, np.ndarray] = {}
        self._linked: dict[str, np.ndarray] = {}
        self._initial: dict[str, np.ndarray] = {}
        consumers = {n for g in spec.graphs for n in spec.linked_inputs(g.name)}
        self._keep = {t.name for g in spec.graphs for t in g.outputs if t.name in consumers}

    def _activate_impl(self) -> None:
        ort = import_onnxruntime()
        so = session_options(ort, self.opts, strict=False)
        for g in self.spec.graphs:
            path = onnx_path(self.directory, g)
            sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
            verify_session_io(sess, g, path)
            self._sessions[g.name] = sess

    def _deactivate_impl(self) -> None:
        self._sessions.clear()
        self._state.clear()
        self._linked.clear()

    def reset_state(self) -> None:
        n = self.streams
        self._initial = {p.input: value for p, _t, value in self._checked_initial_state()}
        # multi-stream: N rows, one per stream slot, each the one-row initial state
        self._state = {k: np.repeat(v, n, axis=0) if n > 1 else v.copy() for k, v in self._initial.items()}

    def _reset_rows(self, slots: tuple[int, ...]) -> None:
        idx = np.asarray(slots, np.intp)
        for name, value in self._initial.items():
            self._state[name][idx] = value  # the one initial row, broadcast into those rows only

    def read_state(self, name: str) -> np.ndarray:
        if name not in self._state:
            raise Human3RError(msg("read_state", "no such state input", name, sorted(self._state)))
        return self._state[name].copy()

    def _run_streams(self, graph: str, feeds: Mapping[str, Any], fetch: list[str], slots: tuple[int, ...]
                     ) -> dict[str, np.ndarray]:
        return self._run_rows(graph, feeds, fetch, np.asarray(slots, np.intp))

    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        return self._run_rows(graph, feeds, fetch, None)

    def _run_rows(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str], rows: np.ndarray | None
                  ) -> dict[str, np.ndarray]:
        """One run; `rows`: the state rows of a multi-stream batch (gathered before, scattered back after the
        run, no other row touched), None for a single-stream export (the state arrays are replaced)."""
        g = self.spec.graph(graph)
        inputs = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        for name in self.spec.linked_inputs(graph):
            if name not in self._linked:
                producer = self.spec.producers()[name]
                raise Human3RError(msg(f"graph {graph}", f"linked input {name} has no value yet", None,
                                       f"graph {producer} run first in this frame"))
            inputs[name] = self._linked[name]
        for p in g.state:
            inputs[p.input] = self._state[p.input] if rows is None else self._state[p.input][rows]  # a copy
        state_out = {p.output: p.input for p in g.state}
        wanted = sorted(set(fetch) | (self._keep & {t.name for t in g.outputs}) | set(state_out))
        values = dict(zip(wanted, self._sessions[graph].run(wanted, inputs)))
        for name, arr in values.items():
            if name in self._keep:
                self._linked[name] = arr
            if name in state_out and rows is not None:
                self._state[state_out[name]][rows] = arr  # those rows only
            elif name in state_out:
                old = self._state[state_out[name]]
                self._state[state_out[name]] = arr.copy() if np.shares_memory(arr, old) else arr
        held = self._keep | set(state_out)
        return {n: values[n].copy() if n in held else values[n] for n in fetch}


# ------------------------------------------------------------------------------------------ IOBinding (device)
class OrtBoundBackend(Backend):
    """ONNX Runtime with IOBinding: state, linked tensors and outputs stay on `device_type` between frames.

    Subclasses set `device_type` and `providers()`. Returned arrays are fresh host copies owned by the caller.
    """

    name = "ort-bound"
    device_type = "cuda"
    primary_provider = "CUDAExecutionProvider"

    def __init__(self, spec: ExportSpec, directory: Path, **options: Any) -> None:
        super().__init__(spec, directory, **options)
        self.opts = OrtOptions.from_options(options)
        self._ort: Any = None
        self._sessions: dict[str, Any] = {}
        self._bindings: dict[str, Any] = {}
        self._values: dict[str, Any] = {}  # every non-state output and host input: its device OrtValue
        self._state: dict[str, PingPong[Any]] = {}  # state input name -> OrtValues
        self._run_options: Any = None
        self._cuda: Any = None  # pycuda.driver, once device feeds are used
        self._cuda_ctx: Any = None  # the retained primary context (pushed on the thread that asked)
        self._cuda_stream: Any = None
        # multi-stream exports: per state input, the (in, out) batch buffers (N rows each), and the row-copy
        # sessions (Gather / ScatterND per dtype and rank) that move state rows on the device
        self._batch: dict[str, tuple[Any, Any]] = {}
        self._row_sessions: dict[tuple[str, str, int], Any] = {}

    def providers(self) -> list:
        raise NotImplementedError

    def row_providers(self) -> list:
        """Providers of the small row-copy sessions of multi-stream exports (Gather / ScatterND on the device):
        the backend's own, without TensorRT (one-node graphs gain nothing from an engine)."""
        return [p for p in self.providers()
                if (p[0] if isinstance(p, tuple) else p) != "TensorrtExecutionProvider"]

    # ------------------------------------------------------------------ device feeds (GPU preprocessing)
    @property
    def accepts_device_feeds(self) -> bool:  # type: ignore[override]
        return self.device_type == "cuda"

    def ensure_cuda_context(self) -> Any:
        """Have pycuda work in the CUDA context ONNX Runtime uses, in this thread, and return pycuda.driver.

        ONNX Runtime's CUDA EP selects its device with cudaSetDevice, which makes the device's *primary* context
        current (whatever context was current before), so pycuda must use the primary context too: it is
        retained and pushed here, and popped and released at deactivation. (Using a context that happened to be
        current, e.g. pycuda.autoinit's, fails on a real GPU with "invalid resource handle" once the runtime
        switches to the primary context.)"""
        if self._cuda is None:
            from human3r_edge.runtime.cuda_util import require_pycuda

            cuda = require_pycuda()
            ctx = cuda.Device(self.opts.device_id).retain_primary_context()
            ctx.push()
            self._cuda_ctx, self._cuda = ctx, cuda
        return self._cuda

    @property
    def stream(self) -> Any:
        """A pycuda stream in the primary context for kernels that feed this backend. Work queued on it must be
        complete (synchronised) before `run`: ONNX Runtime runs on its own stream."""
        if self._cuda_stream is None:
            self._cuda_stream = self.ensure_cuda_context().Stream()
        return self._cuda_stream

    def device_buffer(self, name: str) -> int:
        """Device address of host input `name`'s OrtValue (fixed while the backend is active; owned by it).
        Write it, then pass `ON_DEVICE` for that input to `run`."""
        if not self.accepts_device_feeds:
            raise Human3RError(msg("device_buffer", "not a device backend", self.name, "ort-cuda or ort-trt"))
        hosts = {t.name for g in self.spec.graphs for t in self.spec.host_inputs(g.name)}
        if name not in hosts or name not in self._values:
            raise Human3RError(msg("device_buffer", "not a host input of an active session", name, sorted(hosts)))
        return int(self._values[name].data_ptr())

    def _release_cuda(self) -> None:
        """Free what was made in the primary context (adopted kernels' buffers, the stream) before popping and
        releasing it: pycuda cannot free them afterwards (cannot_activate_dead_context, swallowed: a leak)."""
        if self._cuda_stream is not None:
            self._cuda_stream.synchronize()
        self._close_adopted()
        if self._cuda_stream is not None:
            self._cuda_stream = None
        if self._cuda_ctx is not None:
            ctx, self._cuda_ctx = self._cuda_ctx, None
            ctx.pop()
            ctx.detach()
        self._cuda = None

    # ------------------------------------------------------------------ lifecycle
    def _activate_impl(self) -> None:
        ort = self._ort = import_onnxruntime()
        providers = self.providers()
        strict = self.opts.strict_device
        if self.device_type == "cuda":
            self.preload_messages = preload_cuda_libraries(ort)
            if self.primary_provider == "TensorrtExecutionProvider":
                preload_tensorrt()
        probe_provider(ort, providers, self.opts, strict)
        so = session_options(ort, self.opts, strict)
        dev, dev_id = self.device_type, self.opts.device_id
        for g in self.spec.graphs:
            path = onnx_path(self.directory, g)
            try:
                sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
            except Exception as exc:
                raise Human3RError(msg(f"graph {g.name} on {self.primary_provider}", "session creation failed",
                                       str(exc)[:500], hint="a node assigned to the CPU EP means an op the EP cannot "
                                       "run: constant-fold shape subgraphs in the export, or pass strict_device=False "
                                       "to accept the slowdown")) from exc
            got = sess.get_providers()
            if not got or got[0] != self.primary_provider:
                raise BackendUnavailable(msg(f"graph {g.name}", f"session is not on {self.primary_provider}", got,
                                             f"[{self.primary_provider}, ...]", "see ONNX Runtime's log above"))
            verify_session_io(sess, g, path)
            self._sessions[g.name] = sess
            io = sess.io_binding()
            state_outputs = {p.output for p in g.state}
            for t in g.outputs:
                if t.name not in state_outputs:
                    self._values[t.name] = ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), t.np_dtype, dev,
                                                                                      dev_id)
                    io.bind_ortvalue_output(t.name, self._values[t.name])
            for t in self.spec.host_inputs(g.name):
                self._values[t.name] = ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), t.np_dtype, dev, dev_id)
                io.bind_ortvalue_input(t.name, self._values[t.name])
            self._bindings[g.name] = io
        n = self.streams
        for p, t, value in self._checked_initial_state():
            # multi-stream: every buffer holds N rows (one per stream slot); `initial` is the row tiled N times
            self._state[p.input] = PingPong(
                ort.OrtValue.ortvalue_from_numpy(np.repeat(value, n, axis=0) if n > 1 else value, dev, dev_id),
                ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), t.np_dtype, dev, dev_id),
                ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), t.np_dtype, dev, dev_id))
            if n > 1:  # a batch's rows: gathered into `in`, written by the run into `out`, scattered back
                self._batch[p.input] = (
                    ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), t.np_dtype, dev, dev_id),
                    ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), t.np_dtype, dev, dev_id))
        # linked inputs are bound once to the producer's output OrtValue: the tensor never leaves the device
        for g in self.spec.graphs:
            for name in self.spec.linked_inputs(g.name):
                if name not in self._values:
                    raise Human3RError(msg(f"graph {g.name}", "linked input produced by a state output", name,
                                           hint="not supported: link a non-state output"))
                self._bindings[g.name].bind_ortvalue_input(name, self._values[name])
        self._run_options = ort.RunOptions()

    def _deactivate_impl(self) -> None:
        self._release_cuda()
        self._bindings.clear()
        self._sessions.clear()
        self._values.clear()
        self._state.clear()
        self._batch.clear()
        self._row_sessions.clear()

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        for pp in self._state.values():
            pp.point_at_initial()

    def read_state(self, name: str) -> np.ndarray:
        if name not in self._state:
            raise Human3RError(msg("read_state", "no such state input", name, sorted(self._state)))
        return np.array(self._state[name].current.numpy(), copy=True)

    # ------------------------------------------------------------------ execution
    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        g = self.spec.graph(graph)
        io = self._bindings[graph]
        for name, value in feeds.items():
            if not isinstance(value, OnDevice):  # ON_DEVICE: already written into device_buffer(name)
                self._values[name].update_inplace(np.ascontiguousarray(value))
        written = {}
        for p in g.state:
            pp = self._state[p.input]
            out = pp.next_output()
            io.bind_ortvalue_input(p.input, pp.current)
            io.bind_ortvalue_output(p.output, out)
            written[p.output] = (pp, out)
        self._sessions[graph].run_with_iobinding(io, self._run_options)
        for pp, _out in written.values():
            pp.advance()
        result = {}
        for name in fetch:
            ov = written[name][1] if name in written else self._values[name]
            result[name] = np.array(ov.numpy(), copy=True)
        return result

    # ------------------------------------------------------------------ multi-stream exports
    def _row_session(self, op: str, dtype: np.dtype, rank: int) -> Any:
        """A one-node session: op "Gather" (data, idx) -> data[idx] or "ScatterND" (data, idx (B, 1), updates)
        -> data with rows idx replaced; every dim symbolic, so one session serves every batch size."""
        key = (op, np.dtype(dtype).name, rank)
        sess = self._row_sessions.get(key)
        if sess is None:
            from onnx import TensorProto, helper

            et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
            dims = [f"d{i}" for i in range(rank)]
            data = helper.make_tensor_value_info("data", et, dims)
            out = helper.make_tensor_value_info("out", et, dims if op == "ScatterND" else ["b"] + dims[1:])
            if op == "Gather":
                ins = [data, helper.make_tensor_value_info("idx", TensorProto.INT64, ["b"])]
                node = helper.make_node("Gather", ["data", "idx"], ["out"], axis=0)
            else:
                ins = [data, helper.make_tensor_value_info("idx", TensorProto.INT64, ["b", 1]),
                       helper.make_tensor_value_info("updates", et, ["b"] + dims[1:])]
                node = helper.make_node("ScatterND", ["data", "idx", "updates"], ["out"])
            g = helper.make_graph([node], f"rows_{op}", ins, [out])
            model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
            ort = self._ort
            so = session_options(ort, dataclasses.replace(self.opts, graph_opt_level="disable"),
                                 self.opts.strict_device)
            sess = self._row_sessions[key] = ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                                                  providers=self.row_providers())
        return sess

    def _bind(self, io: Any, name: str, value: Any, rows: int, output: bool = False) -> None:
        """Bind the first `rows` rows of the N-row device OrtValue `value` (a pointer binding: no copy)."""
        shape = [rows] + list(value.shape())[1:]
        dtype = _NP_OF_ORT[value.data_type()]
        bind = io.bind_output if output else io.bind_input
        bind(name, self.device_type, self.opts.device_id, dtype, shape, value.data_ptr())

    def _rows_op(self, op: str, data: Any, idx: np.ndarray, out: Any, updates: Any = None) -> None:
        sess = self._row_session(op, np.dtype(_NP_OF_ORT[data.data_type()]), len(data.shape()))
        io = sess.io_binding()
        b = len(idx)
        self._bind(io, "data", data, data.shape()[0])
        io.bind_cpu_input("idx", idx.reshape(b, 1) if op == "ScatterND" else idx)
        if updates is not None:
            self._bind(io, "updates", updates, b)
        self._bind(io, "out", out, b if op == "Gather" else out.shape()[0], output=True)
        sess.run_with_iobinding(io, self._run_options)

    def _reset_rows(self, slots: tuple[int, ...]) -> None:
        idx = np.asarray(slots, np.int64)
        for pp in self._state.values():
            out = pp.next_output()  # the whole N rows move to the other buffer: never in place
            self._rows_op("ScatterND", pp.current, idx, out, updates=pp.initial)  # every row of initial is it
            pp.advance()

    def _run_streams(self, graph: str, feeds: Mapping[str, Any], fetch: list[str], slots: tuple[int, ...]
                     ) -> dict[str, np.ndarray]:
        """One batch: state rows of `slots` gathered into the `in` batch buffers, the run writes the `out`
        ones, ScatterND writes them back into the other N-row buffer (ping-pong; rows of absent slots are copied
        unchanged). Host feeds are bound as CPU inputs (ONNX Runtime copies their B rows), ON_DEVICE feeds,
        outputs and linked inputs as the first B rows of their N-row device buffers."""
        g = self.spec.graph(graph)
        io = self._bindings[graph]
        b, idx = len(slots), np.asarray(slots, np.int64)
        for name, value in feeds.items():
            if isinstance(value, OnDevice):
                self._bind(io, name, self._values[name], b)
            else:
                io.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.spec.linked_inputs(graph):
            self._bind(io, name, self._values[name], b)
        states = {p.output: p.input for p in g.state}
        for t in g.outputs:
            if t.name not in states:
                self._bind(io, t.name, self._values[t.name], b, output=True)
        for p in g.state:
            pp, (buf_in, buf_out) = self._state[p.input], self._batch[p.input]
            self._rows_op("Gather", pp.current, idx, buf_in)
            self._bind(io, p.input, buf_in, b)
            self._bind(io, p.output, buf_out, b, output=True)
        self._sessions[graph].run_with_iobinding(io, self._run_options)
        for p in g.state:
            pp, (_buf_in, buf_out) = self._state[p.input], self._batch[p.input]
            out = pp.next_output()
            self._rows_op("ScatterND", pp.current, idx, out, updates=buf_out)
            pp.advance()
        result = {}
        for name in fetch:
            ov = self._batch[states[name]][1] if name in states else self._values[name]
            result[name] = np.array(ov.numpy()[:b], copy=True)
        return result

    def device_value(self, name: str) -> Any:
        """The device OrtValue currently holding tensor `name` (valid until the next run or deactivation).
        Multi-stream exports: N rows; after a batch of B streams its first B rows are that batch's (state: the
        N slot rows)."""
        if name in self._state:
            return self._state[name].current
        if name not in self._values:
            raise Human3RError(msg("device_value", "unknown tensor", name, sorted(self._values)))
        return self._values[name]


def _cuda_options(o: OrtOptions) -> dict[str, str]:
    opts = {"device_id": str(o.device_id), "use_tf32": "1" if o.use_tf32 else "0",
            "cudnn_conv_algo_search": o.cudnn_conv_algo_search, "arena_extend_strategy": o.arena_extend_strategy,
            "do_copy_in_default_stream": "1"}
    if o.gpu_mem_limit_mb:
        opts["gpu_mem_limit"] = str(int(o.gpu_mem_limit_mb) << 20)
    return opts


class OrtCudaBackend(OrtBoundBackend):
    """ONNX Runtime CUDA EP with IOBinding (state on the device, ping-pong)."""

    name = "ort-cuda"
    device_type = "cuda"
    primary_provider = "CUDAExecutionProvider"

    def providers(self) -> list:
        return [("CUDAExecutionProvider", _cuda_options(self.opts))]


def trt_profile_options(spec: ExportSpec) -> dict[str, str]:
    """TensorRT EP explicit profile shapes of a multi-stream export: axis 0 of every input 1 (min) .. N (opt and
    max), the other dims fixed; {} for a single-stream export (static shapes need none). The option strings name
    the inputs of every graph ("name:AxBxC,..."); the EP looks up each input of the network it builds, so the one
    provider list serves all graphs (and `check`, which gets it from providers())."""
    if spec.streams <= 1:
        return {}
    shapes: dict[str, tuple[int, ...]] = {}
    for g in spec.graphs:
        for t in g.inputs:
            if shapes.setdefault(t.name, tuple(t.shape)) != tuple(t.shape):
                raise Human3RError(msg(f"input {t.name}", "two graphs give it different shapes",
                                       [shapes[t.name], t.shape], "one shape per tensor name", "re-export"))
    n = spec.streams

    def fmt(rows: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in (rows, *shape[1:]))}" for name, shape in shapes.items())

    return {"trt_profile_min_shapes": fmt(1), "trt_profile_opt_shapes": fmt(n), "trt_profile_max_shapes": fmt(n)}


class OrtTrtBackend(OrtBoundBackend):
    """ONNX Runtime TensorRT EP (CUDA EP for what TensorRT does not take) with IOBinding."""

    name = "ort-trt"
    device_type = "cuda"
    primary_provider = "TensorrtExecutionProvider"

    def trt_options(self) -> dict[str, str]:
        o = self.opts
        cache = Path(o.engine_cache_dir) if o.engine_cache_dir else self.directory / "ort_trt_cache"
        timing = Path(o.timing_cache_dir) if o.timing_cache_dir else cache
        cache.mkdir(parents=True, exist_ok=True)
        timing.mkdir(parents=True, exist_ok=True)
        return {
            "device_id": str(o.device_id),
            "trt_fp16_enable": "1" if o.fp16 else "0",
            "trt_layer_norm_fp32_fallback": "1" if o.layer_norm_fp32_fallback else "0",
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "1",
            "trt_timing_cache_path": str(timing),
            "trt_max_workspace_size": str(int(o.trt_workspace_mb) << 20),
            "trt_builder_optimization_level": str(int(o.trt_opt_level)),
            **trt_profile_options(self.spec),
        }

    def providers(self) -> list:
        return [("TensorrtExecutionProvider", self.trt_options()), ("CUDAExecutionProvider", _cuda_options(self.opts))]
