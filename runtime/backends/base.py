"""The backend protocol shared by PyTorch, ONNX Runtime (CPU/CUDA/TensorRT EP) and native TensorRT.

A backend runs the graphs of one export (see iospec.py) and owns the recurrent state:
* `run(graph, feeds, fetch)` executes one graph. `feeds` holds host arrays for the graph's host inputs only;
  linked inputs come from earlier graphs' output buffers and state inputs from the backend's state buffers.
  It returns host copies of the outputs named in `fetch` (small outputs by default; dense maps on request).
* After a graph with state pairs runs, the backend makes its state outputs the next call's state inputs
  (ping-pong: two buffers per state tensor, never one buffer as both input and output).
* `reset_state()` restores the initial state (from the export's initial_state.npz).

Returned arrays are owned by the caller (fresh copies) unless a backend documents otherwise.
Input validation (names, dtypes, shapes) happens here, once, before `_run_impl`.

A backend with `accepts_device_feeds = True` (native TensorRT) also takes the marker `ON_DEVICE` as a feed: the
caller has already written that input into the backend's own device buffer (`device_buffer(name)`), on the
backend's stream, so nothing is uploaded (the GPU preprocessing kernels do this).

Multi-stream exports (`spec.streams` = N > 1, see iospec.py) keep every state tensor as N rows, one per stream
slot, and run batches of B <= N present streams:
* `run(graph, feeds, fetch, slots=[k0, k1, ...])`: `slots` (required, distinct, each in 0..N-1) names the stream
  slot of each batch row, in batch order; host feeds and returned arrays have axis 0 = B = len(slots). State rows
  of those slots are gathered before the run and scattered back after it; rows of absent slots are not touched
  (bit-identical). A graph with linked inputs must run with the slots its producer graph last ran with.
* `reset_streams(slots)` restores the initial state of those rows only; `reset_state()` restores every row.
* `read_state(name)` returns all N rows.
Single-stream exports take `slots=None` (or `[0]`) and run as before.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.iospec import ExportSpec, StatePair, TensorSpec

B = TypeVar("B")


class PingPong(Generic[B]):
    """The device buffers of one state tensor: two ping-pong buffers plus its read-only initial value.

    `current` is what the next run reads; the run writes `next_output()`, and `advance()` makes that current.
    Never one buffer as both input and output. Reset either points `current` at `initial` (ONNX Runtime: no copy,
    `initial` is never bound as an output) or copies `initial` into `current` (TensorRT: fixed addresses for CUDA
    graphs, so `start` is a buffer). `B` is the buffer type (an OrtValue, a pycuda allocation).
    """

    def __init__(self, initial: B, a: B, b: B, nbytes: int = 0, start: B | None = None) -> None:
        self.initial, self.buffers, self.nbytes = initial, (a, b), int(nbytes)
        self.current: B = initial if start is None else start

    def next_output(self) -> B:
        return self.buffers[1] if self.current is self.buffers[0] else self.buffers[0]

    def advance(self) -> None:
        self.current = self.next_output()

    def point_at_initial(self) -> None:
        self.current = self.initial


class OnDevice:
    """Feed marker: the input is already in the backend's device buffer for it (see the module docstring)."""

    _instance: "OnDevice | None" = None

    def __new__(cls) -> "OnDevice":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ON_DEVICE"


ON_DEVICE = OnDevice()


