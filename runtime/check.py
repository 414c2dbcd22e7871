"""`human3r-edge check`: validate a GPU backend against a golden (needs a GPU; refuses cleanly without one).

    human3r-edge check --backend trt|ort-trt|ort-cuda --golden DIR [--engines DIR] [--onnx-dir DIR]
                       [--reference golden.npz] [--budgets FILE] [--preprocessed] [--record-frames N]

1. Golden replay: the runtime pipeline on the backend, every step/demo/smplx key compared with the golden. FP32
   engines use the fp32 tolerances of `compare`; FP16 engines the per-key budgets of the budgets file.
2. Per-engine comparison through polygraphy's Comparator: each graph's engine (or ORT GPU session) against ONNX
   Runtime CPU on the inputs recorded during the replay (state and linked inputs included), with per-output
   {"": default, name: override} tolerances.
Exit status: 0 passed, 1 failed, 2 bad input, 3 backend unavailable (no GPU, TensorRT, pycuda or EP).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Backend
from .errors import BackendUnavailable, Human3RError, msg
from .iospec import ExportSpec

GPU_BACKENDS = ("trt", "ort-trt", "ort-cuda")
# Written by the exporter (issue 4) next to the ONNX tooling; read here as a plain data file.
DEFAULT_BUDGETS = Path(__file__).resolve().parent.parent / "export" / "data" / "fp16_budgets.json"


# ------------------------------------------------------------------------------------------ budgets
@dataclass(frozen=True)
class Budgets:
    """FP16 error budgets: replay keys (relative to max|ref|, as `compare`) and per-graph outputs (atol/rtol)."""

    replay: dict[str, float]
    graphs: dict[str, dict[str, float]]
    placeholder: bool
    source: str

    def replay_tol(self, key: str) -> float:
        best = ""
        for k in self.replay:
            if k and (k == key or (k.endswith("/") and key.startswith(k))) and len(k) > len(best):
                best = k
        return float(self.replay[best] if best else self.replay[""])

    def output_tolerances(self, graph: str, outputs: Sequence[str]) -> tuple[dict[str, float], dict[str, float]]:
        """Polygraphy-style {"": default, output: override} dicts (atol, rtol) for one graph."""
        default = self.graphs.get("", {"atol": 1e-2, "rtol": 1e-2})
        atol, rtol = {"": float(default["atol"])}, {"": float(default["rtol"])}
        for name in outputs:
            b = self.graphs.get(f"{graph}/{name}") or self.graphs.get(name)
            if b:
                atol[name], rtol[name] = float(b["atol"]), float(b["rtol"])
        return atol, rtol


def load_budgets(path: str | Path | None = None) -> Budgets:
    p = Path(path) if path else DEFAULT_BUDGETS
    if not p.is_file():
        raise Human3RError(msg("FP16 budgets", "file not found", str(p), "a JSON with 'replay' and 'graphs'",
                               "the exporter commits export/data/fp16_budgets.json; pass --budgets FILE"))
    try:
        d = json.loads(p.read_text())
        b = Budgets({str(k): float(v) for k, v in d["replay"].items()},
                    {str(k): {"atol": float(v["atol"]), "rtol": float(v["rtol"])} for k, v in d["graphs"].items()},
                    bool(d.get("placeholder", False)), str(p))
    except (KeyError, TypeError, ValueError) as exc:
        raise Human3RError(msg(str(p), "malformed budgets", repr(exc), "{'replay': {key: rel}, 'graphs': "
                               "{'graph/output': {'atol': a, 'rtol': r}}}")) from exc
    if "" not in b.replay:
        raise Human3RError(msg(str(p), "replay budgets need a default entry \"\"", sorted(b.replay)))
    return b


# ------------------------------------------------------------------------------------------ recording
class RecordingBackend(Backend):
    """Wraps a backend and records every graph's complete inputs (host feeds, linked and state inputs).

    Linked inputs are taken from the wrapped backend's own outputs (so each engine is later compared on exactly
    what it received) and state inputs with read_state before the run. At most `max_frames` runs per graph.
    """

    def __init__(self, inner: Backend, max_frames: int = 4) -> None:
        super().__init__(inner.spec, inner.directory)
        self.inner = inner
        self.name = f"recording({inner.name})"
        self.max_frames = max_frames
        self.records: dict[str, list[dict[str, np.ndarray]]] = {g.name: [] for g in inner.spec.graphs}
        self._linked: dict[str, np.ndarray] = {}
        consumers = {n for g in inner.spec.graphs for n in inner.spec.linked_inputs(g.name)}
        self._needed = consumers

    def activate(self) -> "RecordingBackend":
        self.inner.activate()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        self.inner.deactivate()
        self.is_active = False

    def _activate_impl(self) -> None:
        self.inner.activate()

    def _deactivate_impl(self) -> None:
        self.inner.deactivate()

    def reset_state(self) -> None:
        self.inner.reset_state()

    def read_state(self, name: str) -> np.ndarray:
        return self.inner.read_state(name)

    def run(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: Sequence[str] | None = None
            ) -> dict[str, np.ndarray]:
        g = self.spec.graph(graph)
        recording = len(self.records[graph]) < self.max_frames
        record: dict[str, np.ndarray] = {}
        if recording:
            record = {k: np.array(v, copy=True) for k, v in feeds.items()}
            record.update({p.input: self.inner.read_state(p.input) for p in g.state})
            for name in self.spec.linked_inputs(graph):
                if name in self._linked:
                    record[name] = self._linked[name]
        names = [t.name for t in g.outputs] if fetch is None else list(fetch)
        extra = [t.name for t in g.outputs if t.name in self._needed and t.name not in names]
        out = self.inner.run(graph, feeds, names + extra)
        for name in extra + [n for n in names if n in self._needed]:
            self._linked[name] = out[name]
        if recording and len(record) == len(g.inputs):
            self.records[graph].append(record)
        return {n: out[n] for n in names}

    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        return self.inner._run_impl(graph, feeds, fetch)


# ------------------------------------------------------------------------------------------ polygraphy
@dataclass
class GraphComparison:
    graph: str
    passed: bool
    lines: list[str] = field(default_factory=list)


def polygraphy_compare(graph: str, reference: Any, candidate: Any, feeds: list[dict[str, np.ndarray]],
                       atol: dict[str, float], rtol: dict[str, float]) -> GraphComparison:
    """Run two polygraphy runners on the same recorded feeds and compare every output with per-output tolerances.

    reference / candidate: polygraphy runners (e.g. OnnxrtRunner on CPU, TrtRunner on an engine).
    """
    from polygraphy.comparator import Comparator

    try:
        from polygraphy.comparator import SimpleCompareFunc
    except ImportError:  # polygraphy < 0.50
        from polygraphy.comparator import CompareFunc

        SimpleCompareFunc = CompareFunc.simple

    if not feeds:
        return GraphComparison(graph, False, [f"{graph}: no recorded inputs (did the replay run this graph?)"])
    results = Comparator.run([reference, candidate], data_loader=feeds)
    func = SimpleCompareFunc(atol=atol, rtol=rtol, check_error_stat="max")
    accuracy = Comparator.compare_accuracy(results, compare_func=func)
    lines = []
    passed = bool(accuracy)
    ref_name, cand_name = results[0][0], results[1][0]
    for it, (ref_out, cand_out) in enumerate(zip(results[0][1], results[1][1])):
        for name in ref_out.keys():
            a = np.asarray(ref_out[name], np.float64)
            b = np.asarray(cand_out[name], np.float64)
            err = float(np.abs(a - b).max()) if a.size else 0.0
            scale = float(np.abs(a).max()) if a.size else 0.0
            lines.append(f"{graph}/{name} iter {it}: max abs {err:.3e}, rel-to-max {err / scale if scale else 0:.3e} "
                         f"(atol {atol.get(name, atol[''])}, rtol {rtol.get(name, rtol[''])})")
    lines.append(f"{graph}: {'PASSED' if passed else 'FAILED'} ({cand_name} vs {ref_name}, {len(feeds)} input sets)")
    return GraphComparison(graph, passed, lines)


def _candidate_runner(backend: str, directory: Path, graph: str, spec: ExportSpec, onnx_dir: Path | None) -> Any:
    if backend == "trt":
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        return TrtRunner(EngineFromBytes((directory / f"{graph}.engine").read_bytes()), name=f"trt:{graph}")
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    path = (onnx_dir or directory) / spec.graph(graph).file
    providers = ["tensorrt", "cuda"] if backend == "ort-trt" else ["cuda"]
    return OnnxrtRunner(SessionFromOnnx(str(path), providers=providers), name=f"{backend}:{graph}")


def _reference_runner(onnx: Path, graph: str) -> Any:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner(SessionFromOnnx(str(onnx), providers=["cpu"]), name=f"onnxrt-cpu:{graph}")


# ------------------------------------------------------------------------------------------ the check
def _precision(backend: Backend) -> str:
    sidecars = getattr(backend, "sidecars", None)
    if sidecars:
        return "fp16" if any(sc.precision == "fp16" for sc in sidecars.values()) else "fp32"
    opts = getattr(backend, "opts", None)
    return "fp16" if getattr(opts, "fp16", False) and backend.name == "ort-trt" else "fp32"


def run_check(backend: str, golden: Path, engines: Path, onnx_dir: Path | None, reference: str = "golden.npz",
              budgets: Budgets | None = None, preprocessed: bool = False, record_frames: int = 4,
              **options: Any) -> tuple[bool, list[str]]:
    """Golden replay + polygraphy comparison; returns (passed, report lines). Raises BackendUnavailable first."""
    from .backends import open_backend
    from .compare import compare_arrays, compare_dicts, format_report

    if backend not in GPU_BACKENDS:
        raise Human3RError(msg("check --backend", "not a GPU backend", repr(backend), GPU_BACKENDS))
    be = open_backend(backend, engines, **options)
    be.activate()  # fails here, cleanly, without a GPU
    precision = _precision(be)
    be.deactivate()
    lines = [f"check {backend} ({precision}) on {golden.name}, engines {engines}"]
    budgets = budgets or load_budgets()
    if precision == "fp16" and budgets.placeholder:
        lines.append(f"WARNING: FP16 budgets in {budgets.source} are PLACEHOLDERS, not measured values")
    from .run import replay_golden

    rec = RecordingBackend(open_backend(backend, engines, **options), max_frames=record_frames)
    t0 = time.perf_counter()
    out = replay_golden(golden, backend=rec, preprocessed=preprocessed, reference_npz=reference)
    with np.load(golden / reference, allow_pickle=False) as z:
        ref = {k: z[k] for k in z.files}
    report = compare_dicts(out, ref)
    if precision == "fp16":
        from .compare import Report

        report = Report(tuple(compare_arrays(r.key, out[r.key], ref[r.key], budgets.replay_tol(r.key))
                              if r.kind != "exact" else r for r in report.results), report.missing)
    lines += [f"golden replay ({time.perf_counter() - t0:.1f} s):"] + format_report(report)
    passed = report.passed
    spec = ExportSpec.load(engines)
    src_dir = onnx_dir or (engines if backend != "trt" else None)
    if src_dir is None:
        lines.append("polygraphy comparison skipped: pass --onnx-dir (the export the engines were built from)")
        return False, lines
    for g in spec.graphs:
        atol, rtol = budgets.output_tolerances(g.name, [t.name for t in g.outputs]) if precision == "fp16" else \
            ({"": 1e-4}, {"": 1e-4})
        res = polygraphy_compare(g.name, _reference_runner(src_dir / g.file, g.name),
                                 _candidate_runner(backend, engines, g.name, spec, src_dir), rec.records[g.name],
                                 atol, rtol)
        lines += res.lines
        passed = passed and res.passed
    lines.append(f"{'PASSED' if passed else 'FAILED'}: check {backend} on {golden.name}")
    return passed, lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", required=True, choices=GPU_BACKENDS)
    p.add_argument("--golden", required=True, help="golden folder (e.g. ../shared/goldens/tiny_a)")
    p.add_argument("--engines", default=None, help="engine dir (trt) or export dir (ort-*); "
                                                   "default: --onnx-dir for ort-*")
    p.add_argument("--onnx-dir", default=None, help="the export the engines were built from (ONNX Runtime CPU "
                                                    "reference of the polygraphy comparison)")
    p.add_argument("--reference", default="golden.npz", choices=("golden.npz", "golden_nottt3r.npz"))
    p.add_argument("--budgets", default=None, help=f"FP16 budgets JSON (default {DEFAULT_BUDGETS.name})")
    p.add_argument("--preprocessed", action="store_true", help="feed the golden's preprocessed inputs")
    p.add_argument("--record-frames", type=int, default=4, help="input sets per graph for polygraphy")


def main(args: argparse.Namespace) -> int:
    engines = args.engines or args.onnx_dir
    if engines is None:
        print("check | --engines (or --onnx-dir for ort-*) is required", file=sys.stderr)
        return 2
    try:
        passed, lines = run_check(args.backend, Path(args.golden), Path(engines),
                                  Path(args.onnx_dir) if args.onnx_dir else None, args.reference,
                                  load_budgets(args.budgets), args.preprocessed, args.record_frames)
    except BackendUnavailable as exc:
        print(f"check | {args.backend} unavailable on this machine: {exc}", file=sys.stderr)
        return 3
    except Human3RError as exc:
        print(f"check | {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if passed else 1
