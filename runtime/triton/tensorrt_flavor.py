"""The `tensorrt` flavour of the Triton model repository: TensorRT-backend models + a BLS Python model.

UNTESTED ON A GPU: these configurations are generated and validated here (Triton's model-config protobuf, checked
against export.json), but no Triton server with the TensorRT backend has loaded them yet (docs/triton-tensorrt.md).

    REPO/human3r_encoder/config.pbtxt     platform tensorrt_plan; dynamic batching for multi-stream exports
    REPO/human3r_encoder/1/model.plan     the engine (a copy of ENGINES/encoder.engine)
    REPO/human3r_decoder/config.pbtxt     tensorrt_plan + sequence_batching (Oldest) with IMPLICIT STATE:
                                          state -> state_out, mem -> mem_out, initial values from files
    REPO/human3r_decoder/initial_state/   state.bin, mem.bin: raw row-major bytes of initial_state.npz
    REPO/human3r_decoder/1/model.plan
    REPO/human3r_smpl_head/...            like the encoder
    REPO/human3r/config.pbtxt             the BLS Python model the clients talk to (the same name, inputs and
    REPO/human3r/1/model.py               outputs as the `python` flavour): runtime/triton/bls_model.py
    REPO/human3r/1/export/export.json     the I/O spec the BLS model builds its pipeline from
    REPO/README.md                        what this is, how it was made, that it is untested on a GPU

Dims. A single-stream export (streams = 1) has static engines with a leading axis of 1, and Triton's TensorRT
backend requires axis 0 of every binding to be dynamic (-1) when max_batch_size > 0; so those models get
max_batch_size 0 and the full dims (e.g. img [1, 3, H, W], human_cell [K]), and no dynamic batching (concurrency then
comes from instances and from the sequence batcher interleaving sequences). A multi-stream export (streams = N)
has axis 0 dynamic 1..N: max_batch_size N, dims without axis 0, dynamic batching on the encoder and the SMPL-X
head, Oldest batching on the decoder; the per-stream flags (N,) are dims [1] with `reshape { shape: [] }`.

Implicit state and the name pitfall (triton-inference-server/server#8586): Triton's core keeps the input states
and the output states in two name-sorted std::maps and pairs an output state with the input state of the same
*rank*, not with its configured partner. Pairs are therefore swapped unless sorting the input names and sorting the
output names give the same pairing. Names with one a prefix of another (`cache` / `cache_len` with
`cache_next` / `cache_len_next`) are the usual way to break it. `check_state_names` refuses both: ranks that
differ, and a state name (input or output) that is a prefix of another state name of another pair. Our names,
state -> state_out and mem -> mem_out, pass: inputs sort (mem, state), outputs sort (mem_out, state_out), and the
only prefix relation, state / state_out, is within one pair, where it is harmless (the two names live in different
maps and are never compared). So the engines keep their names and no rename is needed.
`use_growable_memory` needs `use_same_buffer_for_input_output` (one buffer as input and output), which a
TensorRT engine must not get (the decoder reads `state` while it writes `state_out`): both stay off.

Control inputs: none on the decoder. The TensorRT backend binds every control tensor to an engine input of that
name, so a CORRID/END/READY the engine lacks fails the load. The engine's `first` (1 on the first step of a state
segment) could be the START control for a single-stream engine (shape [1]), but for a batched model Triton's control
tensor is [B, 1] while the engine's `first` is [B]. So `first` stays an ordinary input that the BLS model sends,
and it sends the START flag on exactly the requests with first = 1 (checked on every request): on START Triton
loads the initial state, so `first` = 1 and a fresh state always come together, as in the runtime.
"""
from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.graphs import DECODER, ENCODER, SMPL_HEAD
from human3r_edge.runtime.iospec import SPEC_FILE, ExportSpec, GraphSpec, StatePair, TensorSpec

