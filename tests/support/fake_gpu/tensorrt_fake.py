"""Fake `tensorrt` over FakeDevice: builder/parser/config enough for trt_build, runtime/engine/context for the runner.

An "engine" is a serialized wrapper: magic, a JSON header (TensorRT version, GPU, I/O, flags, FP32-pinned layers,
device memory) and the ONNX bytes; executing it runs ONNX Runtime CPU on device memory. Numerics therefore do
not change with FP16 flags: the stand-in checks contracts, not precision. Enforced (ContractViolation):
* execute_async_v3: every I/O address and input shape set, buffers live and exactly the tensor's size,
  no input overlapping an output, a current CUDA context;
* FP16 / INT8 / BF16 flags or layer precisions on a strongly typed network; set_output_type to FLOAT on a
  non-float tensor; TensorRT >= 11 has no BuilderFlag.FP16 / OBEY_PRECISION_CONSTRAINTS at all.
Realistic failures are reported the TensorRT way (ERROR log + None / False): corrupt plan, plan from another
TensorRT version or GPU, unsupported ONNX op, insufficient workspace, cancelled build.
"""
from __future__ import annotations

import enum
import hashlib
import json
import struct
import sys
import types
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .device import FakeDevice

MAGIC = b"FAKETRT\x01"
CACHE_MAGIC = b"FAKETC1\n"
_ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8", 3: "INT8", 16: "BF16"}
_NP = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_,
       "UINT8": np.uint8, "INT8": np.int8}
_LAYER_TYPES = {"MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY", "Conv": "CONVOLUTION",
                "ConvTranspose": "DECONVOLUTION", "Softmax": "SOFTMAX", "LayerNormalization": "NORMALIZATION",
                "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE",
                "Pow": "ELEMENTWISE", "Less": "ELEMENTWISE", "Equal": "ELEMENTWISE", "Exp": "UNARY", "Neg": "UNARY",
                "Sqrt": "UNARY", "Abs": "UNARY", "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION",
                "Reshape": "SHUFFLE", "Transpose": "SHUFFLE", "Squeeze": "SHUFFLE", "Unsqueeze": "SHUFFLE",
                "Slice": "SLICE", "Concat": "CONCATENATION", "Gather": "GATHER", "Where": "SELECT", "Cast": "CAST",
                "Identity": "IDENTITY", "Resize": "RESIZE", "Constant": "CONSTANT", "Shape": "SHAPE"}


def _version_tuple(v: str) -> tuple[int, int]:
    a = v.split(".")
    return int(a[0]), int(a[1])


def _concrete(t: dict) -> list:
    return list(t.get("concrete", t["shape"]))


def _concrete_shapes(onnx_bytes: bytes, opt: dict[str, tuple]) -> dict[str, tuple]:
    """Every graph input and output shape with the dynamic inputs fixed at `opt` (ONNX shape inference)."""
    import onnx

    m = onnx.load_from_string(onnx_bytes)
    for v in m.graph.input:
        if v.name in opt:
            for d, val in zip(v.type.tensor_type.shape.dim, opt[v.name]):
                d.Clear()
                d.dim_value = int(val)
    g = onnx.shape_inference.infer_shapes(m).graph
    first = next(iter(opt.values()), ())
    out = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        # a dim inference left symbolic (a declared dim_param on an output): the dynamic input's dim there
        out[v.name] = tuple(first[i] if d < 0 and i < len(first) else d for i, d in enumerate(dims))
    return out


