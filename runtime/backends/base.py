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
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Human3RError, msg
from ..iospec import ExportSpec


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
    def run(self, graph: str, feeds: Mapping[str, Any], fetch: Sequence[str] | None = None) -> dict[str, np.ndarray]:
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
        for name, value in feeds.items():
            if isinstance(value, OnDevice):
                if not self.accepts_device_feeds:
                    raise Human3RError(msg(f"graph {graph} input {name}", "given as ON_DEVICE", self.name,
                                           "a host array (only GPU backends with device buffers take ON_DEVICE)"))
                continue
            host[name].check(value)
        names = [t.name for t in g.outputs] if fetch is None else list(fetch)
        outs = {t.name for t in g.outputs}
        bad = [n for n in names if n not in outs]
        if bad:
            raise Human3RError(msg(f"graph {graph}", "cannot fetch unknown outputs", bad, sorted(outs)))
        return self._run_impl(graph, feeds, names)

    def initial_state(self) -> dict[str, np.ndarray]:
        """Initial value of every state input, keyed by state input name (from initial_state.npz)."""
        path = self.directory / self.spec.initial_state_file
        if not path.is_file():
            raise Human3RError(msg("export directory", "missing initial state", str(path), hint="re-run the export"))
        with np.load(path, allow_pickle=False) as z:
            return {k: np.ascontiguousarray(z[k]) for k in z.files}

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