FLAVOR = "tensorrt"
BLS_MODEL = "human3r"  # the model clients call, as in the `python` flavour
TRT_MODELS = {ENCODER: "human3r_encoder", DECODER: "human3r_decoder", SMPL_HEAD: "human3r_smpl_head"}
PLAN_FILE = "model.plan"  # the TensorRT backend's default model file name
INITIAL_STATE_DIR = "initial_state"  # Triton's kInitialStateFolder (core/src/constants.h)
START_INPUT = "first"  # decoder input that is 1 exactly on the requests the BLS model sends with START
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8"}
UNTESTED = ("UNTESTED ON A GPU: generated and validated against Triton's model-config protobuf and export.json "
            "only; no Triton server with the TensorRT backend has loaded this repository yet.")

BLS_SHIM = '''"""Triton Python-backend entry of the human3r BLS model (`tensorrt` flavour, written by
`human3r-edge triton-repo`). The logic lives in human3r_edge/runtime/triton/bls_model.py: the runtime's Session and FramePipeline over a backend
whose graphs are BLS calls to the TensorRT models of this repository."""
import triton_python_backend_utils as pb_utils

from human3r_edge.runtime.triton.bls_model import BlsSequenceModel


class TritonPythonModel:
    def initialize(self, args):
        self.impl = BlsSequenceModel(pb_utils, args)

    def execute(self, requests):
        return self.impl.execute(requests)

    def finalize(self):
        self.impl.finalize()
'''


