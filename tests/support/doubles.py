"""Test doubles for the runtime pipeline: a golden-replay backend and a numpy fake backend honouring graph_specs.

Tests import these (`from support.doubles import ...`); tests/test_doubles.py checks that the doubles themselves
honour the I/O spec, so a wrong double cannot make the pipeline tests pass vacuously.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from human3r_edge.runtime.backends.base import Backend
from human3r_edge.runtime.config import Human3RConfig, get_config
from human3r_edge.runtime.graphs import graph_specs
from human3r_edge.runtime.iospec import ExportSpec


def make_spec(cfg: Human3RConfig, width: int, height: int, k: int, lean: bool = True, streams: int = 1) -> ExportSpec:
    graphs = graph_specs(cfg, width, height, max_people=k, lean=lean, streams=streams)
    return ExportSpec(graphs=graphs, config=cfg.to_dict(), resolution=(width, height), max_people=k, opset=17,
                      checkpoint_sha256=None, lean=lean, streams=streams)


class SpecCheckingBackend(Backend):
    """Base for the doubles: outputs are checked against the spec; calls are recorded.

    Multi-stream specs (`streams` N > 1): state is N rows (one per slot); a batch is computed row by row by the
    single-stream `compute` (over `row_spec`, the spec one stream sees), with `current_slot` naming the slot of
    the row; rows of absent slots are never touched; `slot_calls` records (graph, slots) of every batch."""

    name = "fake"

    def __init__(self, spec: ExportSpec) -> None:
        super().__init__(spec, Path("."))
        self.calls: list[tuple[str, dict[str, np.ndarray]]] = []
        self.slot_calls: list[tuple[str, tuple[int, ...]]] = []
        self.resets = 0
        self.state: dict[str, np.ndarray] = {}
        self.linked: dict[str, np.ndarray] = {}
        self.current_slot = 0
        if spec.streams > 1:
            cfg = Human3RConfig.from_dict(spec.config)
            self.row_spec = make_spec(cfg, spec.resolution[0], spec.resolution[1], spec.max_people, spec.lean)
        else:
            self.row_spec = spec

    def _activate_impl(self) -> None:
        pass

    def _deactivate_impl(self) -> None:
        pass

    def initial_values(self) -> dict[str, np.ndarray]:
        dec = self.spec.graph("decoder")
        return {p.input: np.zeros(dec.input(p.input).shape, np.float32) for p in dec.state}

    def reset_state(self) -> None:
        self.resets += 1
        self.state = self.initial_values()

    def _reset_rows(self, slots: tuple[int, ...]) -> None:
        init = self.initial_values()
        for name, value in self.state.items():
            value[list(slots)] = init[name][list(slots)]

    def read_state(self, name: str) -> np.ndarray:
        return self.state[name].copy()

    def _run_streams(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str], slots: tuple[int, ...]
                     ) -> dict[str, np.ndarray]:
        self.calls.append((graph, {k: np.array(v) for k, v in feeds.items()}))
        self.slot_calls.append((graph, slots))
        g, rg = self.spec.graph(graph), self.row_spec.graph(graph)
        rows = []
        for i, slot in enumerate(slots):
            inputs: dict[str, np.ndarray] = {}
            for t in rg.inputs:
                if t.name in self.state:
                    value = self.state[t.name][slot:slot + 1]
                elif t.name in feeds:
                    value = np.asarray(feeds[t.name])[i]
                else:
                    value = self.linked[t.name][i]
                inputs[t.name] = np.array(value).reshape(t.shape)
            self.current_slot = slot
            outs = self.compute(graph, inputs)
            for t in rg.outputs:
                t.check(outs[t.name], "output")
            rows.append(outs)
        batch = {t.name: np.concatenate([r[t.name] for r in rows], axis=0) for t in g.outputs}
        for t in g.outputs:
            t.check(batch[t.name], "output", batch=len(slots))
        self.linked.update(batch)
        for p in g.state:
            self.state[p.input][list(slots)] = batch[p.output]  # those rows only
        return {k: batch[k].copy() for k in fetch}

    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        self.calls.append((graph, {k: np.array(v) for k, v in feeds.items()}))
        g = self.spec.graph(graph)
        inputs = dict(feeds)
        for t in g.inputs:
            if t.name in self.state:
                inputs[t.name] = self.state[t.name]
            elif t.name not in inputs:
                inputs[t.name] = self.linked[t.name]
        outs = self.compute(graph, inputs)
        for t in g.outputs:
            t.check(outs[t.name], "output")
        self.linked.update(outs)
        for p in g.state:
            self.state[p.input] = outs[p.output].copy()  # a fresh buffer: never the input aliased
        return {k: outs[k].copy() for k in fetch}

    def compute(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def graph_calls(self, graph: str) -> list[dict[str, np.ndarray]]:
        return [f for g, f in self.calls if g == graph]


def zeros_for(spec: ExportSpec, graph: str) -> dict[str, np.ndarray]:
    """Zero outputs of `graph` (give a backend's `row_spec`: one stream's shapes)."""
    return {t.name: np.zeros(t.shape, t.np_dtype) for t in spec.graph(graph).outputs}


# -------------------------------------------------------------------------------------------- golden replay
class GoldenReplayBackend(SpecCheckingBackend):
    """Returns a golden's recorded per-step outputs, so the host pipeline can be checked against the reference.

    det_scores are the golden's post-NMS maps (NMS is idempotent on them); det_offsets are chosen so the detected
    cells reproduce the golden head locations. Decoder human tokens come from inter/dec_last_tokens_concat.
    """

    def __init__(self, golden_dir: Path, npz: str = "golden.npz", k: int | None = None, lean: bool = True) -> None:
        from support.goldens import golden

        info = golden(golden_dir)
        z = np.load(golden_dir / npz)
        self.z = {key: z[key] for key in z.files}
        _, _, h, w = self.z["input/img"].shape
        super().__init__(make_spec(info.model_config(), w, h, info.slots if k is None else k, lean=lean))
        self.threshold = np.float32(info.threshold)
        self.g = self.z["step/smpl_scores"].shape[1]
        n = self.z["step/n_humans"]
        self.first_human = np.concatenate([[0], np.cumsum(n)])
        lens = self.z["inter/dec_last_tokens_len"]
        self.first_token = np.concatenate([[0], np.cumsum(lens)])
        self.enc_step = 0
        self.dec_step = 0
        self.smpl_step = -1

    def humans(self, step: int) -> slice:
        return slice(int(self.first_human[step]), int(self.first_human[step + 1]))

    def compute(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        z, out = self.z, zeros_for(self.row_spec, graph)
        k = self.spec.max_people
        if graph == "encoder":
            i = self.enc_step
            self.enc_step += 1
            scores = z["step/smpl_scores"][i, :, :, 0]
            out["det_scores"][0] = scores
            hh, ww = np.nonzero(scores >= self.threshold)
            loc = z["step/smpl_loc"][self.humans(i)]
            out["det_offsets"][0, hh, ww] = (loc / np.float32(14) - np.float32(0.5)
                                             - np.stack([ww, hh], -1).astype(np.float32))
            out["human_mask"][0] = z["step/msk"][i, :, :, 0]
        elif graph == "decoder":
            i = self.dec_step
            self.dec_step += 1
            self.smpl_step = i
            n = int(z["step/n_humans"][i])
            end = int(self.first_token[i + 1])
            out["human_tokens"][0, :n] = z["inter/dec_last_tokens_concat"][end - n:end]
            out["camera_pose"][0] = z["step/camera_pose"][i]
            out["pts3d_self"][0] = z["step/pts3d_in_self_view"][i]
            out["conf_self"][0] = z["step/conf_self"][i]
            if "pts3d_other" in out:
                out["pts3d_other"][0] = z["step/pts3d_in_other_view"][i]
                out["conf_other"][0] = z["step/conf"][i]
                out["rgb"][0] = z["step/rgb"][i]
            out["state_out"] = inputs["state"] + 1.0
            out["mem_out"] = inputs["mem"] + 1.0
        else:
            sl = self.humans(self.smpl_step)
            n = sl.stop - sl.start
            assert n <= k
            for name, key in (("smpl_rotmat", "step/smpl_rotmat"), ("smpl_shape", "step/smpl_shape"),
                              ("smpl_expression", "step/smpl_expression"), ("smpl_transl", "step/smpl_transl")):
                out[name][0, :n] = z[key][sl]
        return out


# -------------------------------------------------------------------------------------------- scripted fake
PeopleFn = Callable[[int], list[tuple[int, int, float]]]  # encoder call index -> [(h, w, score)] on the g x g grid


class FakeBackend(SpecCheckingBackend):
    """A numpy stand-in for an export, with simple but spec-exact behaviour:

    * people come from `people(call_index)` as peaks on the score grid (offsets 0);
    * the decoder state counts model steps since the last reset (state_out = state + 1); the camera moves
      0.1 along x per step of the segment, so resets and chaining are visible in the poses;
    * a person's human token is a fixed function of its DINOv2 cell, so a person standing still keeps its id;
    * pts3d_self is a pinhole map with focal `focal` (so the Weiszfeld estimate recovers it exactly).
    """

    def __init__(self, cfg: Human3RConfig | None = None, width: int = 128, height: int = 96, k: int = 4,
                 people: PeopleFn | Mapping[int, PeopleFn] | None = None, focal: float = 100.0,
                 streams: int = 1) -> None:
        super().__init__(make_spec(cfg or get_config("tiny"), width, height, k, streams=streams))
        # multi-stream: `people` is one function for every slot or {slot: function}; the call index counts the
        # encoder calls of that slot
        self.people = people or (lambda i: [])
        self.focal = focal
        self.enc_calls = 0
        self.slot_enc_calls = [0] * streams
        g = self.spec.graph("encoder").output("det_scores").shape[-1]
        self.g = g
        d = self.spec.graph("decoder").output("human_tokens").shape[-1]
        rng = np.random.default_rng(7)
        self.cell_tokens = (rng.normal(size=(g * g, d)) * 3).astype(np.float32)

    def compute(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = zeros_for(self.row_spec, graph)
        if graph == "encoder":
            people = self.people
            if isinstance(people, Mapping):
                people = people.get(self.current_slot, lambda i: [])
            index = self.slot_enc_calls[self.current_slot] if self.spec.streams > 1 else self.enc_calls
            for h, w, s in people(index):
                out["det_scores"][0, h, w] = s
            self.enc_calls += 1
            if self.spec.streams > 1:
                self.slot_enc_calls[self.current_slot] += 1
            out["enc_tokens"][:] = inputs["img"].mean()
            out["human_mask"][0] = 0.5 * (inputs["img_mhmr"][0, 0] + 1.0)
        elif graph == "decoder":
            steps = float(inputs["state"][0, 0, 0])
            valid = inputs["human_valid"] > 0
            out["human_tokens"][0, valid] = self.cell_tokens[inputs["human_cell"][valid]]
            out["camera_pose"][0] = [0.1 * steps, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
            _, h, w, _ = out["pts3d_self"].shape
            u, v = np.meshgrid(np.arange(w) - w // 2, np.arange(h) - h // 2, indexing="xy")
            depth = 2.0 + 0.01 * u.astype(np.float32) ** 2 / w
            out["pts3d_self"][0] = np.stack([u * depth / self.focal, v * depth / self.focal, depth], -1)
            out["conf_self"][0] = 1.0 + np.abs(u) / w
            out["state_out"] = inputs["state"] + 1.0
            out["mem_out"] = inputs["mem"] + 1.0
            out["ttt3r_gate"][:] = inputs["ttt3r"][0]
        else:
            tok = inputs["human_tokens"][0]  # (K, D)
            out["smpl_rotmat"][0] = np.eye(3, dtype=np.float32)
            out["smpl_shape"][0] = tok[:, :10]
            out["smpl_transl"][0] = np.stack([tok[:, 0] * 0.01, tok[:, 1] * 0.01, 3.0 + 0 * tok[:, 2]], -1)
        return out


class FakeExportBackend(FakeBackend):
    """FakeBackend with the real backend constructor signature, over an export.json (for CLI tests)."""

    name = "fake-export"

    def __init__(self, spec: ExportSpec, directory: Path, **options) -> None:
        super().__init__(Human3RConfig.from_dict(spec.config), spec.resolution[0], spec.resolution[1],
                         spec.max_people, people=lambda i: [(2, 3, 0.9), (5, 1 + i % 2, 0.8)],
                         streams=spec.streams)
        self.options = options


def write_fake_export(directory: Path, width: int = 128, height: int = 96, k: int = 4) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    make_spec(get_config("tiny"), width, height, k).save(directory)
    return directory