def make_tensorrt_module(dev: FakeDevice, version: str = "10.3.0.30", state: dict | None = None) -> types.ModuleType:
    """A `tensorrt` module for sys.modules. `state` is shared with tests (e.g. 'workspace_required')."""
    st = state if state is not None else {}
    major_minor = _version_tuple(version)

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    severity_enum = Severity

    class ILogger:
        Severity = severity_enum

        def __init__(self) -> None:
            pass

        def log(self, severity: Severity, msg: str) -> None:
            raise NotImplementedError

    class Logger(ILogger):
        def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
            super().__init__()
            self.min_severity = min_severity

        def log(self, severity: Severity, msg: str) -> None:
            if severity <= self.min_severity:
                print(f"[fake TRT] {severity.name}: {msg}", file=sys.stderr)

    DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5,
                                         "FP8": 6, "BF16": 7, "INT64": 8, "INT4": 9})
    TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    TensorLocation = enum.IntEnum("TensorLocation", {"DEVICE": 0, "HOST": 1})
    ExecutionContextAllocationStrategy = enum.IntEnum("ExecutionContextAllocationStrategy",
                                                      {"STATIC": 0, "ON_PROFILE_CHANGE": 1, "USER_MANAGED": 2})
    MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1,
                                                     "DLA_LOCAL_DRAM": 2, "DLA_GLOBAL_DRAM": 3, "TACTIC_DRAM": 4})
    LayerType = enum.IntEnum("LayerType", {n: k for k, n in enumerate(sorted(set(_LAYER_TYPES.values())
                                                                             | {"REDUCE", "PLUGIN_V3"}))})
    flag_names = ["TF32", "REFIT", "DISABLE_TIMING_CACHE", "SPARSE_WEIGHTS", "DIRECT_IO", "STRIP_PLAN"]
    if major_minor < (11, 0):  # weak typing exists (deprecated from 10.12), removed in TensorRT 11
        flag_names += ["FP16", "INT8", "BF16", "OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"]
    BuilderFlag = enum.IntEnum("BuilderFlag", {n: k for k, n in enumerate(flag_names)})
    net_flags = {"STRONGLY_TYPED": 1}
    if major_minor < (11, 0):
        net_flags["EXPLICIT_BATCH"] = 0
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net_flags)
    weak_precision_flags = {n for n in ("FP16", "INT8", "BF16") if n in BuilderFlag.__members__}

    def nptype(dt: Any) -> Any:
        return _NP[DataType(dt).name]

    def volume(shape: Any) -> int:
        return int(np.prod(list(shape), dtype=np.int64))

    class Dims(tuple):
        pass

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            pass

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True

        def phase_finish(self, phase_name: str) -> None:
            pass

    class HostMemory(bytes):
        @property
        def nbytes(self) -> int:
            return len(self)

    # ------------------------------------------------------------------ network
    class ITensor:
        def __init__(self, name: str, shape: tuple, dtype: Any) -> None:
            self.name, self.shape, self.dtype = name, Dims(shape), dtype
            self.is_network_input = False
            self.is_network_output = False
            self.location = TensorLocation.DEVICE

    class ILayer:
        def __init__(self, net: "INetworkDefinition", node: Any, outputs: list, inputs: list, name: str) -> None:
            self._net, self.name, self.op = net, name, node.op_type
            self.type = LayerType[_LAYER_TYPES.get(node.op_type, "PLUGIN_V3")] \
                if not node.op_type.startswith("Reduce") else LayerType.REDUCE
            self._outputs, self._inputs = outputs, inputs
            self._precision = DataType.FLOAT
            self.precision_is_set = False
            self._out_types: dict[int, Any] = {}

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        def get_output(self, i: int) -> ITensor:
            return self._outputs[i]

        def get_input(self, i: int) -> ITensor:
            return self._inputs[i]

        @property
        def precision(self) -> Any:
            return self._precision

        @precision.setter
        def precision(self, dt: Any) -> None:
            if self._net.strongly_typed:
                dev.violation(f"ILayer.precision set on layer {self.name} of a strongly typed network")
            self._precision, self.precision_is_set = dt, True

        def reset_precision(self) -> None:
            self.precision_is_set = False

        def set_output_type(self, index: int, dtype: Any) -> None:
            if self._net.strongly_typed:
                dev.violation(f"ILayer.set_output_type on layer {self.name} of a strongly typed network")
            t = self._outputs[index]
            if DataType(t.dtype).name not in ("FLOAT", "HALF", "BF16") and DataType(dtype) == DataType.FLOAT:
                dev.violation(f"set_output_type(FLOAT) on non-float output {t.name} ({DataType(t.dtype).name})")
            self._out_types[index] = dtype

        def get_output_type(self, index: int) -> Any:
            return self._out_types.get(index, self._outputs[index].dtype)

        def output_type_is_set(self, index: int) -> bool:
            return index in self._out_types

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.strongly_typed = bool(flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []
            self._layers: list[ILayer] = []
            self.onnx_bytes = b""
            self.name = "network"

        def get_flag(self, flag: Any) -> bool:
            return bool(self.flags & (1 << int(flag)))

        num_inputs = property(lambda self: len(self._inputs))
        num_outputs = property(lambda self: len(self._outputs))
        num_layers = property(lambda self: len(self._layers))

        def get_input(self, i: int) -> ITensor:
            return self._inputs[i]

        def get_output(self, i: int) -> ITensor:
            return self._outputs[i]

        def get_layer(self, i: int) -> ILayer:
            return self._layers[i]

    class ParserError:
        def __init__(self, desc: str, node: str = "") -> None:
            self._desc, self._node = desc, node

        def desc(self) -> str:
            return self._desc

        def node_name(self) -> str:
            return self._node

        def __str__(self) -> str:
            return f"In node {self._node}: {self._desc}" if self._node else self._desc

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
            self.network, self.logger = network, logger
            self._errors: list[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, i: int) -> ParserError:
            return self._errors[i]

        def clear_errors(self) -> None:
            self._errors.clear()

        def parse_from_file(self, model: str) -> bool:
            path = Path(model)
            if not path.is_file():
                self._errors.append(ParserError(f"Failed to open file: {model}"))
                return False
            import onnx

            return self._parse(onnx.load(str(path)))

        def parse(self, model: bytes, path: str | None = None) -> bool:
            import onnx

            try:
                m = onnx.load_from_string(bytes(model))
            except Exception as exc:  # protobuf decode errors come in several types
                self._errors.append(ParserError(f"Failed to parse ONNX model: {exc}"))
                return False
            return self._parse(m)

        def _parse(self, m: Any) -> bool:
            import onnx

            from human3r_edge.export.trt_ops import load_support_table

            table = load_support_table()
            for n in m.graph.node:
                sup = table.ops.get(n.op_type)
                if n.domain not in ("", "ai.onnx") or sup is None or not sup.supported:
                    self._errors.append(ParserError(f"No importer registered for op: {n.op_type}", n.name))
            if self._errors:
                for e in self._errors:
                    self.logger.log(Severity.ERROR, str(e))
                return False
            inferred = onnx.shape_inference.infer_shapes(m)
            g = inferred.graph
            info = {}
            for v in list(g.input) + list(g.value_info) + list(g.output):
                tt = v.type.tensor_type
                info[v.name] = (tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim),
                                DataType[_ONNX_TO_TRT.get(tt.elem_type, "FLOAT")])
            tensors: dict[str, ITensor] = {}
            init = {t.name for t in g.initializer}
            net = self.network
            for v in g.input:
                if v.name in init:
                    continue
                t = tensors[v.name] = ITensor(v.name, *info[v.name])
                t.is_network_input = True
                net._inputs.append(t)
            for n in g.node:
                outs = []
                for o in n.output:
                    shape, dt = info.get(o, ((), DataType.FLOAT))
                    outs.append(tensors.setdefault(o, ITensor(o, shape, dt)))
                ins = [tensors[i] for i in n.input if i in tensors]
                net._layers.append(ILayer(net, n, outs, ins, n.name or f"node_of_{n.output[0]}"))
            for v in g.output:
                t = tensors[v.name]
                t.is_network_output = True
                net._outputs.append(t)
            net.onnx_bytes = m.SerializeToString()
            return True

    # ------------------------------------------------------------------ config, profiles, caches
    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            """TensorRT's Python binding (pyCore.cpp opt_profile_set_shape): setDimensions for kMIN, kOPT, kMAX
            in turn, each a RuntimeError when it is inconsistent (rank, a negative dim, min <= opt <= max)."""
            lo, mid, hi = (tuple(int(d) for d in x) for x in (min, opt, max))
            for which, dims in (("min", lo), ("opt", mid), ("max", hi)):
                if len(dims) != len(lo) or any(d < 0 for d in dims):
                    raise RuntimeError(f"Shape provided for {which} is inconsistent with other shapes.")
            if any(a > b for a, b in zip(lo, mid)):
                raise RuntimeError("Shape provided for opt is inconsistent with other shapes.")
            if any(b > c for b, c in zip(mid, hi)):
                raise RuntimeError("Shape provided for max is inconsistent with other shapes.")
            self.shapes[input] = (lo, mid, hi)

        def get_shape(self, input: str) -> tuple:
            return self.shapes[input]

    def _origin() -> dict:
        return {"trt": version, "gpu": dev.name, "cc": list(dev.cc)}

    class ITimingCache:
        """Like TensorRT's, a cache remembers the TensorRT version and the device it was timed on."""

        def __init__(self, entries: list[str], origin: dict | None = None) -> None:
            self.entries = list(entries)
            self.origin = dict(origin) if origin is not None else _origin()

        def serialize(self) -> HostMemory:
            return HostMemory(CACHE_MAGIC + json.dumps({"origin": self.origin,
                                                        "entries": sorted(set(self.entries))}).encode())

        def combine(self, other: "ITimingCache", ignore_mismatch: bool) -> bool:
            self.entries += other.entries
            return True

        def reset(self) -> bool:
            self.entries = []
            return True

    class IBuilderConfig:
        def __init__(self, logger: ILogger) -> None:
            self._logger = logger
            self._flags: set[int] = {int(BuilderFlag.TF32)}
            self._pools = {int(MemoryPoolType.WORKSPACE): dev.total_memory}
            self.builder_optimization_level = 3
            self.progress_monitor: Any = None
            self._cache: ITimingCache | None = None
            self.profiles: list[IOptimizationProfile] = []
            self.avg_timing_iterations = 1

        def set_flag(self, flag: Any) -> None:
            self._flags.add(int(flag))

        def clear_flag(self, flag: Any) -> None:
            self._flags.discard(int(flag))

        def get_flag(self, flag: Any) -> bool:
            return int(flag) in self._flags

        @property
        def flags(self) -> int:
            return sum(1 << f for f in self._flags)

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self._pools[int(pool)] = int(pool_size)

        def get_memory_pool_limit(self, pool: Any) -> int:
            return self._pools.get(int(pool), 0)

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache | None:
            data = bytes(serialized_timing_cache)
            if not data:
                return ITimingCache([])
            if not data.startswith(CACHE_MAGIC):
                self._logger.log(Severity.ERROR, "Timing cache blob is corrupt or from another TensorRT version")
                return None
            d = json.loads(data[len(CACHE_MAGIC):].decode())
            return ITimingCache(d["entries"], d["origin"])

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            """TensorRT refuses (ERROR + False) a cache timed on another device or TensorRT version unless
            ignore_mismatch (then its timings may be wrong for this device)."""
            if not isinstance(cache, ITimingCache):
                return False
            if cache.origin != _origin() and not ignore_mismatch:
                self._logger.log(Severity.ERROR, f"setTimingCache: the timing cache was created with "
                                                 f"{cache.origin}, this is {_origin()}: mismatch")
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self._cache

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    def _global_logger(logger: ILogger, who: str) -> ILogger:
        """TensorRT keeps one logger per process: the first one given; later ones are ignored (with a warning
        sent to the first), so their owners never see TensorRT's messages."""
        first = st.setdefault("logger", logger)
        if logger is not first:
            st["ignored_loggers"] = st.get("ignored_loggers", 0) + 1
            first.log(Severity.WARNING, f"The logger passed into {who} differs from one already provided for an "
                                        "existing builder, runtime, or refitter. Uses of the global logger, returned "
                                        "by nvinfer1::getLogger(), will return the existing value.")
        return first

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = _global_logger(logger, "createInferBuilder")
            self.platform_has_fast_fp16 = True

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(int(flags))

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig(self.logger)

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> HostMemory | None:
            log = self.logger.log
            if not network.onnx_bytes:
                log(Severity.ERROR, "Network has no layers (was the ONNX parsed?)")
                return None
            set_weak = sorted(n for n in weak_precision_flags if config.get_flag(BuilderFlag[n]))
            if network.strongly_typed and set_weak:
                dev.violation(f"BuilderFlag {set_weak} set on a strongly typed network")
            if set_weak and major_minor >= (10, 12):
                log(Severity.WARNING, "Weak typing (kFP16/kINT8/kBF16) is deprecated; use strongly typed networks")
            pinned = [lay.name for lay in network._layers if lay.precision_is_set]
            obey = any(config.get_flag(BuilderFlag[n]) for n in ("OBEY_PRECISION_CONSTRAINTS",
                                                                 "PREFER_PRECISION_CONSTRAINTS")
                       if n in BuilderFlag.__members__)
            if obey and "OBEY_PRECISION_CONSTRAINTS" in BuilderFlag.__members__ and \
                    config.get_flag(BuilderFlag.OBEY_PRECISION_CONSTRAINTS):
                for lay in network._layers:  # FP32 demanded of a layer that has no FP32 implementation
                    non_float = [t.name for t in lay._outputs if DataType(t.dtype).name not in ("FLOAT", "HALF")]
                    if lay.precision_is_set and (lay.type in (LayerType.SHAPE, LayerType.CONSTANT) or non_float):
                        log(Severity.ERROR, f"9: [{lay.name}] Could not find any implementation for node "
                                            f"{lay.name} ({LayerType(lay.type).name}) with precision FP32 obeyed "
                                            f"(non-float outputs {non_float})")
                        return None
            if pinned and not obey:
                log(Severity.WARNING, "Layer precisions are set but no precision-constraint flag; they are ignored")
            dynamic = [t.name for t in network._inputs if any(d < 0 for d in t.shape)]
            profiled = {n for p in config.profiles for n in p.shapes}
            if [d for d in dynamic if d not in profiled]:
                log(Severity.ERROR, f"Network has dynamic inputs {dynamic} but no optimization profile covers them")
                return None
            net_in = {t.name: tuple(t.shape) for t in network._inputs}
            for prof in config.profiles:  # TensorRT: a profile must agree with the network's static dims
                for name, (lo, mid, hi) in prof.shapes.items():
                    dims = net_in.get(name)
                    if dims is None:
                        log(Severity.ERROR, f"4: [optimizationProfile] {name} is not a network input")
                        return None
                    bad = len(dims) != len(lo) or any(d >= 0 and not (a == b == c == d)
                                                     for d, a, b, c in zip(dims, lo, mid, hi))
                    if bad:
                        log(Severity.ERROR, f"4: [network.cpp::validate] profile of {name} {lo}..{hi} has "
                                            f"dimensions inconsistent with the network input {list(dims)}")
                        return None
            sizes = [int(np.prod([max(d, 1) for d in t.shape])) * np.dtype(nptype(t.dtype)).itemsize
                     for lay in network._layers for t in lay._outputs]
            need = int(st.get("workspace_required", max(sizes, default=0)))
            limit = config.get_memory_pool_limit(MemoryPoolType.WORKSPACE)
            if limit < need:
                log(Severity.ERROR, f"10: Could not find any implementation for node {network._layers[0].name} "
                                    f"due to insufficient workspace. Requested {need} bytes, limit {limit}.")
                return None
            mon = config.progress_monitor
            if mon is not None:
                mon.phase_start("Building engine", None, len(network._layers))
                for k, lay in enumerate(network._layers):
                    if not mon.step_complete("Building engine", k):
                        mon.phase_finish("Building engine")
                        log(Severity.ERROR, "Engine build cancelled by the progress monitor")
                        return None
                mon.phase_finish("Building engine")
            keys = [f"{lay.op}:{[tuple(t.shape) for t in lay._outputs]}" for lay in network._layers]
            hits = 0
            if config._cache is not None:
                hits = sum(k in set(config._cache.entries) for k in keys)
                config._cache.entries += keys
            # Dynamic dims: like TensorRT, the engine reports -1 for them (even when min = opt = max); the
            # concrete shapes come from the profile (inputs) and shape inference at the profile's opt (outputs)
            profiles = {n: p.shapes[n] for p in config.profiles for n in p.shapes}
            concrete = _concrete_shapes(network.onnx_bytes, {n: v[1] for n, v in profiles.items()}) \
                if dynamic else {}

            def io(t: Any, mode: str) -> dict:
                d = {"name": t.name, "mode": mode, "shape": list(t.shape), "dtype": DataType(t.dtype).name,
                     "concrete": list(concrete.get(t.name, t.shape))}
                if t.name in profiles:
                    d["profile"] = [list(x) for x in profiles[t.name]]
                return d

            header = {
                "trt_version": version, "gpu_name": dev.name, "cc": list(dev.cc),
                "io": [io(t, "INPUT") for t in network._inputs] + [io(t, "OUTPUT") for t in network._outputs],
                "device_memory_size": int(sum(sizes)),
                "strongly_typed": network.strongly_typed,
                "flags": sorted(BuilderFlag(f).name for f in config._flags),
                "fp32_layers": pinned, "precision_constraints_obeyed": bool(obey),
                "timing_cache_hits": hits, "builder_optimization_level": config.builder_optimization_level,
                "onnx_nbytes": len(network.onnx_bytes), "onnx_crc": zlib.crc32(network.onnx_bytes),
            }
            st.setdefault("builds", []).append(header)
            h = json.dumps(header).encode()
            return HostMemory(MAGIC + struct.pack("<I", len(h)) + h + network.onnx_bytes)

    # ------------------------------------------------------------------ runtime side
    class IExecutionContext:
        def __init__(self, engine: "ICudaEngine", user_managed: bool = False) -> None:
            dev.require_context("createExecutionContext", runtime=True)
            self.engine = engine
            self._scratch = None if user_managed else dev.alloc(max(engine.device_memory_size, 1), runtime=True,
                                                                  tag=f"context scratch {engine.name}")
            self._user_managed = user_managed
            self._user_mem: tuple[int, int] | None = None
            self._addr: dict[str, int] = {}
            self._shapes: dict[str, tuple] = {}

        def set_device_memory(self, memory: int, size: int) -> None:
            """USER_MANAGED contexts: the activation memory the application provides (TensorRT >= 10.1)."""
            need = self.engine.device_memory_size_v2
            if int(size) < need:
                dev.violation(f"set_device_memory on {self.engine.name}: {size} bytes < device_memory_size_v2 {need}")
            dev.span(int(memory), int(size), f"set_device_memory {self.engine.name}")
            self._user_mem = (int(memory), int(size))

        def __del__(self) -> None:
            if getattr(self, "_scratch", None) is not None and self._scratch.alive and not dev.capturing():
                dev.free(self._scratch)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            t = self.engine._io.get(name)
            if t is None:
                self.engine._logger.log(Severity.ERROR, f"setTensorAddress: no I/O tensor named {name}")
                return False
            if int(memory) % np.dtype(_NP[t["dtype"]]).itemsize:
                self.engine._logger.log(Severity.ERROR, f"setTensorAddress: {name} address is misaligned")
                return False
            self._addr[name] = int(memory)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self._addr.get(name, 0)

        def set_input_shape(self, name: str, shape: Any) -> bool:
            t = self.engine._io.get(name)
            if t is None or t["mode"] != "INPUT":
                self.engine._logger.log(Severity.ERROR, f"setInputShape: {name} is not an input")
                return False
            lo, _, hi = t.get("profile", [t["shape"]] * 3)
            if len(shape) != len(lo) or any(not (a <= v <= b) for a, v, b in zip(lo, shape, hi)):
                self.engine._logger.log(Severity.ERROR, f"setInputShape: {name} {tuple(shape)} outside the "
                                                        f"profile {tuple(lo)}..{tuple(hi)}")
                return False
            self._shapes[name] = tuple(shape)
            return True

        def _resolved(self) -> dict[str, tuple] | None:
            """Every I/O shape for the input shapes set now; None while a dynamic input has none."""
            eng = self.engine
            if not eng.dynamic:
                return {n: tuple(_concrete(t)) for n, t in eng._io.items()}
            ins = {}
            for n, t in eng._io.items():
                if t["mode"] == "INPUT":
                    if n not in self._shapes and any(d < 0 for d in t["shape"]):
                        return None
                    ins[n] = self._shapes.get(n, tuple(t["shape"]))
            return eng._shapes_for(ins)

        def get_tensor_shape(self, name: str) -> Dims:
            """TensorRT 10: an input's shape as set (the engine's, -1 on dynamic dims, before); an output's as
            the set input shapes make it (-1 on its dynamic dims while an input shape is missing)."""
            t = self.engine._io[name]
            if t["mode"] == "INPUT":
                return Dims(self._shapes.get(name, tuple(t["shape"])))
            resolved = self._resolved()
            return Dims(resolved[name] if resolved is not None else tuple(t["shape"]))

        @property
        def all_binding_shapes_specified(self) -> bool:
            return all(n in self._shapes for n, t in self.engine._io.items() if t["mode"] == "INPUT")

        def infer_shapes(self) -> list[str]:
            return [n for n, t in self.engine._io.items() if t["mode"] == "INPUT" and n not in self._shapes]

        def execute_async_v3(self, stream_handle: int) -> bool:
            dev.require_context("enqueueV3", runtime=True)
            dev.cuda_set_device()  # the CUDA runtime inside TensorRT: the primary context is current
            eng = self.engine
            if self._user_managed:
                if self._user_mem is None:
                    dev.violation(f"enqueueV3 on {eng.name}: USER_MANAGED context without set_device_memory")
                    return False
                dev.span(*self._user_mem, f"enqueueV3 {eng.name} activation memory")
            s = dev.streams.get(int(stream_handle))
            if s is not None and s.capture is not None and st.get("enqueue_breaks_capture"):
                # e.g. a tactic that allocates or synchronises: cudaErrorStreamCaptureUnsupported, and the
                # capture is invalidated (cuStreamEndCapture then returns CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)
                s.invalidated = True
                eng._logger.log(Severity.ERROR, "1: [executionContext.cpp::enqueueV3] Error Code 1: Cuda Runtime "
                                                "(operation not permitted when stream is capturing)")
                return False
            spans = {}
            for name, t in eng._io.items():
                if name not in self._addr:
                    dev.violation(f"enqueueV3 on {eng.name}: tensor {name} has no address (set_tensor_address)")
                    return False
                if t["mode"] == "INPUT" and name not in self._shapes:
                    dev.violation(f"enqueueV3 on {eng.name}: input {name} has no shape (set_input_shape)")
                    return False
            shapes = self._resolved()
            assert shapes is not None  # every input shape is set (checked above)
            for name, t in eng._io.items():
                nbytes = int(np.prod(shapes[name], dtype=np.int64)) * np.dtype(_NP[t["dtype"]]).itemsize
                a = self._addr[name]
                dev.owned(a, f"enqueueV3 {eng.name} tensor {name}")
                alloc = dev.find(a)
                dev.span(a, nbytes, f"enqueueV3 {eng.name} tensor {name}")
                dynamic = any(d < 0 for d in t["shape"])
                # static tensors: a buffer of exactly their size; dynamic ones: one at least that large (sized for
                # the profile's max), bound at its start
                if alloc is not None and (alloc.base != a or alloc.size < nbytes or
                                          (alloc.size != nbytes and not dynamic)):
                    dev.violation(f"enqueueV3 on {eng.name}: buffer of {name} is {alloc.size} bytes at offset "
                                  f"{a - alloc.base}, the tensor needs {'at least' if dynamic else 'exactly'} "
                                  f"{nbytes} (shape {list(shapes[name])})")
                spans[name] = (a, nbytes, t, tuple(shapes[name]))
            ins = [(n, s) for n, s in spans.items() if s[2]["mode"] == "INPUT"]
            outs = [(n, s) for n, s in spans.items() if s[2]["mode"] == "OUTPUT"]
            for n_o, (ao, no, _, _) in outs:
                for n_i, (ai, ni, _, _) in ins + [x for x in outs if x[0] != n_o]:
                    if ai < ao + no and ao < ai + ni:
                        dev.violation(f"enqueueV3 on {eng.name}: {n_i} and output {n_o} overlap in device memory")
            if int(stream_handle) == 0:
                eng._logger.log(Severity.WARNING, "Using default stream in enqueueV3() may lead to extra syncs")
            bound = dict(spans)
            captured = {n: sp[3] for n, sp in spans.items() if sp[2]["mode"] == "INPUT"}

            def run() -> None:  # with the shapes of enqueue time (a CUDA graph replays them as captured)
                feeds = {}
                for n, (a, nb, t, shape) in bound.items():
                    if t["mode"] == "INPUT":
                        raw = dev.span(a, nb, f"{eng.name} reads {n}")
                        feeds[n] = raw.view(_NP[t["dtype"]]).reshape(shape).copy()
                names = [n for n, (_, _, t, _) in bound.items() if t["mode"] == "OUTPUT"]
                for n, v in zip(names, eng._session().run(names, feeds)):
                    a, nb, t, shape = bound[n]
                    if tuple(v.shape) != shape:
                        dev.violation(f"{eng.name}: output {n} computed as {list(v.shape)}, engine said {list(shape)}")
                    dev.span(a, nb, f"{eng.name} writes {n}")[:] = np.ascontiguousarray(
                        v, dtype=_NP[t["dtype"]]).reshape(-1).view(np.uint8)

            def on_launch() -> None:
                """A CUDA graph replays the kernels of its capture, with the shapes set then: replaying it after
                set_input_shape changed them runs the old shapes while the caller expects the new ones."""
                now = {n: self._shapes.get(n) for n in captured}
                if now != captured:
                    changed = {n: f"{list(captured[n])} -> {list(now[n] or ())}" for n in captured
                               if now[n] != captured[n]}
                    dev.violation(f"cuGraphLaunch: a graph captured from enqueueV3 on {eng.name} is replayed after "
                                  f"set_input_shape changed its input shapes ({changed}); it runs the captured "
                                  "shapes: capture one graph per shape set")
            run.on_launch = on_launch  # type: ignore[attr-defined]  (checked by FakeDevice.launch)
            dev.enqueue(stream_handle, f"enqueueV3 {eng.name}", run)
            st["executions"] = st.get("executions", 0) + 1
            return True

    class ICudaEngine:
        def __init__(self, header: dict, onnx_bytes: bytes, logger: ILogger) -> None:
            self.header, self._onnx, self._logger = header, onnx_bytes, logger
            self._io = {t["name"]: t for t in header["io"]}
            self._names = [t["name"] for t in header["io"]]
            self._sess: Any = None
            self.name = hashlib.sha256(onnx_bytes).hexdigest()[:8]
            self.dynamic = any(d < 0 for t in header["io"] for d in t["shape"])
            self._shape_cache: dict[tuple, dict[str, tuple]] = {}

        def _shapes_for(self, inputs: dict[str, tuple]) -> dict[str, tuple]:
            """Every I/O shape for these input shapes (ONNX shape inference, as TensorRT's shape analysis)."""
            key = tuple(sorted(inputs.items()))
            got = self._shape_cache.get(key)
            if got is None:
                dyn = {n: v for n, v in inputs.items() if any(d < 0 for d in self._io[n]["shape"])}
                inferred = _concrete_shapes(self._onnx, dyn)
                got = self._shape_cache[key] = {n: tuple(inputs[n]) if n in inputs else tuple(inferred[n])
                                                for n in self._io}
            return got

        def _session(self) -> Any:
            if self._sess is None:
                import onnxruntime as ort

                so = ort.SessionOptions()
                so.intra_op_num_threads = 1
                so.log_severity_level = 3
                self._sess = ort.InferenceSession(self._onnx, sess_options=so, providers=["CPUExecutionProvider"])
            return self._sess

        num_io_tensors = property(lambda self: len(self._names))
        num_layers = property(lambda self: len(self.header.get("fp32_layers", [])) + 1)
        device_memory_size = property(lambda self: int(self.header["device_memory_size"]))
        device_memory_size_v2 = property(lambda self: int(self.header["device_memory_size"]))
        num_optimization_profiles = property(lambda self: 1)

        def get_tensor_name(self, index: int) -> str:
            return self._names[index]

        def get_tensor_mode(self, name: str) -> Any:
            t = self._io.get(name)
            return TensorIOMode.NONE if t is None else TensorIOMode[t["mode"]]

        def get_tensor_shape(self, name: str) -> Dims:
            return Dims(self._io[name]["shape"])

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType[self._io[name]["dtype"]]

        def get_tensor_location(self, name: str) -> Any:
            return TensorLocation.DEVICE

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list:
            t = self._io.get(name)
            if t is None or t["mode"] != "INPUT" or profile_index != 0:
                self._logger.log(Severity.ERROR, f"getProfileShape: {name} is not an input of profile "
                                                 f"{profile_index}")
                return []
            return [Dims(x) for x in t.get("profile", [t["shape"]] * 3)]

        def create_execution_context(self, strategy: Any = None) -> IExecutionContext:
            user = strategy is not None and ExecutionContextAllocationStrategy(strategy).name == "USER_MANAGED"
            return IExecutionContext(self, user_managed=user)

        def serialize(self) -> HostMemory:
            h = json.dumps(self.header).encode()
            return HostMemory(MAGIC + struct.pack("<I", len(h)) + h + self._onnx)

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = _global_logger(logger, "createInferRuntime")

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> ICudaEngine | None:
            data = bytes(serialized_engine)
            err = lambda text: self.logger.log(Severity.ERROR, text)  # noqa: E731
            if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
                err("1: [stdArchiveReader.cpp] Serialization assertion magicTagRead == kMAGIC_TAG failed")
                return None
            (n,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
            try:
                header = json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + n].decode())
            except (ValueError, UnicodeDecodeError):
                err("1: Serialization error: corrupt plan header")
                return None
            onnx_bytes = data[len(MAGIC) + 4 + n:]
            if len(onnx_bytes) != header.get("onnx_nbytes") or zlib.crc32(onnx_bytes) != header.get("onnx_crc"):
                err("1: Serialization error: truncated or corrupt plan")
                return None
            if header["trt_version"] != version:
                err(f"6: The engine plan file is not compatible with this version of TensorRT, expecting library "
                    f"version {version} got {header['trt_version']}, please rebuild.")
                return None
            if tuple(header["cc"]) != tuple(dev.cc):
                err(f"6: The engine plan file is generated on an incompatible device, expecting compute "
                    f"{dev.cc[0]}.{dev.cc[1]} got compute {header['cc'][0]}.{header['cc'][1]}, please rebuild.")
                return None
            return ICudaEngine(header, onnx_bytes, self.logger)

    def get_plugin_registry() -> None:
        return None

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        return True

    mod = types.ModuleType("tensorrt")
    for name, obj in dict(
            __version__=version, ILogger=ILogger, Logger=Logger, DataType=DataType, TensorIOMode=TensorIOMode,
            TensorLocation=TensorLocation, ExecutionContextAllocationStrategy=ExecutionContextAllocationStrategy,
            MemoryPoolType=MemoryPoolType, LayerType=LayerType, BuilderFlag=BuilderFlag,
            NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, IProgressMonitor=IProgressMonitor,
            Dims=Dims, ITensor=ITensor, ILayer=ILayer, INetworkDefinition=INetworkDefinition, OnnxParser=OnnxParser,
            ParserError=ParserError, IOptimizationProfile=IOptimizationProfile, ITimingCache=ITimingCache,
            IBuilderConfig=IBuilderConfig, Builder=Builder, IExecutionContext=IExecutionContext,
            ICudaEngine=ICudaEngine, Runtime=Runtime, IHostMemory=HostMemory, nptype=nptype, volume=volume,
            get_plugin_registry=get_plugin_registry, init_libnvinfer_plugins=init_libnvinfer_plugins,
            float32=DataType.FLOAT, float16=DataType.HALF, int32=DataType.INT32, int64=DataType.INT64,
            int8=DataType.INT8, uint8=DataType.UINT8, bool=DataType.BOOL, bfloat16=DataType.BF16,
            FAKE_STATE=st, FAKE_DEVICE=dev).items():
        setattr(mod, name, obj)
    return mod
