"""The runtime pipeline on the REAL tiny Human3R model (the model engineer's PyTorch re-implementation, run
per the graph contract of runtime/graphs.py through a test-only Backend adapter) against the goldens.

This checks, before any ONNX export exists, that the contract the runtime drives (K padded human slots with
human_cell / human_patch / human_valid, the `first` and `ttt3r` flags, ping-pong state, reset + duplicate view)
carries the reference's semantics: every step/demo/smplx key of the golden is reproduced, detections from the
model's own score maps included.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from human3r_edge.runtime.backends.base import Backend  # noqa: E402
from support.goldens import golden  # noqa: E402
from support.doubles import make_spec  # noqa: E402


class TorchGraphBackend(Backend):
    """The three graphs of runtime/graphs.py computed with export.model's decomposed methods (fp32, CPU)."""

    name = "torch-graphs"

    def __init__(self, model, width: int, height: int, k: int = 4) -> None:
        super().__init__(make_spec(model.cfg, width, height, k, lean=False), Path("."))
        self.model = model.eval()
        self.w, self.h = width, height
        self.linked: dict[str, torch.Tensor] = {}
        self.state: dict[str, torch.Tensor] = {}

    def _activate_impl(self) -> None:
        pass

    def _deactivate_impl(self) -> None:
        pass

    def reset_state(self) -> None:
        with torch.inference_mode():
            s, m = self.model.initial_state()
        self.state = {"state": s.clone(), "mem": m.clone()}

    def read_state(self, name: str) -> np.ndarray:
        return self.state[name].numpy().copy()

    @torch.inference_mode()
    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        m = self.model
        t = {k: torch.from_numpy(np.array(v)) for k, v in feeds.items()}
        if graph == "encoder":
            enc = m.encode_image(t["img"])
            dino = m.encode_human(t["img_mhmr"])
            scores, offsets = m.detect(dino)
            out = {"enc_tokens": enc, "dino_tokens": dino, "det_scores": scores, "det_offsets": offsets,
                   "human_mask": m.human_mask(dino)}
        elif graph == "decoder":
            enc, dino = self.linked["enc_tokens"], self.linked["dino_tokens"]
            state, mem = self.state["state"], self.state["mem"]
            first = bool(t["first"][0] > 0.5)
            ttt3r = bool(t["ttt3r"][0] > 0.5)
            valid = t["human_valid"][None]  # (1, K)
            dino_h, enc_h, pos = m.gather_humans(enc, dino, t["human_cell"], t["human_patch"], self.w)
            prompts = m.fuse_humans(dino_h, enc_h)
            dec = m.decode(enc, m.pose_query(enc, mem, first), state, self.h, self.w, prompts, pos,
                           human_valid=valid, ttt3r=ttt3r)
            heads = m.heads(dec.hooks, self.h, self.w)
            n_img = enc.shape[1]
            out = dict(heads)
            out["state_out"] = m.next_state(state, dec.new_state, dec.ttt3r_logit_mean, ttt3r and not first)
            out["mem_out"] = m.update_mem(mem, enc, dec.final_tokens[:, 0:1])
            out["human_tokens"] = dec.final_tokens[:, 1 + n_img:] * valid[..., None]
            out["human_dino_tokens"] = dino_h
            lm = dec.ttt3r_logit_mean
            out["ttt3r_gate"] = torch.sigmoid(lm) if lm is not None else torch.zeros(1, m.cfg.state_size)
            self.state = {"state": out["state_out"].clone(), "mem": out["mem_out"].clone()}
        else:
            rot, betas, expr, transl = m.smpl_heads(self.linked["human_tokens"], self.linked["human_dino_tokens"])
            out = {"smpl_rotmat": rot, "smpl_shape": betas, "smpl_expression": expr, "smpl_transl": transl}
        g = self.spec.graph(graph)
        res = {o.name: out[o.name].detach().to(torch.float32).contiguous() for o in g.outputs}
        for o in g.outputs:
            o.check(res[o.name].numpy(), "output")
        self.linked.update(res)
        return {k: res[k].numpy().copy() for k in fetch}


