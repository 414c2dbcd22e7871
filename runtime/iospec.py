"""The I/O spec: names, dtypes and shapes of every input and output of every exported graph.

It is written once by the exporter into `<onnx_dir>/export.json` and is the single source of truth that the
runtime, the engine builder, the runners, the checks and the docs read.

Conventions that every backend follows:
* Tensor names are unique across all graphs of one export.
* A graph input whose name equals an output of an earlier graph (in `GraphSpec` order) is *linked*: backends
  bind it to that output's buffer, so it never leaves the device.
* A graph input listed in `GraphSpec.state` is recurrent state: the backend owns two buffers for it (ping-pong),
  binds the one holding the previous value as input and the other as the paired output, then swaps.
  Its initial value comes from `ExportSpec.initial_state_file` (an .npz keyed by the state *input* name).
* Every other input is a host feed, passed by the caller each call.

Multi-stream exports (`export --streams N`, `ExportSpec.streams = N > 1`): every tensor of every graph is
`batched`: its axis 0 is the stream axis, dynamic from 1 to N (the ONNX dim is the symbol `streams`, a TensorRT
optimization profile 1..N). `TensorSpec.shape[0]` is then the maximum N. A batch of B present streams runs with
axis 0 = B; the backend keeps every state tensor as N rows (one per stream slot) and gathers the rows of the
batch's slots before a run and scatters them back after it (see backends/base.py, `Backend.run(..., slots=)`).
With N = 1 (the default) the graphs are the single-stream graphs, unchanged (`batched` is False everywhere).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import Human3RError, msg

SPEC_FILE = "export.json"
_DTYPES = {"float32", "float16", "int32", "int64", "bool", "uint8"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, float16, int32, int64, bool, uint8
    shape: tuple[int, ...]  # static shapes, except axis 0 of a batched tensor (see `batched`)
    doc: str = ""
    batched: bool = False  # axis 0 is the stream axis: any size 1..shape[0] at run time (multi-stream exports)

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise Human3RError(msg(f"tensor {self.name}", "unsupported dtype", self.dtype, sorted(_DTYPES)))
        if any((not isinstance(d, int)) or d < 0 for d in self.shape):
            raise Human3RError(msg(f"tensor {self.name}", "shape must be static non-negative ints", self.shape))

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.np_dtype.itemsize

    def shape_for(self, batch: int | None = None) -> tuple[int, ...]:
        """The run-time shape: for a batched tensor, axis 0 is `batch` (the maximum when None)."""
        if self.batched and batch is not None:
            return (int(batch),) + tuple(self.shape[1:])
        return tuple(self.shape)

    def check(self, value: Any, what: str = "input", batch: int | None = None) -> None:
        """Raise a clear error if `value` (array-like with .shape/.dtype) does not match this spec.

        For a batched tensor, `batch` is the batch size the value must have on axis 0 (None: any 1..N)."""
        shape = tuple(getattr(value, "shape", ()))
        dtype = np.dtype(getattr(value, "dtype", None) or "float64")
        if self.batched:
            ok = (len(shape) == len(self.shape) and shape[1:] == tuple(self.shape[1:]) and len(shape) > 0
                  and (1 <= shape[0] <= self.shape[0] if batch is None else shape[0] == batch))
            want = (f"shape ({batch if batch is not None else f'1..{self.shape[0]}'}, "
                    f"{', '.join(str(d) for d in self.shape[1:])}) (axis 0: streams)")
        else:
            ok, want = shape == tuple(self.shape), f"shape {tuple(self.shape)}"
        if not ok:
            raise Human3RError(msg(f"{what} tensor: {self.name}", "received incompatible shape", shape, want))
        if dtype != self.np_dtype:
            raise Human3RError(msg(f"{what} tensor: {self.name}", "received incompatible dtype", dtype,
                                   f"dtype {self.dtype}"))


@dataclass(frozen=True)
class StatePair:
    input: str  # graph input holding the previous value
    output: str  # graph output holding the next value


@dataclass(frozen=True)
class GraphSpec:
    name: str  # 'encoder', 'decoder', 'smpl_head' (or finer splits)
    file: str  # ONNX file name relative to the export directory
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    state: tuple[StatePair, ...] = ()
    fp16_file: str | None = None  # FP16-weight variant of the same graph (for strongly typed TensorRT), if exported

    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise Human3RError(msg(f"graph {self.name}", "no such input", name, [t.name for t in self.inputs]))

    def output(self, name: str) -> TensorSpec:
        for t in self.outputs:
            if t.name == name:
                return t
        raise Human3RError(msg(f"graph {self.name}", "no such output", name, [t.name for t in self.outputs]))

    @property
    def state_inputs(self) -> set[str]:
        return {p.input for p in self.state}


@dataclass(frozen=True)
class ExportSpec:
    graphs: tuple[GraphSpec, ...]
    config: dict  # Human3RConfig.to_dict()
    resolution: tuple[int, int]  # (W, H) of the CUT3R image
    max_people: int  # K human slots
    opset: int
    checkpoint_sha256: str | None
    initial_state_file: str = "initial_state.npz"
    lean: bool = False
    dropped_outputs: tuple[str, ...] = ()
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    streams: int = 1  # N: the most streams one batch holds (`export --streams N`); > 1 makes every tensor batched

    def graph(self, name: str) -> GraphSpec:
        for g in self.graphs:
            if g.name == name:
                return g
        raise Human3RError(msg("export spec", "no such graph", name, [g.name for g in self.graphs]))

    def producers(self) -> dict[str, str]:
        """output tensor name -> graph that produces it."""
        return {t.name: g.name for g in self.graphs for t in g.outputs}

    def linked_inputs(self, graph: str) -> set[str]:
        """Inputs of `graph` that are bound to an earlier graph's output buffer."""
        earlier: set[str] = set()
        for g in self.graphs:
            if g.name == graph:
                return {t.name for t in g.inputs if t.name in earlier and t.name not in g.state_inputs}
            earlier |= {t.name for t in g.outputs}
        raise Human3RError(msg("export spec", "no such graph", graph, [g.name for g in self.graphs]))

    def host_inputs(self, graph: str) -> list[TensorSpec]:
        g = self.graph(graph)
        skip = self.linked_inputs(graph) | g.state_inputs
        return [t for t in g.inputs if t.name not in skip]

    # -------------------------------------------------------------------------------- (de)serialisation
    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "ExportSpec":
        def ts(x: dict) -> TensorSpec:
            return TensorSpec(x["name"], x["dtype"], tuple(int(s) for s in x["shape"]), x.get("doc", ""),
                              bool(x.get("batched", False)))

        graphs = tuple(
            GraphSpec(g["name"], g["file"], tuple(ts(t) for t in g["inputs"]), tuple(ts(t) for t in g["outputs"]),
                      tuple(StatePair(p["input"], p["output"]) for p in g.get("state", ())), g.get("fp16_file"))
            for g in d["graphs"]
        )
        return ExportSpec(
            graphs=graphs, config=d["config"], resolution=tuple(d["resolution"]), max_people=int(d["max_people"]),
            opset=int(d["opset"]), checkpoint_sha256=d.get("checkpoint_sha256"),
            initial_state_file=d.get("initial_state_file", "initial_state.npz"), lean=bool(d.get("lean", False)),
            dropped_outputs=tuple(d.get("dropped_outputs", ())), versions=d.get("versions", {}),
            extra=d.get("extra", {}), streams=int(d.get("streams", 1)),
        )

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / SPEC_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, path)
        return path

    @staticmethod
    def load(directory: str | os.PathLike) -> "ExportSpec":
        path = Path(directory) / SPEC_FILE
        if not path.is_file():
            raise Human3RError(msg("export directory", "missing I/O spec", str(path), f"a {SPEC_FILE} written by "
                                   "`human3r-edge export`", "run `human3r-edge export ... --out DIR` first"))
        try:
            return ExportSpec.from_json(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as exc:
            raise Human3RError(msg(str(path), "corrupt I/O spec", repr(exc), hint="re-run the export")) from exc
