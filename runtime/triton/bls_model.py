"""The BLS Python model of the `tensorrt` flavour (UNTESTED ON A GPU): host logic in Python, graphs in TensorRT models.

Why BLS and not an ensemble: between the encoder and the decoder the host runs data-dependent logic (3x3 NMS,
threshold, filling K slots in score order, patch/cell indices), after the decoder the tracker matches tokens to
earlier people and the pose chain folds resets, and a reset (reset_interval) re-runs the decoder on the same view
with a fresh state. An ensemble is a static DAG of model calls and cannot branch, loop or keep per-sequence host
state; a BLS model can call the encoder, run the runtime's own host code, then call the decoder with the sequence's
correlation id and flags.

Nothing is copied from the runtime: this is `SequenceModel` (the `python` flavour's model: sequences keyed by
correlation id, START/END/idle handling, outputs) with one change, the backend under each Session: a
`TritonBlsBackend`, whose `run(graph, feeds)` is a BLS request to the TensorRT model of that graph. The Session
(preprocessing, skinning), FramePipeline (detection, slots, tracking, resets, pose chaining) and geometry are the
runtime's, unchanged.

The decoder's recurrent state lives in Triton (implicit state), keyed by the decoder correlation id this backend
owns (one per Session). `reset_state()` makes the next decoder request carry START, on which Triton loads the
initial state from the repository's initial_state files; the pipeline's `first` feed (sent as an ordinary input)
must be 1 exactly on that request (it is: `first` is 1 exactly on the first step after a reset; checked). A reset inside
a sequence (reset_interval) starts the decoder sequence anew with START on the same id (Triton ends the previous one
early, logging a warning). Closing a Session sends one last decoder request with END (zero inputs) so Triton frees
the sequence's slot and state at once instead of after the idle timeout.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.runtime.backends.base import Backend
from human3r_edge.runtime.graphs import DECODER
from human3r_edge.runtime.iospec import ExportSpec, GraphSpec, TensorSpec
from human3r_edge.runtime.triton.model import SequenceModel
from human3r_edge.runtime.triton.tensorrt_flavor import START_INPUT, TRT_MODELS, config_dims, max_batch_size

_IDS = itertools.count(1)
_IDS_LOCK = threading.Lock()


def new_decoder_id() -> int:
    """A decoder correlation id unique across the BLS model's instances (each a process of its own): the process
    id above bit 32, a per-process counter below."""
    with _IDS_LOCK:
        return (os.getpid() << 32) | (next(_IDS) & 0xFFFFFFFF)


def single_stream_view(spec: ExportSpec) -> ExportSpec:
    """The spec one Session sees: single-stream shapes. For a multi-stream export (axis 0 = streams), a stream's
    tensors are (1, ...) and its per-slot vectors (K,) and flags (1,), as in a single-stream export; Triton batches
    the requests of several sequences itself."""
    import dataclasses

    if int(spec.streams) <= 1:
        return spec

    def one(t: TensorSpec) -> TensorSpec:
        rest = tuple(t.shape[1:])
        if t.name in ("human_cell", "human_patch", "human_valid", "first", "ttt3r"):
            shape = rest if rest else (1,)
        else:
            shape = (1,) + rest
        return TensorSpec(t.name, t.dtype, shape, t.doc, batched=False)

    graphs = tuple(GraphSpec(g.name, g.file, tuple(one(t) for t in g.inputs), tuple(one(t) for t in g.outputs),
                             g.state, g.fp16_file) for g in spec.graphs)
    return dataclasses.replace(spec, graphs=graphs, streams=1)


def request_shape(t: TensorSpec, spec: ExportSpec) -> tuple[int, ...]:
    """Shape of one request's tensor for the Triton model: the full dims (max_batch_size 0), or a batch of 1 of
    the config dims (before reshape) for a batched model."""
    dims, _ = config_dims(t, spec)
    return tuple(dims) if max_batch_size(spec) == 0 else (1,) + tuple(dims)


class TritonBlsBackend(Backend):
    """A runtime Backend whose graphs run as BLS requests to the repository's TensorRT models.

    `pb` is Triton's triton_python_backend_utils module; `spec` the export's (full) spec; `models` graph -> model
    name. Host arrays in, host arrays out (every request asks for CPU outputs); a graph's linked inputs are the
    output tensors of the producer's last response, passed on as they are."""

    name = "triton-bls"

    def __init__(self, pb: Any, spec: ExportSpec, models: Mapping[str, str] = TRT_MODELS,
                 corrid: int | None = None, timeout_us: int = 0) -> None:
        super().__init__(single_stream_view(spec), Path("."))
        self.pb = pb
        self.served = spec  # the repository's shapes
        self.models = dict(models)
        self.corrid = int(new_decoder_id() if corrid is None else corrid)
        self.timeout_us = int(timeout_us)
        self._tensors: dict[str, Any] = {}  # linked tensors of the last responses, by name
        self._start = True
        self._open = False  # a decoder sequence was started and not ended

    # ------------------------------------------------------------------ protocol
    def _activate_impl(self) -> None:
        self._tensors.clear()

    def _deactivate_impl(self) -> None:
        if self._open:
            try:
                self._end_sequence()
            except Exception:  # best effort (e.g. at unload): Triton's idle timeout frees the sequence anyway
                pass
        self._tensors.clear()

    def reset_state(self) -> None:
        self._start = True

    def read_state(self, name: str) -> np.ndarray:
        raise BackendUnavailable(msg("triton-bls backend", "the recurrent state lives in Triton (implicit state)",
                                     name, hint="read it in a debugging build by listing state_out as an output"))

    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        g = self.served.graph(graph)
        flags = 0
        if g.state:
            first = float(np.asarray(feeds[START_INPUT]).reshape(-1)[0])
            if (first == 1.0) != self._start:
                raise Human3RError(msg("triton-bls decoder", "`first` disagrees with the sequence START",
                                       f"first={first}, start={self._start}",
                                       "first == 1 exactly on the step after a state reset"))
            if self._start:
                flags |= self.pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
        inputs = []
        for t in g.inputs:
            if t.name in g.state_inputs:
                continue
            if t.name in feeds:
                arr = np.ascontiguousarray(np.asarray(feeds[t.name]).reshape(request_shape(t, self.served)))
                inputs.append(self.pb.Tensor(t.name, arr))
            elif t.name in self._tensors:
                inputs.append(self._tensors[t.name])
            else:
                raise Human3RError(msg(f"triton-bls {graph}", "linked input not produced yet", t.name,
                                       hint="run the graphs in export order"))
        consumers = {t.name for h in self.served.graphs for t in h.inputs}
        linked = [t.name for t in g.outputs if t.name in consumers and t.name not in {p.output for p in g.state}]
        wanted = list(dict.fromkeys(list(fetch) + linked))
        resp = self._exec(graph, inputs, wanted, flags)
        if g.state:
            self._start, self._open = False, True
        out: dict[str, np.ndarray] = {}
        for name in wanted:
            tensor = self.pb.get_output_tensor_by_name(resp, name)
            if tensor is None:
                raise Human3RError(msg(f"triton-bls {graph}", "response lacks an output", name, wanted))
            if name in linked:
                self._tensors[name] = tensor
            if name in fetch:
                single = self.spec.graph(graph).output(name)
                out[name] = np.array(tensor.as_numpy(), copy=True).reshape(single.shape)
        return out

    # ------------------------------------------------------------------ requests
    def _exec(self, graph: str, inputs: list[Any], wanted: list[str], flags: int) -> Any:
        pb = self.pb
        kwargs: dict[str, Any] = {"model_name": self.models[graph], "inputs": inputs,
                                  "requested_output_names": wanted}
        if graph == DECODER:
            kwargs.update(correlation_id=self.corrid, flags=flags)
        if self.timeout_us:
            kwargs["timeout"] = self.timeout_us
        if hasattr(pb, "PreferredMemory"):  # outputs on the host: the runtime's host logic reads them
            kwargs["preferred_memory"] = pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0)
        resp = pb.InferenceRequest(**kwargs).exec()
        if resp.has_error():
            raise Human3RError(msg(f"triton-bls {graph}", f"model {self.models[graph]} failed",
                                   resp.error().message()))
        return resp

    def _end_sequence(self) -> None:
        """One decoder request with END (zero inputs, outputs ignored): Triton frees the sequence now."""
        g = self.served.graph(DECODER)
        inputs = []
        for t in g.inputs:
            if t.name in g.state_inputs:
                continue
            inputs.append(self.pb.Tensor(t.name, np.zeros(request_shape(t, self.served), t.np_dtype)))
        try:
            self._exec(DECODER, inputs, [g.outputs[-1].name], self.pb.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END)
        finally:
            self._open = False
            self._start = True


class BlsSequenceModel(SequenceModel):
    """`SequenceModel` whose Sessions run on `TritonBlsBackend` (see the module docstring)."""

    def __init__(self, pb: Any, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        models = params.get("models")
        self.trt_models = json.loads(models.replace("'", '"')) if models else dict(TRT_MODELS)
        super().__init__(pb, args)
        self.spec = ExportSpec.load(self.export_dir)

    def _new_session(self) -> Any:
        from human3r_edge.runtime.session import Session, SessionOptions

        backend = TritonBlsBackend(self.pb, self.spec, self.trt_models)
        s = Session(backend, self.smplx_model, SessionOptions(dense=self.dense, preprocessing="cpu"))
        s.start()
        return s