class GraphModuleBackend(Backend):
    """Runs the exporter's per-graph torch modules (export/graphs_torch.py: what gets traced to ONNX) by the I/O
    spec: inputs in spec order from host feeds, linked outputs and ping-pong state; outputs in spec order."""

    name = "torch-graph-modules"

    def __init__(self, model, width: int, height: int, k: int = 4) -> None:
        from human3r_edge.export.graphs_torch import build_graphs
        from human3r_edge.runtime.iospec import ExportSpec

        pairs = build_graphs(model, width, height, k, lean=False)
        spec = ExportSpec(graphs=tuple(s for s, _ in pairs), config=model.cfg.to_dict(), resolution=(width, height),
                          max_people=k, opset=17, checkpoint_sha256=None)
        super().__init__(spec, Path("."))
        self.modules = {s.name: mod for s, mod in pairs}
        self.model = model
        self.values: dict[str, torch.Tensor] = {}

    def _activate_impl(self) -> None:
        pass

    def _deactivate_impl(self) -> None:
        pass

    def reset_state(self) -> None:
        with torch.inference_mode():
            s, m = self.model.initial_state()
        self.values["state"], self.values["mem"] = s.clone(), m.clone()

    def read_state(self, name: str) -> np.ndarray:
        return self.values[name].numpy().copy()

    @torch.inference_mode()
    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        g = self.spec.graph(graph)
        args = [torch.from_numpy(np.array(feeds[t.name])) if t.name in feeds else self.values[t.name]
                for t in g.inputs]
        outs = self.modules[graph](*args)
        res = {t.name: o.detach().contiguous() for t, o in zip(g.outputs, outs)}
        for t in g.outputs:
            t.check(res[t.name].numpy(), "output")
        for p in g.state:  # ping-pong: the next call reads the new value as its state input
            res[p.input] = res[p.output].clone()
        self.values.update(res)
        return {k: res[k].numpy().copy() for k in fetch}


@pytest.fixture(scope="module")
def tiny_models():
    from human3r_edge.export.checkpoint import load_model

    cache = {}

    def get(golden_dir):
        if golden_dir not in cache:
            torch.set_num_threads(2)
            cache[golden_dir] = load_model(golden_dir / "checkpoint.pth")[0]
        return cache[golden_dir]

    return get


@pytest.fixture(scope="module")
def smplx_loaded(synthetic_smplx):
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    return SMPLXModel.load(synthetic_smplx)


@pytest.mark.parametrize("preprocessed", [True, False], ids=["golden-inputs", "raw-frames"])
def test_runtime_on_the_real_tiny_model_matches_the_golden(golden_dir, require_golden, tiny_models,
                                                           smplx_loaded, reference, preprocessed):
    from human3r_edge.runtime.commands.compare import compare_dicts, format_report
    from human3r_edge.runtime.commands.replay import replay_golden

    z = np.load(golden_dir / "golden.npz")
    _, _, h, w = z["input/img"].shape
    be = TorchGraphBackend(tiny_models(golden_dir), w, h, k=golden(golden_dir).slots)
    out = replay_golden(golden_dir, be, preprocessed=preprocessed, reference_npz=reference,
                        smplx_model=smplx_loaded)
    report = compare_dicts(out, dict(np.load(golden_dir / reference)))
    lines = format_report(report)
    print("\n".join(lines[-3:]))
    assert report.passed, "\n".join(lines)


def test_reset_interval_on_the_real_model_keeps_ids_and_chains(golden_dir, require_golden, tiny_models,
                                                                smplx_loaded):
    """With reset_interval=3 the pipeline resets state after every third frame; the first segment equals the no-reset
    run exactly, and every later pose is expressed in the first segment's world frame (finite, chained)."""
    from human3r_edge.runtime.pipeline import PipelineOptions
    from human3r_edge.runtime.session import Session, SessionOptions

    z = np.load(golden_dir / "golden.npz")
    _, _, h, w = z["input/img"].shape
    model = tiny_models(golden_dir)
    frames = z["input/raw_frames_uint8"]
    interval = 3
    assert len(frames) > interval, "the golden needs more frames than the reset interval for this check"
    k = golden(golden_dir).slots
    runs = {}
    for ri in (None, interval):
        with Session(TorchGraphBackend(model, w, h, k=k), smplx_loaded, SessionOptions(pipeline=PipelineOptions(reset_interval=ri))) as s:
            runs[ri] = [s.step(f) for f in frames]
    a, b = runs[None], runs[interval]
    for i in range(interval):
        np.testing.assert_allclose(b[i].c2w, a[i].c2w, atol=1e-6)
        assert b[i].track_ids == a[i].track_ids
    assert [r.segment for r in b] == [i // interval for i in range(len(frames))]
    assert all(np.all(np.isfinite(r.c2w)) for r in b)
    assert not np.allclose(b[interval].c2w, a[interval].c2w, atol=1e-4)  # a fresh segment: not the same path


def test_runtime_drives_the_exporters_graph_modules_to_the_golden(golden_dir, require_golden, smplx_loaded):
    """The same replay through export/graphs_torch.py's modules (the code the ONNX export traces)."""
    from human3r_edge.export.checkpoint import load_model
    from human3r_edge.runtime.commands.compare import compare_dicts, format_report
    from human3r_edge.runtime.commands.replay import replay_golden

    z = np.load(golden_dir / "golden.npz")
    _, _, h, w = z["input/img"].shape
    torch.set_num_threads(2)
    be = GraphModuleBackend(load_model(golden_dir / "checkpoint.pth")[0], w, h, k=golden(golden_dir).slots)
    out = replay_golden(golden_dir, be, preprocessed=True, smplx_model=smplx_loaded)
    report = compare_dicts(out, dict(np.load(golden_dir / "golden.npz")))
    lines = format_report(report)
    print("\n".join(lines[-2:]))
    assert report.passed, "\n".join(lines)