class Backend(ABC):
    name: str = "base"
    accepts_device_feeds: bool = False  # True: feeds may be ON_DEVICE (written into device_buffer(name))

    def __init__(self, spec: ExportSpec, directory: Path, **options: Any) -> None:
        self.spec = spec
        self.directory = Path(directory)
        self.options = options
        self.is_active = False
        self._adopted: list[Any] = []
        self._last_slots: dict[str, tuple[int, ...]] = {}  # graph -> slots of its last multi-stream run

    def adopt(self, resource: Any) -> Any:
        """Tie `resource` (an object with `close()` holding GPU memory in this backend's CUDA context, e.g. a
        CudaSkinner or GpuFramePreparer) to this backend: it is closed at deactivation, before the context is
        released; pycuda cannot free it after that (it would leak). Returns `resource`."""
        if not hasattr(self, "_adopted"):
            self._adopted = []
        self._adopted.append(resource)
        return resource

    def _close_adopted(self) -> None:
        """Close adopted resources, newest first (call while the backend's CUDA context is still valid)."""
        adopted = getattr(self, "_adopted", [])
        while adopted:
            adopted.pop().close()

    # ------------------------------------------------------------------ lifecycle (context manager)
    def activate(self) -> "Backend":
        if not self.is_active:
            self._activate_impl()
            self.is_active = True
            self.reset_state()
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Backend":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # ------------------------------------------------------------------ execution
    @property
    def streams(self) -> int:
        """N: the most streams a batch holds (1 for a single-stream export)."""
        return int(getattr(self.spec, "streams", 1))

    def check_slots(self, slots: Sequence[int] | None) -> tuple[int, ...]:
        """`slots` as a tuple after checking it against the export's N (see the module docstring)."""
        n = self.streams
        if slots is None:
            if n > 1:
                raise Human3RError(msg(f"{self.name} backend", "multi-stream export run without slots", "slots=None",
                                       f"slots: the stream slot (0..{n - 1}) of each batch row"))
            return (0,)
        try:
            out = tuple(int(k) for k in slots)
        except (TypeError, ValueError) as exc:
            raise Human3RError(msg("slots", "not a sequence of ints", repr(slots), f"ints in 0..{n - 1}")) from exc
        if not out or len(set(out)) != len(out) or any(k < 0 or k >= n for k in out) or any(
                isinstance(k, bool) for k in slots):
            raise Human3RError(msg("slots", "must be distinct stream slots", list(out), f"1..{n} distinct ints in "
                                   f"0..{n - 1}", f"the export batches at most {n} stream(s) (export --streams N)"))
        return out

    def run(self, graph: str, feeds: Mapping[str, Any], fetch: Sequence[str] | None = None,
            slots: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise Human3RError(msg(f"{self.name} backend", "not active", hint="use it as a context manager or "
                                   "call activate() first"))
        g = self.spec.graph(graph)
        host = {t.name: t for t in self.spec.host_inputs(graph)}
        missing = sorted(set(host) - set(feeds))
        unexpected = sorted(set(feeds) - set(host))
        if missing or unexpected:
            raise Human3RError(msg(f"graph {graph}", "wrong host feeds", f"missing {missing}, unexpected {unexpected}",
                                   f"exactly {sorted(host)}"))
        batch = self.check_slots(slots)
        multi = self.streams > 1
        for name, value in feeds.items():
            if isinstance(value, OnDevice):
                if not self.accepts_device_feeds:
                    raise Human3RError(msg(f"graph {graph} input {name}", "given as ON_DEVICE", self.name,
                                           "a host array (only GPU backends with device buffers take ON_DEVICE)"))
                continue
            host[name].check(value, batch=len(batch) if multi else None)
        names = [t.name for t in g.outputs] if fetch is None else list(fetch)
        outs = {t.name for t in g.outputs}
        bad = [n for n in names if n not in outs]
        if bad:
            raise Human3RError(msg(f"graph {graph}", "cannot fetch unknown outputs", bad, sorted(outs)))
        if not multi:
            if batch != (0,):
                raise Human3RError(msg("slots", "single-stream export", list(batch), "None or [0]",
                                       "export with --streams N to batch streams"))
            return self._run_impl(graph, feeds, names)
        producers = self.spec.producers()
        for name in sorted(self.spec.linked_inputs(graph)):
            before = self._last_slots.get(producers[name])
            if before != batch:
                raise Human3RError(msg(f"graph {graph} input {name}", "linked to a run of other streams",
                                       f"slots {list(batch)} now, {producers[name]} last ran with "
                                       f"{list(before) if before is not None else 'nothing'}",
                                       "the same slots in the same order", f"run {producers[name]} first"))
        out = self._run_streams(graph, feeds, names, batch)
        self._last_slots[graph] = batch
        return out

    def _run_streams(self, graph: str, feeds: Mapping[str, Any], fetch: list[str], slots: tuple[int, ...]
                     ) -> dict[str, np.ndarray]:
        """One batch of a multi-stream export (see the module docstring); backends that batch override it."""
        from human3r_edge.errors import BackendUnavailable

        raise BackendUnavailable(msg(f"{self.name} backend", "cannot run multi-stream exports",
                                     f"streams={self.streams}", "a backend with multi-stream support",
                                     "use ort-cpu, ort-cuda, ort-trt or trt, or export with --streams 1"))

    def reset_streams(self, slots: Sequence[int]) -> None:
        """Initial state for the rows of `slots` only (multi-stream exports); every row of a single-stream one."""
        checked = self.check_slots(slots)
        if self.streams == 1:
            self.reset_state()
            return
        self._reset_rows(checked)

    def _reset_rows(self, slots: tuple[int, ...]) -> None:
        from human3r_edge.errors import BackendUnavailable

        raise BackendUnavailable(msg(f"{self.name} backend", "cannot reset one stream of a multi-stream export",
                                     f"streams={self.streams}", "a backend with multi-stream support"))

    def initial_state(self) -> dict[str, np.ndarray]:
        """Initial value of every state input, keyed by state input name (from initial_state.npz)."""
        path = self.directory / self.spec.initial_state_file
        if not path.is_file():
            raise Human3RError(msg("export directory", "missing initial state", str(path), hint="re-run the export"))
        with np.load(path, allow_pickle=False) as z:
            return {k: np.ascontiguousarray(z[k]) for k in z.files}

    def _checked_initial_state(self) -> list[tuple[StatePair, TensorSpec, np.ndarray]]:
        """Every state pair of every graph with its input spec and initial value (initial_state.npz), checked
        against the spec: what each backend uploads into its state buffers."""
        init = self.initial_state()
        out = []
        for g in self.spec.graphs:
            for p in g.state:
                if p.input not in init:
                    raise Human3RError(msg("initial_state.npz", "missing state", p.input, sorted(init)))
                t = g.input(p.input)
                t.check(init[p.input], "initial state")
                out.append((p, t, init[p.input]))
        return out

    @abstractmethod
    def _activate_impl(self) -> None: ...

    @abstractmethod
    def _deactivate_impl(self) -> None: ...

    @abstractmethod
    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def reset_state(self) -> None: ...

    @abstractmethod
    def read_state(self, name: str) -> np.ndarray:
        """Host copy of the current value of state input `name` (for tests and debugging)."""