# ------------------------------------------------------------------------------------------ the protobuf
def model_config_pb2() -> ModuleType:
    """Triton's model_config_pb2 (shipped by tritonclient). Loaded from its file, because `tritonclient.grpc`'s
    package __init__ refuses to import without grpcio, which the [http] extra does not install."""
    name = "tritonclient.grpc.model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("tritonclient")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = next((Path(p) / "grpc" / "model_config_pb2.py" for p in locations
                 if (Path(p) / "grpc" / "model_config_pb2.py").is_file()), None)
    if path is None:
        from human3r_edge.errors import BackendUnavailable

        raise BackendUnavailable(msg("tritonclient", "not installed (Triton's model-config protobuf)", None,
                                     "tritonclient/grpc/model_config_pb2.py", "pip install 'tritonclient[http]' "
                                     "(the [serve] extra)"))
    loader_spec = importlib.util.spec_from_file_location(name, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module


def parse_config(path: Path) -> Any:
    """Parse one config.pbtxt into Triton's ModelConfig message (Human3RError when it does not parse)."""
    text_format: Any = importlib.import_module("google.protobuf.text_format")  # protobuf ships no type stubs
    pb2 = model_config_pb2()
    try:
        return text_format.Parse(Path(path).read_text(), pb2.ModelConfig())
    except (text_format.ParseError, OSError, UnicodeDecodeError) as exc:
        raise Human3RError(msg(str(path), "not a valid Triton model configuration", str(exc)[:300],
                               "text protobuf of inference.ModelConfig")) from exc


# ------------------------------------------------------------------------------------------ shapes
def max_batch_size(spec: ExportSpec) -> int:
    """N for a multi-stream export (axis 0 dynamic 1..N); 0 for a single-stream one (static engines)."""
    return int(spec.streams) if int(spec.streams) > 1 else 0


def config_dims(t: TensorSpec, spec: ExportSpec) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(dims, reshape) of a tensor in the config: full dims without batching; for a batched tensor its dims
    without axis 0, and a per-stream scalar (shape (N,)) as dims [1] reshaped to []."""
    if max_batch_size(spec) == 0:
        return tuple(t.shape), None
    if not t.batched:
        raise Human3RError(msg(f"tensor {t.name}", "multi-stream export with an unbatched tensor", t.shape,
                               "every tensor batched (axis 0 = streams)", "re-export with --streams N"))
    item = tuple(t.shape[1:])
    return ((1,), ()) if item == () else (item, None)


def state_dims(t: TensorSpec, spec: ExportSpec) -> tuple[int, ...]:
    return config_dims(t, spec)[0]


def _decoder_inputs(g: GraphSpec) -> list[TensorSpec]:
    """Decoder inputs in the config's `input` list: all but the state inputs (Triton's implicit state)."""
    return [t for t in g.inputs if t.name not in g.state_inputs]


def _plain_outputs(g: GraphSpec) -> list[TensorSpec]:
    outs = {p.output for p in g.state}
    return [t for t in g.outputs if t.name not in outs]


# ------------------------------------------------------------------------------------------ the #8586 check
def check_state_names(pairs: list[tuple[str, str]], what: str = "decoder") -> None:
    """Refuse implicit-state names that Triton would pair wrongly (triton-inference-server/server#8586).

    Triton pairs the i-th input state (sorted by name) with the i-th output state (sorted by name), so the two
    orders must give the configured pairs. As a margin, no state name may be a prefix of a state name of another
    pair (the shape of names that breaks the orders as soon as one is renamed). Within one pair a prefix
    (state / state_out) is harmless: inputs and outputs are sorted separately."""
    ins = sorted(p[0] for p in pairs)
    outs = sorted(p[1] for p in pairs)
    if len(set(ins)) != len(ins) or len(set(outs)) != len(outs):
        raise Human3RError(msg(f"{what} implicit state", "duplicate state names", pairs, "distinct names"))
    paired = dict(pairs)
    by_rank = dict(zip(ins, outs))
    swapped = sorted((i, paired[i], by_rank[i]) for i in ins if by_rank[i] != paired[i])
    if swapped:
        raise Human3RError(msg(f"{what} implicit state", "Triton would swap states (server#8586: it pairs input "
                               "and output states by their rank in name order)",
                               "; ".join(f"{i} -> {o} would get {w}" for i, o, w in swapped),
                               "input and output names that sort in the same pair order",
                               "rename the state tensors (ONNX names, then rebuild the engines)"))
    for a_in, a_out in pairs:
        for b_in, b_out in pairs:
            if (a_in, a_out) == (b_in, b_out):
                continue
            for x in (a_in, a_out):
                for y in (b_in, b_out):
                    if y.startswith(x):
                        raise Human3RError(msg(f"{what} implicit state", "a state name is a prefix of a state "
                                               "name of another pair (server#8586)", f"{x!r} / {y!r}",
                                               "no prefixes across pairs",
                                               "rename the state tensors (ONNX names, then rebuild the engines)"))


# ------------------------------------------------------------------------------------------ writing
def _dims_text(d: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(int(x)) for x in d) + " ]"


def _io_block(kind: str, tensors: list[TensorSpec], spec: ExportSpec) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        dims, reshape = config_dims(t, spec)
        body = f'  {{ name: "{t.name}" data_type: {TRITON_TYPES[t.dtype]} dims: {_dims_text(dims)}'
        if reshape is not None:
            body += f" reshape: {{ shape: {_dims_text(reshape)} }}"
        lines.append(body + (" }," if i < len(tensors) - 1 else " }"))
    return lines + ["]"]


def _trt_config(spec: ExportSpec, g: GraphSpec, max_sequences: int, instances: int, idle_us: int) -> str:
    mbs = max_batch_size(spec)
    name = TRT_MODELS[g.name]
    lines = [f'name: "{name}"', 'platform: "tensorrt_plan"', f"max_batch_size: {mbs}", ""]
    inputs = _decoder_inputs(g) if g.state else list(g.inputs)
    lines += _io_block("input", inputs, spec) + _io_block("output", _plain_outputs(g), spec)
    if g.state:
        per_instance = max(1, math.ceil(max_sequences / instances))
        lines += ["", "sequence_batching {", f"  max_sequence_idle_microseconds: {idle_us}",
                  f"  oldest {{ max_candidate_sequences: {per_instance}"
                  + (f" preferred_batch_size: [ {mbs} ]" if mbs else "") + " max_queue_delay_microseconds: 0 }",
                  "  state ["]
        for i, p in enumerate(g.state):
            t = g.input(p.input)
            dims = _dims_text(state_dims(t, spec))
            dt = TRITON_TYPES[t.dtype]
            lines += ["    {", f'      input_name: "{p.input}"', f'      output_name: "{p.output}"',
                      f"      data_type: {dt}", f"      dims: {dims}",
                      f'      initial_state: {{ data_type: {dt} dims: {dims} data_file: "{p.input}.bin" '
                      f'name: "{p.input} initial state" }}', "    }" + ("," if i < len(g.state) - 1 else "")]
        lines += ["  ]", "}"]
    elif mbs:
        lines += ["", f"dynamic_batching {{ preferred_batch_size: [ {mbs} ] max_queue_delay_microseconds: 500 }}"]
    lines += ["", f"instance_group [ {{ count: {instances} kind: KIND_GPU }} ]", ""]
    return "\n".join(lines)


def _bls_config(spec: ExportSpec, max_sequences: int, instances: int, idle_us: int, smplx: bool) -> str:
    from human3r_edge.runtime.triton.model import CONTROLS, INPUTS, OUTPUTS, SMPLX_OUTPUTS

    outputs = dict(OUTPUTS) | (dict(SMPLX_OUTPUTS) if smplx else {})
    lines = [f'name: "{BLS_MODEL}"', 'backend: "python"', "max_batch_size: 1", ""]

    def block(kind: str, d: dict[str, tuple[str, tuple[int, ...]]], optional: bool) -> list[str]:
        out = [f"{kind} ["]
        for i, (n, (dt, dims)) in enumerate(d.items()):
            out.append(f'  {{ name: "{n}" data_type: {TRITON_TYPES.get(dt, "TYPE_" + dt.upper())} '
                       f"dims: {_dims_text(dims)}{' optional: true' if optional else ''} }}"
                       + ("," if i < len(d) - 1 else ""))
        return out + ["]"]

    lines += block("input", INPUTS, True) + block("output", outputs, False)
    kinds = {"CORRID": "CONTROL_SEQUENCE_CORRID", "START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END"}
    lines += ["", "sequence_batching {", f"  max_sequence_idle_microseconds: {idle_us}",
              f"  oldest {{ max_candidate_sequences: {max_sequences} max_queue_delay_microseconds: 0 }}",
              "  control_input ["]
    for i, (n, dt) in enumerate(CONTROLS.items()):
        kind = kinds[n]
        ctl = f"data_type: {TRITON_TYPES.get(dt, 'TYPE_' + dt.upper())}" if n == "CORRID" else \
            "bool_false_true: [ false, true ]" if dt == "bool" else "fp32_false_true: [ 0, 1 ]"
        lines.append(f'    {{ name: "{n}" control [ {{ kind: {kind} {ctl} }} ] }}' + ("," if i < len(CONTROLS) - 1
                                                                                      else ""))
    bls_instances = max(instances, int(spec.streams))
    lines += ["  ]", "}", "", f"instance_group [ {{ count: {bls_instances} kind: KIND_CPU }} ]", ""]
    params = {"export_dir": "export", "max_sequences": str(max_sequences), "idle_seconds": f"{idle_us / 1e6:g}",
              "smplx_model": "SMPLX_MODEL.npz" if smplx else "",
              "models": json.dumps(TRT_MODELS).replace('"', "'"), "flavor": FLAVOR}
    for k, v in params.items():
        lines += ["parameters {", f'  key: "{k}"', f'  value: {{ string_value: "{v}" }}', "}"]
    return "\n".join(lines) + "\n"


def _state_bytes(spec: ExportSpec, g: GraphSpec, p: StatePair, init: dict[str, np.ndarray]) -> bytes:
    t = g.input(p.input)
    if p.input not in init:
        raise Human3RError(msg(spec.initial_state_file, "missing state", p.input, sorted(init), "re-run the export"))
    a = np.asarray(init[p.input])
    if a.dtype != t.np_dtype:
        raise Human3RError(msg(f"{spec.initial_state_file}: {p.input}", "wrong dtype", a.dtype, t.dtype))
    if max_batch_size(spec):  # one row per sequence: Triton adds the batch axis itself
        if a.shape[1:] != tuple(t.shape[1:]) or a.shape[0] < 1:
            raise Human3RError(msg(f"{spec.initial_state_file}: {p.input}", "wrong shape", a.shape,
                                   f"(n, {', '.join(map(str, t.shape[1:]))})"))
        a = a[0]
    elif a.shape != tuple(t.shape):
        raise Human3RError(msg(f"{spec.initial_state_file}: {p.input}", "wrong shape", a.shape, t.shape))
    return np.ascontiguousarray(a).tobytes()  # row-major, native (little-endian) bytes as Triton reads them


def _engine_files(source: Path, spec: ExportSpec) -> dict[str, Path] | None:
    """Engine path per graph when `source` is an engine folder (all engines present), None for an ONNX export."""
    from human3r_edge.runtime.backends.trt import engine_paths

    found = {g.name: engine_paths(source, g.name)[0] for g in spec.graphs}
    present = {k: p for k, p in found.items() if p.is_file()}
    if not present:
        return None
    missing = sorted(set(found) - set(present))
    if missing:
        raise Human3RError(msg(f"engine folder {source}", "missing engines", missing, sorted(found),
                               "build every graph: human3r-edge build --onnx-dir ONNX_DIR --out ENGINE_DIR"))
    return present


def _check_sidecar(source: Path, g: GraphSpec) -> None:
    """The engine's sidecar (when present) must describe this graph of export.json."""
    import dataclasses

    side = source / f"{g.name}.engine.json"
    if not side.is_file():
        return
    try:
        io = json.loads(side.read_text()).get("io")
    except ValueError as exc:
        raise Human3RError(msg(str(side), "corrupt engine sidecar", repr(exc))) from exc
    if io is not None and json.loads(json.dumps(io)) != json.loads(json.dumps(dataclasses.asdict(g))):
        raise Human3RError(msg(str(side), "engine built for other I/O than export.json", g.name,
                               hint="rebuild the engines from this export"))


def write_tensorrt_repo(source_dir: str | Path, out: str | Path, max_sequences: int = 8, instances: int = 1,
                        idle_seconds: float = 60.0, smplx_model: str | Path | None = None) -> Path:
    """Write the `tensorrt` flavour into `out` (see the module docstring); returns `out`.

    source_dir: an engine folder (`human3r-edge build --out`: <graph>.engine + export.json + initial_state.npz),
    whose engines are copied in as model.plan, or an ONNX export folder, for which the configurations are written
    and each `1/` folder gets a note saying which engine to put there. The result is validated (`validate_repo`)."""
    for name, v in (("max_sequences", max_sequences), ("instances", instances)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise Human3RError(msg(f"--{name.replace('_', '-')}", "must be a positive int", repr(v)))
    if not idle_seconds > 0:
        raise Human3RError(msg("idle_seconds", "must be > 0", idle_seconds))
    source, out = Path(source_dir), Path(out)
    spec = ExportSpec.load(source)
    for gname in TRT_MODELS:
        spec.graph(gname)  # a clear error for an export without the three graphs
    dec = spec.graph(DECODER)
    check_state_names([(p.input, p.output) for p in dec.state])
    if START_INPUT not in {t.name for t in dec.inputs}:
        raise Human3RError(msg("decoder", f"has no `{START_INPUT}` input", [t.name for t in dec.inputs]))
    init_path = source / spec.initial_state_file
    if not init_path.is_file():
        raise Human3RError(msg("export directory", "missing initial state", str(init_path), hint="re-run the export"))
    with np.load(init_path, allow_pickle=False) as z:
        init = {k: np.asarray(z[k]) for k in z.files}
    engines = _engine_files(source, spec)
    idle_us = int(round(idle_seconds * 1e6))
    out.mkdir(parents=True, exist_ok=True)
    for gname, model in TRT_MODELS.items():
        g = spec.graph(gname)
        model_dir = out / model
        if model_dir.exists():
            shutil.rmtree(model_dir)
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(_trt_config(spec, g, max_sequences, instances, idle_us))
        if engines is not None:
            _check_sidecar(source, g)
            shutil.copy2(engines[gname], model_dir / "1" / PLAN_FILE)
        else:
            (model_dir / "1" / "ENGINE_MISSING.txt").write_text(
                f"Put the TensorRT engine of graph `{gname}` here as {PLAN_FILE}: build it on the serving GPU with\n"
                f"  human3r-edge build --onnx-dir {source.resolve()} --out ENGINES\n"
                f"then regenerate: human3r-edge triton-repo --engines ENGINES --out REPO --flavor tensorrt\n")
        if g.state:
            (model_dir / INITIAL_STATE_DIR).mkdir()
            for p in g.state:
                (model_dir / INITIAL_STATE_DIR / f"{p.input}.bin").write_bytes(_state_bytes(spec, g, p, init))
    bls = out / BLS_MODEL
    if bls.exists():
        shutil.rmtree(bls)
    (bls / "1" / "export").mkdir(parents=True)
    shutil.copy2(source / SPEC_FILE, bls / "1" / "export" / SPEC_FILE)
    if smplx_model is not None:
        if not Path(smplx_model).is_file():
            raise Human3RError(msg("--smplx-model", "not a file", str(smplx_model)))
        shutil.copy2(smplx_model, bls / "1" / "SMPLX_MODEL.npz")
    (bls / "1" / "model.py").write_text(BLS_SHIM)
    (bls / "config.pbtxt").write_text(_bls_config(spec, max_sequences, instances, idle_us, smplx_model is not None))
    w, h = (int(v) for v in spec.resolution)
    meta = {"flavor": FLAVOR, "model": BLS_MODEL, "width": w, "height": h, "models": TRT_MODELS,
            "streams": int(spec.streams), "max_batch_size": max_batch_size(spec), "max_sequences": max_sequences,
            "instances": instances, "engines": engines is not None, "smplx": smplx_model is not None,
            "gpu_tested": False}
    (bls / "1" / "repo.json").write_text(json.dumps(meta, indent=1))
    (out / "README.md").write_text(_readme(spec, source, engines is not None, max_sequences, instances))
    validate_repo(out, spec, require_engines=engines is not None)
    return out


def _readme(spec: ExportSpec, source: Path, engines: bool, max_sequences: int, instances: int) -> str:
    mbs = max_batch_size(spec)
    return "\n".join([
        "# human3r-edge Triton model repository, `tensorrt` flavour", "",
        f"**{UNTESTED}**", "",
        f"Made from `{source}` ({'engines' if engines else 'ONNX export: engines still to be built and copied in'}); "
        f"config {spec.config.get('name', '?')}, {spec.resolution[0]}x{spec.resolution[1]}, K={spec.max_people}, "
        f"streams={spec.streams}.", "",
        "| model | what |", "|---|---|",
        f"| `{BLS_MODEL}` | BLS Python model: the one clients call (CORRID/START/END, FRAME -> people, camera) |",
        f"| `{TRT_MODELS[ENCODER]}` | TensorRT encoder, max_batch_size {mbs}"
        f"{', dynamic batching' if mbs else ' (static batch-1 engine: no dynamic batching)'} |",
        f"| `{TRT_MODELS[DECODER]}` | TensorRT decoder step, sequence batching (Oldest), implicit state "
        "state->state_out, mem->mem_out from initial_state/*.bin (loaded on START) |",
        f"| `{TRT_MODELS[SMPL_HEAD]}` | TensorRT SMPL-X head, max_batch_size {mbs} |", "",
        f"Sequences: up to {max_sequences} live ({instances} instance(s) per TensorRT model).",
        "TensorRT engines are tied to one GPU model and TensorRT version: build them on the serving machine, with the "
        "TensorRT of the Triton container (`human3r-edge build`), then regenerate this repository.",
        "See docs/triton-tensorrt.md.", ""])


# ------------------------------------------------------------------------------------------ validation
def _fail(model: str, problem: str, got: object, expected: object, hint: str | None = None) -> Human3RError:
    return Human3RError(msg(f"triton repo, model {model}", problem, got, expected,
                            hint or "regenerate: human3r-edge triton-repo --flavor tensorrt"))


def _check_io(model: str, kind: str, got: Any, want: list[TensorSpec], spec: ExportSpec) -> None:
    pb2 = model_config_pb2()
    names = [x.name for x in got]
    if sorted(names) != sorted(t.name for t in want) or len(set(names)) != len(names):
        raise _fail(model, f"{kind} names differ from export.json", sorted(names), sorted(t.name for t in want))
    by_name = {x.name: x for x in got}
    for t in want:
        x = by_name[t.name]
        dims, reshape = config_dims(t, spec)
        dt = pb2.DataType.Name(x.data_type)
        if dt != TRITON_TYPES[t.dtype]:
            raise _fail(model, f"{kind} {t.name}: wrong data_type", dt, TRITON_TYPES[t.dtype])
        if tuple(x.dims) != dims:
            raise _fail(model, f"{kind} {t.name}: wrong dims", list(x.dims), list(dims))
        got_reshape = tuple(x.reshape.shape) if x.HasField("reshape") else None
        if got_reshape != reshape:
            raise _fail(model, f"{kind} {t.name}: wrong reshape", got_reshape, reshape)


def validate_repo(repo: str | Path, spec: ExportSpec, require_engines: bool = True) -> None:
    """Parse every config.pbtxt of a `tensorrt`-flavour repository with Triton's ModelConfig protobuf and check it
    against `spec` (export.json): model set, platforms, max_batch_size, every input/output name, dtype and dims,
    the decoder's sequence batching (Oldest, idle timeout, implicit state dims/dtypes/initial-state files, the
    server#8586 name rule, no growable/shared state buffers, no control inputs), the BLS model. Raises Human3RError
    on the first problem. require_engines: also require every `1/model.plan`."""
    repo = Path(repo)
    pb2 = model_config_pb2()
    configs = sorted(repo.glob("*/config.pbtxt"))
    parsed = {p.parent.name: parse_config(p) for p in configs}
    want_models = sorted(list(TRT_MODELS.values()) + [BLS_MODEL])
    if sorted(parsed) != want_models:
        raise _fail(str(repo), "unexpected model set", sorted(parsed), want_models)
    mbs = max_batch_size(spec)
    for gname, model in TRT_MODELS.items():
        g, c = spec.graph(gname), parsed[model]
        if c.name != model:
            raise _fail(model, "config name differs from its folder", c.name, model)
        if c.platform != "tensorrt_plan" or c.backend not in ("", "tensorrt"):
            raise _fail(model, "not a TensorRT model", f"platform {c.platform!r} backend {c.backend!r}",
                        "platform tensorrt_plan")
        if c.max_batch_size != mbs:
            raise _fail(model, "wrong max_batch_size", c.max_batch_size, f"{mbs} (export streams={spec.streams}: "
                        + ("axis 0 dynamic 1..N)" if mbs else "static batch-1 engines need 0 and full dims)"))
        plan = repo / model / "1" / PLAN_FILE
        if require_engines and not plan.is_file():
            raise _fail(model, "engine missing", str(plan), "the TensorRT engine of graph " + gname,
                        "human3r-edge build --onnx-dir ONNX_DIR --out ENGINES, then triton-repo --engines ENGINES")
        inputs = _decoder_inputs(g) if g.state else list(g.inputs)
        _check_io(model, "input", c.input, inputs, spec)
        _check_io(model, "output", c.output, _plain_outputs(g), spec)
        if any(ig.kind != pb2.ModelInstanceGroup.KIND_GPU for ig in c.instance_group):
            raise _fail(model, "TensorRT instances must be KIND_GPU", [ig.kind for ig in c.instance_group],
                        "KIND_GPU")
        which = c.WhichOneof("scheduling_choice")
        if not g.state:
            want = "dynamic_batching" if mbs else None
            if which != want:
                raise _fail(model, "wrong scheduler", which, want or "none (max_batch_size 0: no batching)")
            if mbs and any(s > mbs for s in c.dynamic_batching.preferred_batch_size):
                raise _fail(model, "preferred_batch_size above max_batch_size",
                            list(c.dynamic_batching.preferred_batch_size), f"<= {mbs}")
            continue
        if which != "sequence_batching":
            raise _fail(model, "stateful model without sequence_batching", which, "sequence_batching")
        _check_decoder_sequence(model, c.sequence_batching, g, spec, repo / model)
    _check_bls(parsed[BLS_MODEL], repo / BLS_MODEL)


def _check_decoder_sequence(model: str, sb: Any, g: GraphSpec, spec: ExportSpec, model_dir: Path) -> None:
    pb2 = model_config_pb2()
    if sb.WhichOneof("strategy_choice") != "oldest":
        raise _fail(model, "decoder must use the Oldest strategy (sequences interleave on one instance; Direct "
                    "gives one slot per batch row)", sb.WhichOneof("strategy_choice"), "oldest")
    if sb.oldest.max_candidate_sequences < 1:
        raise _fail(model, "max_candidate_sequences not set", sb.oldest.max_candidate_sequences, ">= 1")
    if sb.max_sequence_idle_microseconds <= 0:
        raise _fail(model, "no idle timeout", sb.max_sequence_idle_microseconds, "> 0")
    controls = [ci.name for ci in sb.control_input]
    if controls:
        raise _fail(model, "control inputs on the decoder (the TensorRT backend binds each to an engine input of "
                    "that name; the engine has none, and `first` is an ordinary input)", controls, "none")
    pairs = [(s.input_name, s.output_name) for s in sb.state]
    want_pairs = [(p.input, p.output) for p in g.state]
    if sorted(pairs) != sorted(want_pairs):
        raise _fail(model, "implicit state pairs differ from export.json", pairs, want_pairs)
    check_state_names(pairs, model)
    for s in sb.state:
        t = g.input(s.input_name)
        dt = TRITON_TYPES[t.dtype]
        dims = state_dims(t, spec)
        if pb2.DataType.Name(s.data_type) != dt:
            raise _fail(model, f"state {s.input_name}: wrong data_type", pb2.DataType.Name(s.data_type), dt)
        if tuple(s.dims) != dims:
            raise _fail(model, f"state {s.input_name}: wrong dims", list(s.dims), list(dims))
        out_t = g.output(s.output_name)
        if out_t.dtype != t.dtype or out_t.shape != t.shape:
            raise _fail(model, f"state {s.input_name}: output {s.output_name} differs in export.json",
                        f"{out_t.dtype}{list(out_t.shape)}", f"{t.dtype}{list(t.shape)}")
        if s.use_growable_memory or s.use_same_buffer_for_input_output:
            raise _fail(model, f"state {s.input_name}: growable / shared state buffer",
                        "use_growable_memory or use_same_buffer_for_input_output set",
                        "both off (growable memory needs one buffer as input and output; the engine reads "
                        "state while it writes state_out)")
        if len(s.initial_state) != 1:
            raise _fail(model, f"state {s.input_name}: initial_state must have exactly one entry",
                        len(s.initial_state), 1)
        init = s.initial_state[0]
        if pb2.DataType.Name(init.data_type) != dt or tuple(init.dims) != dims or not init.name:
            raise _fail(model, f"state {s.input_name}: initial_state data_type/dims/name",
                        f"{pb2.DataType.Name(init.data_type)} {list(init.dims)} name={init.name!r}",
                        f"{dt} {list(dims)} and a name")
        which = init.WhichOneof("state_data")
        if which == "data_file":
            path = model_dir / INITIAL_STATE_DIR / init.data_file
            nbytes = int(np.prod(dims, dtype=np.int64)) * t.np_dtype.itemsize
            if not path.is_file() or path.stat().st_size != nbytes:
                raise _fail(model, f"state {s.input_name}: initial state file", f"{path} "
                            f"({path.stat().st_size if path.is_file() else 'missing'} bytes)", f"{nbytes} bytes")
        elif not (which == "zero_data" and init.zero_data):
            raise _fail(model, f"state {s.input_name}: initial_state without data", which, "data_file or zero_data")


def _check_bls(c: Any, model_dir: Path) -> None:
    pb2 = model_config_pb2()
    if c.backend != "python":
        raise _fail(BLS_MODEL, "not a Python-backend model", c.backend, "python")
    if c.WhichOneof("scheduling_choice") != "sequence_batching":
        raise _fail(BLS_MODEL, "no sequence_batching", c.WhichOneof("scheduling_choice"), "sequence_batching")
    kinds = sorted(pb2.ModelSequenceBatching.Control.Kind.Name(k.kind) for ci in c.sequence_batching.control_input
                   for k in ci.control)
    want = sorted(["CONTROL_SEQUENCE_CORRID", "CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_END"])
    if kinds != want:
        raise _fail(BLS_MODEL, "control inputs", kinds, want)
    params = {k: v.string_value for k, v in c.parameters.items()}
    if params.get("flavor") != FLAVOR:
        raise _fail(BLS_MODEL, "parameter flavor", params.get("flavor"), FLAVOR)
    for f in ("1/model.py", "1/export/" + SPEC_FILE):
        if not (model_dir / f).is_file():
            raise _fail(BLS_MODEL, "file missing", str(model_dir / f), f)
