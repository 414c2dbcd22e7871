"""The PyTorch backend: the Backend protocol over the same torch graph modules the exporter traces.

It opens an export directory like every other backend (export.json, initial_state.npz) and rebuilds the model
the export came from: the checkpoint recorded in `extra.source` (its SHA-256 is verified) or the seeded random
weights. Options: `checkpoint=PATH` (the file moved), `model=Human3R` (already loaded; tests), `threads=N`,
`all_heads=True` (on a --lean export, still compute the cross-view and rgb heads, as the reference demo does,
and drop them from the results: what the benchmark's "PyTorch as the original runs it" measures).
State and linked tensors are torch tensors held by the backend; a state output replaces its input tensor after
each run (a new tensor every run, so nothing is ever both input and output). Returned arrays are fresh numpy
copies owned by the caller.

Multi-stream exports (`streams` = N > 1): every state tensor is held as N rows (the one-row initial state tiled);
`run(..., slots=)` gathers the rows of the batch's slots, runs the batched modules on those B rows and scatters the
new rows back into a new tensor, so rows of absent slots keep their values bit for bit.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from human3r_edge.runtime.backends.base import Backend
from human3r_edge.runtime.config import Human3RConfig
from human3r_edge.errors import CheckpointError, Human3RError, msg
from human3r_edge.runtime.iospec import ExportSpec


class TorchBackend(Backend):
    """PyTorch eager (CPU, fp32) execution of the export's graphs."""

    name = "torch"

    def __init__(self, spec: ExportSpec, directory: Path, **options: Any) -> None:
        super().__init__(spec, directory, **options)
        self._modules: dict[str, torch.nn.Module] = {}
        self._outputs: dict[str, list[str]] = {}  # each module's output names (a superset with all_heads)
        self._state: dict[str, torch.Tensor] = {}
        self._linked: dict[str, torch.Tensor] = {}
        consumers = {n for g in spec.graphs for n in spec.linked_inputs(g.name)}
        self._keep = {t.name for g in spec.graphs for t in g.outputs if t.name in consumers}

    # ------------------------------------------------------------------ lifecycle
    def _activate_impl(self) -> None:
        from human3r_edge.export.graphs_torch import build_graphs

        threads = self.options.get("threads")
        if threads:
            torch.set_num_threads(int(threads))
        model = self.options.get("model") or self._load_model()
        want = Human3RConfig.from_dict(self.spec.config)
        from human3r_edge.export.checkpoint import same_architecture

        if not same_architecture(model.cfg, want):
            raise CheckpointError(msg("torch backend", "the model is not the exported architecture",
                                      model.cfg.name, want.name, "pass the checkpoint the export was made from"))
        W, H = (int(v) for v in self.spec.resolution)
        lean = bool(self.spec.lean) and not self.options.get("all_heads", False)
        built = build_graphs(model.eval(), W, H, int(self.spec.max_people), lean, streams=self.streams)
        for spec, module in built:
            mine = [t.name for t in self.spec.graph(spec.name).outputs]
            names = [t.name for t in spec.outputs]
            if [n for n in names if n in mine] != mine:
                raise Human3RError(msg(f"torch backend: graph {spec.name}", "outputs differ from export.json",
                                       names, mine, "re-export with this version of human3r-edge"))
            self._modules[spec.name] = module
            self._outputs[spec.name] = names

    def _load_model(self) -> Any:
        source = dict(self.spec.extra.get("source") or {})
        if self.options.get("checkpoint"):
            source = {"kind": "checkpoint", "path": str(self.options["checkpoint"]),
                      "sha256": self.spec.checkpoint_sha256}
        kind = source.get("kind")
        if kind == "random":
            from human3r_edge.runtime.config import get_config

            from human3r_edge.export.assets import random_model

            model, _ = random_model(get_config(str(source["config"])), int(source["seed"]),
                                    calibrate=bool(source.get("calibrated", False)))
            return model
        if kind != "checkpoint" or not source.get("path"):
            raise Human3RError(msg(f"torch backend on {self.directory}", "export.json names no weights source",
                                   source, "extra.source from `human3r-edge export`",
                                   "pass checkpoint=PATH (the file the export was made from)"))
        path = Path(str(source["path"]))
        if not path.is_file():
            raise Human3RError(msg("torch backend", "the exported checkpoint is not there", str(path),
                                   hint="pass checkpoint=PATH to the backend (open_backend('torch', DIR, "
                                        "checkpoint=...))"))
        from human3r_edge.export.checkpoint import load_model

        model, ckpt = load_model(path, keep_state_dict=False)
        want = self.spec.checkpoint_sha256
        if want and ckpt.sha256 != want:
            raise CheckpointError(msg(f"torch backend: checkpoint {path}", "is not the file the export was made from",
                                      f"sha256 {ckpt.sha256[:16]}...", f"sha256 {want[:16]}... (export.json)",
                                      "pass the exported checkpoint, or re-export"))
        return model

    def _deactivate_impl(self) -> None:
        self._modules.clear()
        self._outputs.clear()
        self._state.clear()
        self._linked.clear()

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        n = self.streams
        self._state = {p.input: torch.from_numpy(np.repeat(value, n, axis=0) if n > 1 else value.copy())
                       for p, _t, value in self._checked_initial_state()}

    def _reset_rows(self, slots: tuple[int, ...]) -> None:
        rows = torch.tensor(slots, dtype=torch.int64)
        for p, _t, value in self._checked_initial_state():
            new = self._state[p.input].clone()  # a new tensor: a linked or returned one is never changed
            new[rows] = torch.from_numpy(value.copy())  # (1, ...) broadcast to every reset row
            self._state[p.input] = new

    def read_state(self, name: str) -> np.ndarray:
        if name not in self._state:
            raise Human3RError(msg("read_state", "no such state input", name, sorted(self._state)))
        return self._state[name].numpy().copy()

    # ------------------------------------------------------------------ execution
    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        return self._run_rows(graph, feeds, fetch, None)

    def _run_streams(self, graph: str, feeds: Mapping[str, Any], fetch: list[str], slots: tuple[int, ...]
                     ) -> dict[str, np.ndarray]:
        return self._run_rows(graph, feeds, fetch, torch.tensor(slots, dtype=torch.int64))

    def _run_rows(self, graph: str, feeds: Mapping[str, Any], fetch: list[str], rows: torch.Tensor | None
                  ) -> dict[str, np.ndarray]:
        """One run; `rows` (multi-stream): the state rows of the batch, in batch order (None: the whole state)."""
        g = self.spec.graph(graph)
        linked = self.spec.linked_inputs(graph)
        args = []
        for t in g.inputs:
            if t.name in g.state_inputs:
                state = self._state[t.name]
                args.append(state if rows is None else state.index_select(0, rows))
            elif t.name in linked:
                if t.name not in self._linked:
                    raise Human3RError(msg(f"graph {graph}", f"linked input {t.name} has no value yet", None,
                                           f"graph {self.spec.producers()[t.name]} run first in this frame"))
                args.append(self._linked[t.name])
            else:
                args.append(torch.from_numpy(np.ascontiguousarray(feeds[t.name])))
        with torch.inference_mode():
            outs = self._modules[graph](*args)
        values = dict(zip(self._outputs[graph], outs))
        for name, v in values.items():
            if name in self._keep:
                self._linked[name] = v
        for p in g.state:
            if rows is None:
                self._state[p.input] = values[p.output]
            else:
                new = self._state[p.input].clone()  # scatter: rows of absent slots are copied unchanged
                new[rows] = values[p.output]
                self._state[p.input] = new
        return {n: values[n].numpy().copy() for n in fetch}
