"""`human3r-edge check`: validate a GPU backend against a golden (needs a GPU; refuses cleanly without one).

    human3r-edge check --backend trt|ort-trt|ort-cuda [--golden DIR] [--engines DIR] [--onnx-dir DIR]
                       [--reference golden.npz] [--budgets FILE] [--preprocessed] [--record-frames N]

1. Replay, on the path `run` takes (GPU preprocessing and skinning kernels where `run` uses them):
   * with --golden: the golden's frames, every step/demo/smplx key compared with the golden (PyTorch reference).
     FP32 engines use the fp32 tolerances of `compare`; FP16 engines the per-key budgets of the budgets file.
   * without: its own reference, so a user's clone needs no golden folder: seeded frames at the export's
     resolution and a synthetic SMPL-X model, replayed through the PyTorch reference (the `torch` backend over
     the same export, export/torch_backend.py) where torch (the `[export]` extra) is installed, else through
     `ort-cpu` on it (the --onnx-dir, or the export the ORT backends read); every frame's camera, focal, people
     and bodies compared. The report, the last line and `--json` say which reference was used.
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

from human3r_edge.runtime.backends.base import Backend
from human3r_edge.runtime.backends.capabilities import DeviceFeeds, DeviceValues, takes_device_feeds
from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.runtime.iospec import ExportSpec

GPU_BACKENDS = ("trt", "ort-trt", "ort-cuda")
# Written by the exporter (issue 4) next to the ONNX tooling; read here as a plain data file.
DEFAULT_BUDGETS = Path(__file__).resolve().parents[2] / "export" / "data" / "fp16_budgets.json"


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

    # The wrapped backend's device side, so GPU preprocessing and skinning run through the wrapper exactly as they
    # run on the backend itself in `run` (device buffers, stream, CUDA context, adopted kernel buffers).
    @property
    def accepts_device_feeds(self) -> bool:  # type: ignore[override]
        return takes_device_feeds(self.inner)

    def adopt(self, resource: Any) -> Any:
        return self.inner.adopt(resource)

    def __getattr__(self, name: str) -> Any:  # device_buffer, stream, ensure_cuda_context, device_value, sidecars
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _host_value(self, name: str, value: Any) -> np.ndarray:
        """A feed as a host array; an ON_DEVICE feed is read back from the device buffer the kernels wrote."""
        from human3r_edge.runtime.backends.base import OnDevice

        if not isinstance(value, OnDevice):
            return np.array(value, copy=True)
        inner: object = self.inner
        if isinstance(inner, DeviceValues):  # ONNX Runtime GPU backends: the input's OrtValue
            return np.array(inner.device_value(name).numpy(), copy=True)
        if not isinstance(inner, DeviceFeeds):
            raise Human3RError(msg(f"recorded feed {name}", "ON_DEVICE on a backend without device buffers",
                                   self.inner.name, "trt, ort-cuda or ort-trt"))
        import pycuda.driver as cuda  # the trt backend: its context is current while it is active

        t = next(t for g in self.spec.graphs for t in g.inputs if t.name == name)
        host = np.empty(t.shape, t.np_dtype)
        cuda.memcpy_dtoh(host, inner.device_buffer(name))
        return host

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

    def run(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: Sequence[str] | None = None,
            slots: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        g = self.spec.graph(graph)
        recording = len(self.records[graph]) < self.max_frames
        record: dict[str, np.ndarray] = {}
        if recording:
            record = {k: self._host_value(k, v) for k, v in feeds.items()}
            record.update({p.input: self.inner.read_state(p.input) for p in g.state})
            for name in self.spec.linked_inputs(graph):
                if name in self._linked:
                    record[name] = self._linked[name]
        names = [t.name for t in g.outputs] if fetch is None else list(fetch)
        extra = [t.name for t in g.outputs if t.name in self._needed and t.name not in names]
        out = self.inner.run(graph, feeds, names + extra, **({} if slots is None else {"slots": slots}))
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


def runtime_providers(backend: str, directory: Path, **options: Any) -> list:
    """The (name, options) provider list `human3r-edge run --backend ort-*` gives ONNX Runtime for `directory`.

    `check` compares exactly this configuration: with bare names ONNX Runtime's defaults apply instead (CUDA EP
    in TF32, TensorRT EP in FP32 without an engine cache), i.e. a configuration that is never deployed."""
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.session import streaming_backend_options

    return open_backend(backend, directory, **streaming_backend_options(backend, dict(options))).providers()


def _candidate_runner(backend: str, directory: Path, graph: str, spec: ExportSpec, onnx_dir: Path | None,
                      **options: Any) -> Any:
    if backend == "trt":
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        return TrtRunner(EngineFromBytes((directory / f"{graph}.engine").read_bytes()), name=f"trt:{graph}")
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    path = (onnx_dir or directory) / spec.graph(graph).file
    providers = runtime_providers(backend, directory, **options)  # polygraphy >= 0.49 takes (name, options)
    return OnnxrtRunner(SessionFromOnnx(str(path), providers=providers), name=f"{backend}:{graph}")


def require_polygraphy() -> None:
    """polygraphy, or BackendUnavailable with the install line (JetPack's TensorRT does not bring it)."""
    try:
        import polygraphy  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(msg("polygraphy", "not installed (check compares engines through it)", repr(exc),
                                     "polygraphy >= 0.49", "pip install polygraphy (or: pip install "
                                     "'human3r-edge[trt]')")) from exc


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


def _pycuda_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("pycuda") is not None


def _gpu_kernels(backend: str) -> bool:
    """Whether `run` would run the CUDA kernels with this backend: trt always; ort-cuda / ort-trt preprocess on
    the GPU when pycuda is installed (`--preprocessing auto`)."""
    return backend == "trt" or _pycuda_importable()


def _check_frames(height: int, width: int, n: int, seed: int) -> list[np.ndarray]:
    """Seeded (height, width, 3) uint8 frames: blocky noise, so resampling and detection have work to do."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, 256, (max(height // 8, 1), max(width // 8, 1), 3), dtype=np.uint8)
        out.append(np.ascontiguousarray(np.repeat(np.repeat(base, 8, 0), 8, 1)[:height, :width]))
    return out


def open_reference_backend(export_dir: Path) -> tuple[Backend, str, str]:
    """The self-made reference of `check` over `export_dir`, active: (backend, its name, why that one).

    The PyTorch reference (backend `torch`, the model the export was traced from) where torch is installed and
    the model can be rebuilt; otherwise ONNX Runtime CPU on the same export."""
    import importlib.util

    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.session import streaming_backend_options

    if importlib.util.find_spec("torch") is None:
        why = "torch is not installed (pip install -e '.[export]' for the PyTorch reference)"
    else:
        be: Backend | None = None
        try:
            be = open_backend("torch", export_dir)
            be.activate()
            return be, "torch", "the PyTorch reference (export/torch_backend.py) on the same export"
        except (ImportError, BackendUnavailable, Human3RError) as exc:
            if be is not None:
                be.deactivate()
            why = f"the PyTorch reference cannot be built here: {str(exc)[:300]}"
    be = open_backend("ort-cpu", export_dir, **streaming_backend_options("ort-cpu", {}))
    return be.activate(), "ort-cpu", why


def self_reference_replay(backend: Any, export_dir: Path, frames: int = 6, seed: int = 0,
                          precision: str = "fp32", budgets: Budgets | None = None,
                          info: dict[str, str] | None = None) -> tuple[bool, list[str]]:
    """Replay seeded frames through `backend` (an inactive Backend, e.g. a RecordingBackend) the way `run` does
    and through the reference of open_reference_backend (PyTorch, else ort-cpu) on `export_dir`, a synthetic
    SMPL-X model on both; compare frame by frame. `info` receives "reference" (torch | ort-cpu) and "reason"."""
    import tempfile

    from human3r_edge.runtime.commands.compare import compare_arrays
    from human3r_edge.runtime.session import Session, SessionOptions
    from human3r_edge.runtime.smplx.skinning import SMPLXModel
    from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx

    spec = ExportSpec.load(export_dir)
    width, height = (int(v) for v in spec.resolution)
    imgs = _check_frames(height, width, frames, seed)
    with tempfile.TemporaryDirectory() as tmp:
        model = SMPLXModel.load(write_synthetic_smplx(Path(tmp), seed=seed))
    ref_be, ref_name, why = open_reference_backend(export_dir)
    if info is not None:
        info.update(reference=ref_name, reason=why)
    tol = (lambda key: 1e-3) if precision == "fp32" else (lambda key: (budgets or load_budgets()).replay_tol(key))
    results, lines = [], []
    with Session(ref_be, model, SessionOptions(preprocessing="cpu")) as ref, \
            Session(backend, model, SessionOptions()) as cand:
        if getattr(backend, "name", "").endswith("(trt)") or getattr(backend, "name", "") == "trt":
            from human3r_edge.runtime.smplx.gpu import CudaSkinner  # run's --skinning auto: the CUDA kernels on trt

            cand.smplx = backend.adopt(CudaSkinner(model, spec.max_people))
        kernels = "GPU" if cand.gpu_preprocessor is not None else "CPU"
        lines.append(f"self-reference replay: {frames} seeded {width}x{height} frames, synthetic SMPL-X, reference "
                     f"{ref_name} on {export_dir} (no --golden; {why}); candidate preprocessing on the {kernels}")
        for i, img in enumerate(imgs):
            a, b = cand.step(img), ref.step(img)
            results.append(compare_arrays(f"frame{i}/c2w", a.c2w, b.c2w, tol("step/camera_pose")))
            results.append(compare_arrays(f"frame{i}/focal", np.float32(a.focal), np.float32(b.focal), tol("")))
            same = len(a.people) == len(b.people)
            results.append(compare_arrays(f"frame{i}/people", np.int64(len(a.people)), np.int64(len(b.people))))
            if same:
                for k, (pa, pb) in enumerate(zip(a.people, b.people)):
                    results.append(compare_arrays(f"frame{i}/person{k}/rotmat", pa.rotmat, pb.rotmat,
                                                  tol("step/smpl_rotmat")))
                    results.append(compare_arrays(f"frame{i}/person{k}/transl", pa.transl, pb.transl,
                                                  tol("step/smpl_transl")))
                    if pa.vertices_cam is not None and pb.vertices_cam is not None:
                        results.append(compare_arrays(f"frame{i}/person{k}/vertices_cam", pa.vertices_cam,
                                                      pb.vertices_cam, tol("smplx/v3d_cam")))
    for r in results:
        lines.append(f"  {'ok  ' if r.ok else 'FAIL'} {r.key}: max abs {r.max_abs:.3e}, rel {r.rel:.3e} "
                     f"(tol {r.tol:g})" + (f" {r.note}" if r.note else ""))
    return all(r.ok for r in results), lines


def run_check(backend: str, golden: Path | None, engines: Path, onnx_dir: Path | None,
              reference: str = "golden.npz", budgets: Budgets | None = None, preprocessed: bool = False,
              record_frames: int = 4, summary: dict[str, Any] | None = None,
              **options: Any) -> tuple[bool, list[str]]:
    """Replay (golden, or self-made reference when golden is None) + polygraphy comparison; returns (passed,
    report lines). `summary` receives backend, precision, reference (golden | torch | ort-cpu), reference_reason
    and passed. Raises BackendUnavailable first (no GPU, TensorRT, pycuda, EP or polygraphy)."""
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.commands.compare import compare_arrays, compare_dicts, format_report
    from human3r_edge.runtime.session import streaming_backend_options

    if backend not in GPU_BACKENDS:
        raise Human3RError(msg("check --backend", "not a GPU backend", repr(backend), GPU_BACKENDS))
    require_polygraphy()
    options = streaming_backend_options(backend, dict(options))  # the options `run` gives the backend
    be = open_backend(backend, engines, **options)
    be.activate()  # fails here, cleanly, without a GPU
    precision = _precision(be)
    be.deactivate()
    lines = [f"check {backend} ({precision}) on {golden.name if golden else 'a self-made reference'}, "
             f"engines {engines}"]
    budgets = budgets or load_budgets()
    if precision == "fp16" and budgets.placeholder:
        lines.append(f"WARNING: FP16 budgets in {budgets.source} are PLACEHOLDERS, not measured values")
    rec = RecordingBackend(open_backend(backend, engines, **options), max_frames=record_frames)
    t0 = time.perf_counter()
    if golden is None:
        export_dir = onnx_dir or (engines if backend != "trt" else None)
        if export_dir is None:
            raise Human3RError(msg("check --backend trt", "no --golden and no --onnx-dir", None,
                                   "--onnx-dir: the export the engines were built from (the self-made "
                                   "reference replays it through torch or ort-cpu)"))
        info: dict[str, str] = {}
        passed, replay_lines = self_reference_replay(rec, export_dir, seed=0, precision=precision, budgets=budgets,
                                                     info=info)
        lines += [f"replay ({time.perf_counter() - t0:.1f} s):"] + replay_lines
        reference_name, reference_reason = info["reference"], info["reason"]
    else:
        from human3r_edge.runtime.commands.replay import replay_golden

        out = replay_golden(golden, backend=rec, preprocessed=preprocessed, reference_npz=reference,
                            gpu_kernels=_gpu_kernels(backend))
        with np.load(golden / reference, allow_pickle=False) as z:
            ref = {k: z[k] for k in z.files}
        if precision == "fp16":  # as the FP16 budgets were measured (export/fp16_budgets.py replay_errors)
            from human3r_edge.runtime.commands.compare import mask_undecided_scores

            moved = mask_undecided_scores(out, ref)
            lines.append(f"score maps compared at or above the threshold; sub-threshold NMS peaks moved: {moved}")
        report = compare_dicts(out, ref)
        if precision == "fp16":
            from human3r_edge.runtime.commands.compare import Report

            report = Report(tuple(compare_arrays(r.key, out[r.key], ref[r.key], budgets.replay_tol(r.key))
                                  if r.kind != "exact" else r for r in report.results), report.missing)
        lines += [f"golden replay ({time.perf_counter() - t0:.1f} s):"] + format_report(report)
        passed = report.passed
        reference_name, reference_reason = "golden", f"{golden / reference} (PyTorch reference, recorded)"
    where = golden.name if golden else f"a self-made reference ({reference_name})"
    if summary is not None:
        summary.update(backend=backend, precision=precision, reference=reference_name,
                       reference_reason=reference_reason, passed=False)
    spec = ExportSpec.load(engines)
    src_dir = onnx_dir or (engines if backend != "trt" else None)
    if src_dir is None:
        lines.append("polygraphy comparison skipped: pass --onnx-dir (the export the engines were built from)")
        return False, lines
    for g in spec.graphs:
        atol, rtol = budgets.output_tolerances(g.name, [t.name for t in g.outputs]) if precision == "fp16" else \
            ({"": 1e-4}, {"": 1e-4})
        res = polygraphy_compare(g.name, _reference_runner(src_dir / g.file, g.name),
                                 _candidate_runner(backend, engines, g.name, spec, src_dir, **options),
                                 rec.records[g.name],
                                 atol, rtol)
        lines += res.lines
        passed = passed and res.passed
    lines.append(f"{'PASSED' if passed else 'FAILED'}: check {backend} on {where}")
    if summary is not None:
        summary["passed"] = bool(passed)
    return passed, lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", required=True, choices=GPU_BACKENDS)
    p.add_argument("--golden", default=None, help="golden folder of the export's checkpoint (PyTorch reference); "
                                                  "default: a self-made reference through the PyTorch reference "
                                                  "where torch is installed, else ort-cpu, on --onnx-dir")
    p.add_argument("--engines", default=None, help="engine dir (trt) or export dir (ort-*); "
                                                   "default: --onnx-dir for ort-*")
    p.add_argument("--onnx-dir", default=None, help="the export the engines were built from (ONNX Runtime CPU "
                                                    "reference of the polygraphy comparison)")
    p.add_argument("--reference", default="golden.npz", choices=("golden.npz", "golden_nottt3r.npz"))
    p.add_argument("--budgets", default=None, help=f"FP16 budgets JSON (default {DEFAULT_BUDGETS.name})")
    p.add_argument("--preprocessed", action="store_true", help="feed the golden's preprocessed inputs")
    p.add_argument("--record-frames", type=int, default=4, help="input sets per graph for polygraphy")
    p.add_argument("--json", default=None, metavar="FILE", help="also write a JSON summary (backend, precision, "
                                                                "reference used, passed, report lines)")


def main(args: argparse.Namespace) -> int:
    engines = args.engines or args.onnx_dir
    if engines is None:
        print("check | --engines (or --onnx-dir for ort-*) is required", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {}
    try:
        passed, lines = run_check(args.backend, Path(args.golden) if args.golden else None, Path(engines),
                                  Path(args.onnx_dir) if args.onnx_dir else None, args.reference,
                                  load_budgets(args.budgets), args.preprocessed, args.record_frames,
                                  summary=summary)
    except BackendUnavailable as exc:
        print(f"check | {args.backend} unavailable on this machine: {exc}", file=sys.stderr)
        return 3
    except Human3RError as exc:
        print(f"check | {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if getattr(args, "json", None):
        out = Path(args.json)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({**summary, "lines": lines}, indent=1))
        tmp.replace(out)
    return 0 if passed else 1
