"""`human3r-edge bench`: per-stage latency, memory and efficiency of each backend on the same synthetic frames.

    human3r-edge bench --config 672S --resolution 512x288 --backends torch,ort-cpu --frames 5 --warmup 1

What is measured, per backend, in one process on the same frames (warm-up frames excluded from statistics):
* `torch`: the full reference model in PyTorch eager fp32 (every head, as the original demo runs it:
  `export.reference.ReferenceStreamer`, n detected people, TTT3R on) plus the demo's per-frame post-processing
  (world points, Weiszfeld focal, rotation vectors) and SMPL-X meshes through the `smplx` package.
* `ort-cpu` (and `ort-cuda`, `ort-trt`, `trt`): the lean deployment export that `human3r-edge run` uses, through the
  torch-free `runtime.session.Session` (preprocessing, K padded human slots, host detection, tracking, numpy
  skinning, world points).
Stages: preprocess, encoder, decoder (one recurrent step), smpl_head, skinning, postprocess (detection, NMS,
tracking, pose/focal/world points), outputs (building the per-frame result; the residual of the frame time).
FLOPs come from the exported ONNX graphs (`flops.py`), the peak from a measured sgemm (`peak.py`); efficiency =
counted FLOPs / time / sgemm peak. Weights are random (seeded), with the detection bias shifted on frame 0 so that
`--people` people pass there (as the reference anchor did); the same weights feed the torch model and the export.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.runtime.errors import BackendUnavailable, Human3RError, msg

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("preprocess", "encoder", "decoder", "smpl_head", "skinning", "postprocess", "outputs")
GRAPH_STAGES = ("encoder", "decoder", "smpl_head")
RUNTIME_BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "trt")
GPU_BACKENDS = ("ort-cuda", "ort-trt", "trt")
CONFIGS = ("tiny", "672S", "672B", "672L", "896L")
QUIET_LOAD = 0.5  # 1-minute load average under which the machine counts as quiet before the run
QUIET_FOREIGN = 0.05  # largest share of the machine's CPU time that other processes may use during the run
ASSET_VERSION = 2  # bump when the frames, the weight init or the calibration change (invalidates the cache)


# ================================================================================================ settings
@dataclass(frozen=True)
class BenchSettings:
    """Everything that defines one benchmark run."""

    config: str  # preset name
    width: int  # CUT3R image width (multiple of 16)
    height: int
    backends: tuple[str, ...]
    frames: int  # timed frames per backend
    warmup: int  # untimed frames per backend, before the timed ones
    threads: int  # intra-op threads of torch and ONNX Runtime
    people: int  # people passing detection on frame 0 (the detection bias is shifted to get this)
    max_people: int  # K human slots of the export
    seed: int
    cache: Path  # seeded checkpoint, SMPL-X files and exports are cached here
    engines: Path | None  # an existing lean export for the ORT backends (skips the export step)
    trt_engines: Path | None  # engine directory for the `trt` backend
    peak_size: int
    peak_repeats: int
    ort_options: tuple[tuple[str, Any], ...] = ()
    profile: bool = False  # also profile ort-cpu per op type (a separate, untimed pass)

    @property
    def source_size(self) -> tuple[int, int]:
        """(W0, H0) of the synthetic source frames: 1.25x the model image, as the anchor's 640x360."""
        return self.width * 5 // 4, self.height * 5 // 4


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError as exc:
        raise Human3RError(msg("--resolution", "not WxH", repr(text), "e.g. 512x288")) from exc
    from human3r_edge.runtime.graphs import check_resolution

    check_resolution(w, h)
    return w, h


def _option_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="672S", choices=CONFIGS)
    p.add_argument("--resolution", default="512x288", help="WxH of the model image (default 512x288)")
    p.add_argument("--backends", default="torch,ort-cpu",
                   help="comma list of torch, ort-cpu, ort-cuda, ort-trt, trt (default torch,ort-cpu)")
    p.add_argument("--frames", type=int, default=5, help="timed frames per backend (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed frames per backend first (default 1)")
    p.add_argument("--json", type=Path, default=None,
                   help="result JSON (markdown and PNG next to it); default benchmarks/results/<config>_<WxH>_<cpu|gpu>.json")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every core)")
    p.add_argument("--people", type=int, default=2, help="people passing detection on frame 0 (default 2)")
    p.add_argument("--max-people", type=int, default=16, help="K human slots of the export (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None,
                   help="asset cache (default $HUMAN3R_BENCH_CACHE or ~/.cache/human3r-edge/bench)")
    p.add_argument("--engines", type=Path, default=None, help="use this lean ONNX export for the ORT backends")
    p.add_argument("--trt-engines", type=Path, default=None, help="engine directory for the trt backend")
    p.add_argument("--ort-option", action="append", default=[], metavar="KEY=VALUE",
                   help="ONNX Runtime backend option (OrtOptions field), e.g. allow_spinning=false")
    p.add_argument("--peak-size", type=int, default=4096, help="sgemm size for the machine peak (default 4096)")
    p.add_argument("--peak-repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true",
                   help="also profile ort-cpu per op type (ONNX Runtime profiler, a separate untimed pass)")
    p.add_argument("--prepare-only", action="store_true",
                   help="only build the cached seeded checkpoint (and export) for these settings, then exit")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    w, h = parse_resolution(args.resolution)
    backends = tuple(b.strip() for b in str(args.backends).split(",") if b.strip())
    bad = [b for b in backends if b != "torch" and b not in RUNTIME_BACKENDS]
    if not backends or bad or len(set(backends)) != len(backends):
        raise Human3RError(msg("--backends", "unknown, empty or repeated backends", args.backends,
                               "a comma list of torch, " + ", ".join(RUNTIME_BACKENDS)))
    for name in ("frames", "people", "max_people"):
        if int(getattr(args, name)) < 1:
            raise Human3RError(msg(f"--{name.replace('_', '-')}", "must be >= 1", getattr(args, name)))
    if args.warmup < 0:
        raise Human3RError(msg("--warmup", "must be >= 0", args.warmup))
    threads = int(args.threads) if args.threads else (os.cpu_count() or 1)
    opts = []
    for item in args.ort_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise Human3RError(msg("--ort-option", "not KEY=VALUE", repr(item), "e.g. allow_spinning=false"))
        opts.append((key.strip(), _option_value(value.strip())))
    cache = args.cache or Path(os.environ.get("HUMAN3R_BENCH_CACHE", Path.home() / ".cache/human3r-edge/bench"))
    return BenchSettings(args.config, w, h, backends, int(args.frames), int(args.warmup), threads,
                         int(args.people), int(args.max_people), int(args.seed), Path(cache), args.engines,
                         args.trt_engines, int(args.peak_size), int(args.peak_repeats), tuple(opts),
                         bool(getattr(args, "profile", False)))


# ================================================================================================ frames
def synthetic_frames(width: int, height: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """n deterministic RGB uint8 frames (height, width, 3): smooth colour fields, a slow pan, three moving
    figure-like blobs and mild noise (stands in for video; the weights are random, so content only has to vary)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for i in range(n):
        img = np.empty((height, width, 3), np.float32)
        img[..., 0] = 120 + 70 * np.cos((xx + 4 * i) / 61.0 + yy / 83.0)
        img[..., 1] = 100 + 80 * yy / height
        img[..., 2] = 90 + 70 * np.sin((xx - 3 * i) / 47.0)
        for k in range(3):
            cx = (0.2 + 0.3 * k) * width + 3 * i * (1 - k)
            cy = 0.55 * height
            body = (xx - cx) ** 2 / (0.04 * width) ** 2 + (yy - cy) ** 2 / (0.25 * height) ** 2 < 1
            head = (xx - cx) ** 2 + (yy - cy + 0.32 * height) ** 2 < (0.05 * height) ** 2
            img[body | head] = (60 + 70 * k, 50 + 40 * k, 190 - 60 * k)
        img += rng.normal(0, 3, size=img.shape).astype(np.float32)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


# ================================================================================================ memory
def rss_bytes() -> int:
    """Current resident set size (VmRSS), 0 where /proc is missing."""
    return _status_kb("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """High-water mark of the resident set (VmHWM) since start or the last `reset_peak_rss`."""
    return _status_kb("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, /proc/self/clear_refs '5'); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim), so the next backend's
    peak RSS does not carry the previous one's freed memory."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ================================================================================================ timing
class StageClock:
    """Per-frame accumulator of milliseconds per stage."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    def add(self, stage: str, ms: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + ms

    def take(self) -> dict[str, float]:
        out, self.ms = self.ms, {}
        return out


def timed(fn: Callable[..., Any], clock: StageClock, stage: str) -> Callable[..., Any]:
    """`fn` wrapped so that its wall time is added to `stage` of `clock`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tic = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock.add(stage, (time.perf_counter() - tic) * 1e3)

    return wrapper


def percentiles(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0}
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "min": float(a.min()),
            "max": float(a.max())}


# ================================================================================================ assets
@dataclass(frozen=True)
class Assets:
    """Cached inputs of one benchmark configuration."""

    directory: Path
    checkpoint: Path  # seeded, calibrated weights (safetensors with the config in its metadata)
    smplx_model: Path  # synthetic SMPL-X (official layout)
    mean_params: Path  # synthetic smpl_mean_params.npz
    info: dict  # calibration record


def asset_dir(s: BenchSettings) -> Path:
    return s.cache / f"v{ASSET_VERSION}_{s.config}_{s.width}x{s.height}_seed{s.seed}_p{s.people}"


def load_assets(s: BenchSettings) -> Assets | None:
    d = asset_dir(s)
    info_path = d / "assets.json"
    if not info_path.is_file() or not (d / "checkpoint.safetensors").is_file():
        return None
    return Assets(d, d / "checkpoint.safetensors", d / "SMPLX_NEUTRAL.npz", d / "smpl_mean_params.npz",
                  json.loads(info_path.read_text()))


def calibrate_detection(model: Any, img: np.ndarray, img_mhmr: np.ndarray, people: int) -> dict:
    """Shift the last `mlp_classif` bias so exactly `people` NMS peaks of frame 0 reach the 0.3 threshold.

    img (3, H, W), img_mhmr (3, R, R) float32: frame 0 preprocessed. The shift puts the threshold halfway
    between the people-th and (people+1)-th strongest peak logits (NMS peaks do not move under a shift).
    """
    import torch
    import torch.nn.functional as F

    head = model.downstream_head
    g = model.cfg.mhmr_grid
    with torch.inference_mode():
        dino = model.encode_human(torch.from_numpy(img_mhmr)[None])  # (1, g*g, bd)
        logits = head.mlp_classif(dino).reshape(1, 1, g, g)  # raw, before the sigmoid
        peaks = logits == F.max_pool2d(logits, 3, stride=1, padding=1)
        vals = torch.sort(logits[peaks].flatten(), descending=True).values
    if vals.numel() < people:
        raise Human3RError(msg("calibration", "fewer NMS peaks than --people", int(vals.numel()), f">= {people}"))
    from human3r_edge.runtime.detect import DETECTION_THRESHOLD

    p = (DETECTION_THRESHOLD - 1e-6) / (1 - 2e-6)
    target = float(np.log(p / (1 - p)))  # logit of the threshold of sigmoid * (1 - 2e-6) + 1e-6
    upper = float(vals[people - 1])
    lower = float(vals[people]) if vals.numel() > people else upper - 2.0
    shift = target - 0.5 * (upper + lower)
    bias = head.mlp_classif[-1].bias
    with torch.no_grad():
        bias += shift
    return {"bias_shift": shift, "peak_logits_top": [float(v) for v in vals[:6]], "people_frame0": people,
            "img_shape": list(img.shape)}


def prepare_assets(s: BenchSettings) -> Assets:
    """Build the cached seeded checkpoint for `s` (in this process; `ensure_assets` runs it in a child)."""
    import torch

    from human3r_edge.export.assets import random_model
    from human3r_edge.export.checkpoint import save_safetensors
    from human3r_edge.runtime import preprocess as pp
    from human3r_edge.runtime.config import get_config
    from human3r_edge.runtime.smplx.synthetic import write_mean_params, write_synthetic_smplx

    cfg = get_config(s.config)
    d = asset_dir(s)
    d.mkdir(parents=True, exist_ok=True)
    smplx_path = write_synthetic_smplx(d / "SMPLX_NEUTRAL.npz")
    mean_path = write_mean_params(d / "smpl_mean_params.npz")
    torch.set_num_threads(s.threads)
    model, _ = random_model(cfg, s.seed, calibrate=False)  # make-assets' seeded init, calibrated below
    w0, h0 = s.source_size
    frame0 = synthetic_frames(w0, h0, 1, s.seed)[0]
    img = pp.preprocess_rgb(frame0, max(s.width, s.height))
    if img.shape[1:] != (s.height, s.width):
        raise Human3RError(msg("synthetic frames", "do not preprocess to the resolution", img.shape[1:],
                               (s.height, s.width)))
    img_mhmr, _ = pp.pad_image(img, cfg.mhmr_img_res)
    info = calibrate_detection(model, img, img_mhmr, s.people)
    tmp = d / "checkpoint.safetensors.tmp"
    save_safetensors(tmp, model.state_dict(), cfg)
    os.replace(tmp, d / "checkpoint.safetensors")
    info.update(config=s.config, seed=s.seed, init="export.assets.random_model (make-assets' seeded init; "
                "UNTRAINED random weights)", created=_dt.datetime.now().isoformat(timespec="seconds"))
    (d / "assets.json").write_text(json.dumps(info, indent=1))
    return Assets(d, d / "checkpoint.safetensors", smplx_path, mean_path, info)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "human3r_edge", *args]


def ensure_assets(s: BenchSettings) -> Assets:
    """The cached assets for `s`, built in a child process if missing (keeps this process's RSS clean)."""
    found = load_assets(s)
    if found is not None:
        return found
    cmd = _cli("bench", "--prepare-only", "--config", s.config, "--resolution", f"{s.width}x{s.height}",
               "--people", str(s.people), "--seed", str(s.seed), "--cache", str(s.cache), "--threads",
               str(s.threads), "--backends", "torch")
    print(f"bench | preparing seeded weights: {' '.join(cmd[2:])}", file=sys.stderr)
    res = subprocess.run(cmd)
    found = load_assets(s)
    if res.returncode != 0 or found is None:
        raise Human3RError(msg("bench assets", "preparation failed", f"exit {res.returncode}", hint=" ".join(cmd)))
    return found


def export_dir(s: BenchSettings, assets: Assets) -> Path:
    return assets.directory / f"lean_k{s.max_people}"


def ensure_export(s: BenchSettings, assets: Assets) -> Path:
    """The lean ONNX export of the cached checkpoint (`human3r-edge export --lean`, in a child process)."""
    if s.engines is not None:
        return s.engines
    out = export_dir(s, assets)
    stamp = out / "bench_source.json"
    want = {"checkpoint": str(assets.checkpoint), "bias_shift": assets.info.get("bias_shift"),
            "max_people": s.max_people}
    if (out / "export.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return out
    try:
        import human3r_edge.export.onnx_export  # noqa: F401  (only to tell a missing exporter apart)
    except ImportError as exc:
        raise BackendUnavailable(msg("bench", "the ONNX exporter is not available", repr(exc),
                                     hint="pass --engines DIR (a lean export of the same weights)")) from exc
    cmd = _cli("export", "--checkpoint", str(assets.checkpoint), "--resolution", f"{s.width}x{s.height}",
               "--out", str(out), "--lean", "--max-people", str(s.max_people), "--no-trt-check")
    print(f"bench | exporting: {' '.join(cmd[2:])}", file=sys.stderr)
    res = subprocess.run(cmd)
    if res.returncode != 0 or not (out / "export.json").is_file():
        raise Human3RError(msg("bench export", "failed", f"exit {res.returncode}", hint=" ".join(cmd)))
    stamp.write_text(json.dumps(want))
    return out


# ================================================================================================ backends
def run_torch(s: BenchSettings, assets: Assets, frames: Sequence[np.ndarray]) -> dict:
    """The full reference model (every head) + the demo's post-processing and SMPL-X meshes, per frame."""
    import torch

    from human3r_edge.export.checkpoint import load_model
    from human3r_edge.export.model.scene import rotmat_to_rotvec, transform_points, weiszfeld_focal
    from human3r_edge.export.model.smplx_layer import SmplxLayer
    from human3r_edge.export.reference import ReferenceStreamer, StreamSettings
    from human3r_edge.runtime import preprocess as pp

    torch.set_num_threads(s.threads)
    tic = time.perf_counter()
    model: Any = load_model(assets.checkpoint, keep_state_dict=False)[0]
    layer = SmplxLayer(assets.smplx_model)
    load_s, load_peak = time.perf_counter() - tic, peak_rss_bytes()
    clock = StageClock()
    stage_of = {"encode_image": "encoder", "encode_human": "encoder", "detect": "encoder", "human_mask": "encoder",
                "gather_humans": "decoder", "fuse_humans": "decoder", "pose_query": "decoder", "decode": "decoder",
                "update_mem": "decoder", "heads": "decoder", "next_state": "decoder", "smpl_heads": "smpl_head"}
    for name, stage in stage_of.items():
        setattr(model, name, timed(getattr(model, name), clock, stage))  # instance attributes shadow the methods
    streamer = ReferenceStreamer(model, StreamSettings(use_ttt3r=True, reset_interval=10 ** 9))
    R, size = model.cfg.mhmr_img_res, max(s.width, s.height)
    pp_xy = torch.tensor([[s.width // 2, s.height // 2]], dtype=torch.float32)  # (1, 2)
    records = []
    try:
        for frame in frames:
            clock.take()
            t0 = time.perf_counter()
            img = pp.preprocess_rgb(frame, size)  # (3, H, W)
            img_mhmr, _ = pp.pad_image(img, R)  # (3, R, R)
            t1 = time.perf_counter()
            out = streamer.step(torch.from_numpy(img)[None], torch.from_numpy(img_mhmr)[None])
            t2 = time.perf_counter()
            graphs = clock.take()
            n = int(out["n_humans"])
            with torch.inference_mode():
                c2w = out["camera_pose_c2w_4x4"][None]  # (1, 4, 4)
                pts = out["pts3d_in_self_view"][None]  # (1, H, W, 3)
                focal = weiszfeld_focal(pts, pp_xy)  # (1,)
                K = torch.eye(3)[None].clone()
                K[:, 0, 0] = K[:, 1, 1] = focal
                K[:, :2, 2] = pp_xy
                world = transform_points(c2w, pts)  # (1, H, W, 3)
                rotvec = rotmat_to_rotvec(out["smpl_rotmat"]) if n else None  # (n, 53, 3)
                t3 = time.perf_counter()
                mesh = None
                if rotvec is not None:
                    mesh = layer(rotvec, out["smpl_shape"], out["smpl_transl"], K.expand(n, -1, -1),
                                 out["smpl_expression"])
                    mesh["v3d_world"] = transform_points(c2w, mesh["v3d"][None])[0]
                t4 = time.perf_counter()
            host = {k: v.numpy().copy() for k, v in out.items() if isinstance(v, torch.Tensor)}
            host.update(world=world.numpy().copy(), focal=focal.numpy().copy())
            if mesh is not None:
                host.update({k: v.numpy().copy() for k, v in mesh.items()})
            t5 = time.perf_counter()
            step_ms = (t2 - t1) * 1e3
            ms = {"preprocess": (t1 - t0) * 1e3, "encoder": graphs.get("encoder", 0.0),
                  "decoder": graphs.get("decoder", 0.0), "smpl_head": graphs.get("smpl_head", 0.0),
                  "skinning": (t4 - t3) * 1e3}
            # host work inside the reference step (NMS, thresholding, tracking) + the demo's post-processing
            ms["postprocess"] = max(step_ms - sum(graphs.values()), 0.0) + (t3 - t2) * 1e3
            ms["outputs"] = (t5 - t4) * 1e3
            records.append({"frame_ms": (t5 - t0) * 1e3, "stages": ms, "graph_ms": sum(graphs.values()),
                            "people": n})
    finally:
        for name in stage_of:
            model.__dict__.pop(name, None)
    weights = 4 * sum(int(t.numel()) for t in {id(t): t for t in model.state_dict().values()}.values())
    del streamer, model, layer
    return {"load_s": load_s, "load_peak_rss_bytes": load_peak, "records": records, "weights_fp32_bytes": weights,
            "what": "PyTorch eager fp32, full reference model (every head), n detected people"}


class _SessionTimer:
    """Times the pure ONNX Runtime `run` calls of an OrtCpuBackend (benchmark instrumentation of its sessions)."""

    def __init__(self, sessions: dict) -> None:
        self.ms = 0.0
        for name, sess in list(sessions.items()):
            sessions[name] = _TimedSession(sess, self)

    def take(self) -> float:
        out, self.ms = self.ms, 0.0
        return out


class _TimedSession:
    def __init__(self, sess: Any, timer: _SessionTimer) -> None:
        self._sess, self._timer = sess, timer

    def run(self, *args: Any, **kwargs: Any) -> Any:
        tic = time.perf_counter()
        try:
            return self._sess.run(*args, **kwargs)
        finally:
            self._timer.ms += (time.perf_counter() - tic) * 1e3

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sess, name)


class _GpuTimer:
    """CUDA-event timing of every `backend.run` on the backend's stream (native TensorRT), or synchronised host
    timing (ONNX Runtime GPU EPs: `run` returns host copies, so it has synchronised when it returns)."""

    def __init__(self, backend: Any) -> None:
        self.ms = 0.0
        self.backend = backend
        self.events = None
        stream = getattr(backend, "stream", None)
        if stream is not None:
            import pycuda.driver as cuda

            self.events = (cuda.Event(), cuda.Event())
        inner = backend.run

        def run(*args: Any, **kwargs: Any) -> Any:
            if self.events is None:
                tic = time.perf_counter()
                out = inner(*args, **kwargs)
                self.ms += (time.perf_counter() - tic) * 1e3
                return out
            start, end = self.events
            start.record(stream)
            out = inner(*args, **kwargs)
            end.record(stream)
            end.synchronize()
            self.ms += float(start.time_till(end))
            return out

        backend.run = run

    def take(self) -> float:
        out, self.ms = self.ms, 0.0
        return out


def _gpu_memory(name: str, directory: Path) -> dict:
    """Device memory in use (pycuda mem_get_info) and, for native engines, the engines' device-memory sizes."""
    out: dict[str, Any] = {}
    try:
        import pycuda.driver as cuda

        free, total = cuda.mem_get_info()
        out["device_used_bytes"] = int(total - free)
        out["device_total_bytes"] = int(total)
    except Exception as exc:  # noqa: BLE001  no context / no pycuda: reported, not fatal
        out["device_memory_error"] = repr(exc)[:200]
    if name == "trt":
        from human3r_edge.runtime.backends.trt import EngineSidecar, engine_paths
        from human3r_edge.runtime.iospec import ExportSpec

        sizes = {}
        for g in ExportSpec.load(directory).graphs:
            sizes[g.name] = EngineSidecar.load(engine_paths(directory, g.name)[1]).device_memory_bytes
        out["engine_device_memory_bytes"] = sizes
    return out


def run_runtime(s: BenchSettings, name: str, directory: Path, assets: Assets, frames: Sequence[np.ndarray]) -> dict:
    """One runtime backend through `Session` (what `human3r-edge run` does per frame)."""
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.session import Session, SessionOptions
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    opts: dict[str, Any] = dict(s.ort_options) if name.startswith("ort") else {}
    if name.startswith("ort"):
        opts.setdefault("intra_op_threads", s.threads)
    tic = time.perf_counter()
    backend = open_backend(name, directory, **opts)
    session = Session(backend, SMPLXModel.load(assets.smplx_model), SessionOptions(ttt3r=True, dense=True))
    session.start()
    load_s, load_peak = time.perf_counter() - tic, peak_rss_bytes()
    sessions = getattr(backend, "_sessions", None)
    if name in GPU_BACKENDS:
        timer: Any = _GpuTimer(backend)
    elif isinstance(sessions, dict) and sessions:
        timer = _SessionTimer(sessions)
    else:
        timer = None
    records = []
    try:
        for frame in frames:
            if timer is not None:
                timer.take()
            t0 = time.perf_counter()
            r = session.step(frame)
            frame_ms = (time.perf_counter() - t0) * 1e3
            t = r.timings
            ms = {k: float(t.get(k, 0.0)) for k in ("preprocess", "encoder", "decoder", "smpl_head", "skinning")}
            ms["postprocess"] = sum(float(t.get(k, 0.0)) for k in ("detection", "tracking", "geometry",
                                                                    "reset_duplicate"))
            ms["outputs"] = max(frame_ms - sum(ms.values()), 0.0)
            graph_ms = timer.take() if timer is not None else ms["encoder"] + ms["decoder"] + ms["smpl_head"]
            records.append({"frame_ms": frame_ms, "stages": ms, "graph_ms": graph_ms, "people": len(r.people)})
        extra = _gpu_memory(name, directory) if name in GPU_BACKENDS else {}
    finally:
        session.close()
        backend.deactivate()
    del session, backend
    return {"load_s": load_s, "load_peak_rss_bytes": load_peak, "records": records, "device": extra,
            "what": f"{name}: lean export through runtime.Session (K={s.max_people} slots, numpy skinning)",
            "export": str(directory)}


# ================================================================================================ ORT profile
MATMUL_OPS = ("MatMul", "Gemm", "FusedMatMul", "FusedGemm", "MatMulInteger", "QLinearMatMul")
CONV_OPS = ("Conv", "FusedConv", "ConvTranspose", "NhwcFusedConv")


def _profiled_ort_cpu(prefix: str) -> type:
    """OrtCpuBackend with ONNX Runtime's per-node profiler on (used only for the profile pass, never timed)."""
    from human3r_edge.runtime.backends.ort import (OrtCpuBackend, import_onnxruntime, onnx_path, session_options,
                                                   verify_session_io)

    class ProfiledOrtCpu(OrtCpuBackend):
        def _activate_impl(self) -> None:
            ort = import_onnxruntime()
            so = session_options(ort, self.opts, strict=False)
            so.enable_profiling = True
            so.profile_file_prefix = prefix
            for g in self.spec.graphs:
                path = onnx_path(self.directory, g)
                sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
                verify_session_io(sess, g, path)
                self._sessions[g.name] = sess

    return ProfiledOrtCpu


def summarize_ort_profile(events: Sequence[Mapping[str, Any]], flops: Mapping[str, int], peak_gflops: float) -> dict:
    """Kernel time per op type of the LAST `model_run` in an ONNX Runtime profile, and achieved GFLOP/s of the
    matmul-like and conv ops. flops: {"MatMul": ..., "Gemm": ..., "Conv": ..., "ConvTranspose": ...} of the
    graph as exported (before ORT's fusions renamed MatMul+Add into Gemm / FusedMatMul)."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        return {}
    last = max(runs, key=lambda e: e["ts"])
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and e["ts"] >= last["ts"]:
            op = str(e.get("args", {}).get("op_name", "?"))
            by_op[op] = by_op.get(op, 0.0) + e["dur"] / 1e3
    kernel = sum(by_op.values())
    cats = {"matmul": sum(v for k, v in by_op.items() if k in MATMUL_OPS),
            "conv": sum(v for k, v in by_op.items() if k in CONV_OPS)}
    cats["other"] = kernel - cats["matmul"] - cats["conv"]
    cat_flops = {"matmul": sum(flops.get(k, 0) for k in ("MatMul", "Gemm", "Einsum", "Attention",
                                                         "MultiHeadAttention", "FusedMatMul")),
                 "conv": sum(flops.get(k, 0) for k in ("Conv", "ConvTranspose", "FusedConv")), "other": 0}
    out = {"run_ms": last["dur"] / 1e3, "kernel_ms": kernel,
           "by_op_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1])), "categories": {}}
    for k, ms in cats.items():
        f = cat_flops[k]
        out["categories"][k] = {"ms": ms, "share": ms / kernel if kernel else 0.0, "gflop": f / 1e9,
                                "efficiency": f / (ms / 1e3) / (peak_gflops * 1e9) if ms > 0 and f else None}
    return out


def profile_ort_cpu(s: BenchSettings, directory: Path, frames: Sequence[np.ndarray], by_op_flops: Mapping[str, Any],
                    peak_gflops: float, workdir: Path) -> dict:
    """Run `frames` (the last one is profiled) through a profiling ort-cpu Session; per graph, the op-type
    breakdown of the last run (`summarize_ort_profile`)."""
    from human3r_edge.runtime.iospec import ExportSpec
    from human3r_edge.runtime.session import Session, SessionOptions

    workdir.mkdir(parents=True, exist_ok=True)
    opts: dict[str, Any] = dict(s.ort_options)
    opts.setdefault("intra_op_threads", s.threads)
    cls = _profiled_ort_cpu(str(workdir / "ort_profile"))
    backend = cls(ExportSpec.load(directory), directory, **opts)
    session = Session(backend, None, SessionOptions(ttt3r=True, dense=True, skin=False))
    session.start()
    try:
        for f in frames:
            session.step(f)
        files = {name: sess.end_profiling() for name, sess in backend._sessions.items()}
    finally:
        session.close()
    out = {}
    for name, f in files.items():
        path = Path(f)
        events = json.loads(path.read_text())
        out[name] = summarize_ort_profile(events, by_op_flops.get(name, {}), peak_gflops)
        path.unlink(missing_ok=True)
    return out


# ================================================================================================ the run
def machine_info(threads: int) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "memory_bytes": mem,
            "platform": platform.platform(), "loadavg_before": list(os.getloadavg()), "_cpu_before": cpu_snapshot()}


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall s, busy CPU s of the whole machine, CPU s of this process and its children) for `foreign_cpu_share`."""
    busy = 0.0
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (sum(vals[:8]) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return time.time(), busy, t.user + t.system + t.children_user + t.children_system


def foreign_cpu_share(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """Share of the machine's CPU capacity used by OTHER processes between two snapshots (0 = quiet).

    The load average after a run includes the benchmark's own threads, so it cannot tell whether the machine
    was shared; this can.
    """
    wall = after[0] - before[0]
    if wall <= 0 or before[1] == 0:
        return 0.0
    foreign = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, foreign / (wall * (os.cpu_count() or 1)))


def versions() -> dict:
    from importlib import metadata

    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__}
    for dist in ("torch", "onnxruntime-gpu", "onnx", "tensorrt", "smplx", "human3r-edge"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:
        repo = Path(__file__).resolve().parents[1]
        out["git_commit"] = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def summarize_backend(raw: dict, warmup: int, flops: Mapping[str, int], peak_gflops: float) -> dict:
    """Percentiles, FPS, efficiency and runtime overhead of one backend's per-frame records."""
    timed_records = raw["records"][warmup:]
    frame = [r["frame_ms"] for r in timed_records]
    stages = {k: percentiles([r["stages"].get(k, 0.0) for r in timed_records]) for k in STAGES}
    fr = percentiles(frame)
    graph = percentiles([r["graph_ms"] for r in timed_records])
    outside = [max(r["frame_ms"] - r["graph_ms"], 0.0) / r["frame_ms"] for r in timed_records if r["frame_ms"] > 0]
    peak = peak_gflops * 1e9
    eff = {}
    for k in GRAPH_STAGES:
        t = stages[k]["p50"] / 1e3
        eff[k] = float(flops.get(k, 0)) / t / peak if t > 0 and peak > 0 else 0.0
    total_flops = float(sum(flops.get(k, 0) for k in GRAPH_STAGES))
    eff["total"] = total_flops / (fr["p50"] / 1e3) / peak if fr["p50"] > 0 and peak > 0 else 0.0
    eff["graphs"] = total_flops / (graph["p50"] / 1e3) / peak if graph["p50"] > 0 and peak > 0 else 0.0
    return {
        "frame_ms": fr, "fps": 1e3 / fr["p50"] if fr["p50"] > 0 else 0.0, "stages": stages,
        "graph_ms": graph, "efficiency": eff,
        "achieved_gflops": {"total": total_flops / (fr["p50"] / 1e3) / 1e9 if fr["p50"] > 0 else 0.0},
        "overhead": {"outside_graphs_fraction_p50": float(np.median(outside)) if outside else 0.0,
                     "outside_graphs_ms_p50": float(np.median([r["frame_ms"] - r["graph_ms"] for r in timed_records]))
                     if timed_records else 0.0},
        "people_per_frame": [r["people"] for r in raw["records"]],
        "timed_frames": len(timed_records), "warmup_frames": min(warmup, len(raw["records"])),
        "per_frame_ms": frame,
    }


def run_bench(s: BenchSettings) -> dict:
    """Run the whole benchmark for settings `s` and return the result dict (the JSON that is written)."""
    from . import flops as flops_mod
    from . import peak as peak_mod
    from human3r_edge.runtime.config import get_config

    cfg = get_config(s.config)
    result: dict[str, Any] = {
        "what": "human3r-edge bench: per-frame latency per stage, peak RSS and efficiency vs the measured sgemm peak",
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "config": s.config,
        "resolution": [s.width, s.height], "frames": s.frames, "warmup": s.warmup, "threads": s.threads,
        "people_frame0": s.people, "max_people": s.max_people, "seed": s.seed, "stages": list(STAGES),
        "ort_options": {k: v for k, v in s.ort_options},
        "machine": machine_info(s.threads), "versions": versions(),
        "command": "human3r-edge bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
    }
    sg = peak_mod.measure(s.peak_size, s.peak_repeats, s.threads)
    result["machine"]["sgemm_peak_gflops"] = sg["peak_gflops"]
    result["machine"]["sgemm"] = sg
    assets = ensure_assets(s)
    result["weights"] = {"checkpoint": str(assets.checkpoint), **assets.info}
    runtime_names = [b for b in s.backends if b in RUNTIME_BACKENDS]
    onnx_dir = None
    export_error = None
    if runtime_names:
        try:
            onnx_dir = ensure_export(s, assets)
        except (BackendUnavailable, Human3RError) as exc:
            export_error = str(exc)
    if onnx_dir is not None:
        graphs = flops_mod.count_export(onnx_dir)
        onnx_flops = flops_mod.summarize(graphs)
        flops = {k: int(onnx_flops["stages"].get(k, 0)) for k in GRAPH_STAGES}
        result["flops_info"] = {"source": f"onnx: {onnx_dir}", "weight_fp32_bytes": onnx_flops["weight_fp32_bytes"],
                                "params": onnx_flops["params"],
                                "by_op": {k: v.by_op for k, v in graphs.items()},
                                "by_scope": {k: v.by_scope for k, v in graphs.items()},
                                "uncounted_nodes": {k: len(v.uncounted) for k, v in graphs.items()}}
    else:
        meta = flops_mod.torch_stage_flops(cfg, s.width, s.height, s.max_people, lean=True)
        flops = {k: int(meta["stages"][k]) for k in GRAPH_STAGES}
        result["flops_info"] = {"source": "torch-meta (no ONNX export available)",
                                "weight_fp32_bytes": meta["weight_fp32_bytes"], "params": meta["params"]}
    result["flops"] = {**flops, "total": int(sum(flops.values()))}

    w0, h0 = s.source_size
    frames = synthetic_frames(w0, h0, s.warmup + s.frames, s.seed)
    result["source_frame_size"] = [w0, h0]
    backends: dict[str, Any] = {}
    for name in s.backends:
        release_memory()
        base = rss_bytes()
        reset_peak_rss()
        try:
            if name == "torch":
                raw = run_torch(s, assets, frames)
            elif name == "trt":
                if s.trt_engines is None:
                    raise BackendUnavailable(msg("trt", "no engine directory", None,
                                                 hint="pass --trt-engines DIR (human3r-edge build)"))
                raw = run_runtime(s, name, s.trt_engines, assets, frames)
            else:
                if onnx_dir is None:
                    raise BackendUnavailable(msg(name, "no lean export", export_error))
                raw = run_runtime(s, name, onnx_dir, assets, frames)
        except (BackendUnavailable, ImportError) as exc:
            backends[name] = {"skipped": str(exc)}
            print(f"bench | {name}: skipped ({exc})", file=sys.stderr)
            continue
        peak_rss, end_rss = peak_rss_bytes(), rss_bytes()
        if name == "torch":
            bflops = flops_mod.torch_stage_flops(cfg, s.width, s.height, _typical_people(raw), lean=False)
            stage_flops = {k: int(bflops["stages"][k]) for k in GRAPH_STAGES}
            weights = raw["weights_fp32_bytes"]
            fsource = (f"torch-meta, full model (every head), {bflops['humans']} people "
                       "(FlopCounterMode on the meta device: SDPA counted as matmuls)")
        else:
            stage_flops = flops
            weights = int(result["flops_info"]["weight_fp32_bytes"])
            fsource = result["flops_info"]["source"]
        b = summarize_backend(raw, s.warmup, stage_flops, sg["peak_gflops"])
        b.update(what=raw["what"], load_s=raw["load_s"], load_peak_rss_bytes=raw["load_peak_rss_bytes"],
                 flops={**stage_flops, "total": sum(stage_flops.values())},
                 flops_source=fsource, peak_rss_bytes=peak_rss, rss_end_bytes=end_rss, rss_baseline_bytes=base,
                 peak_rss_tracked=bool(base) and os.path.exists("/proc/self/clear_refs"),
                 peak_rss_above_baseline_bytes=peak_rss - base, weights_fp32_bytes=weights,
                 rss_over_weights=peak_rss / weights if weights else 0.0,
                 rss_above_baseline_over_weights=(peak_rss - base) / weights if weights else 0.0)
        for k in ("device", "export"):
            if raw.get(k):
                b[k] = raw[k]
        backends[name] = b
        print(f"bench | {name}: p50 {b['frame_ms']['p50']:.1f} ms/frame ({b['fps']:.2f} FPS), efficiency "
              f"{100 * b['efficiency']['total']:.1f} %, peak RSS {peak_rss / 2**30:.2f} GiB", file=sys.stderr)
    if s.profile and onnx_dir is not None and "ort-cpu" in backends and "skipped" not in backends["ort-cpu"]:
        release_memory()
        by_op = result["flops_info"].get("by_op", {})
        backends["ort-cpu"]["profile"] = profile_ort_cpu(s, onnx_dir, frames[:2], by_op, sg["peak_gflops"],
                                                         asset_dir(s) / "profiles")
    result["backends"] = backends
    result["comparison"] = compare_to_torch(backends)
    result["machine"]["loadavg_after"] = list(os.getloadavg())
    share = foreign_cpu_share(result["machine"].pop("_cpu_before"), cpu_snapshot())
    result["machine"]["foreign_cpu_share"] = share
    result["machine"]["quiet"] = result["machine"]["loadavg_before"][0] < QUIET_LOAD and share < QUIET_FOREIGN
    result["targets"] = targets(backends)
    return result


def _typical_people(raw: dict) -> int:
    people = [r["people"] for r in raw["records"]]
    return int(round(float(np.median(people)))) if people else 0


def compare_to_torch(backends: Mapping[str, Any]) -> dict:
    """Every measured backend's p50 frame and stage times as a ratio of torch's (same run, frames, threads)."""
    ref = backends.get("torch")
    if not ref or "skipped" in ref:
        return {}
    out = {}
    for name, b in backends.items():
        if "skipped" in b:
            continue
        stages = {}
        for k in STAGES:
            r = ref["stages"][k]["p50"]
            stages[k] = b["stages"][k]["p50"] / r if r > 0 else None
        out[name] = {"frame_p50_ratio": b["frame_ms"]["p50"] / ref["frame_ms"]["p50"], "stages_p50_ratio": stages,
                     "speedup": ref["frame_ms"]["p50"] / b["frame_ms"]["p50"]}
    return out


def targets(backends: Mapping[str, Any]) -> dict:
    """The issue's targets for ort-cpu, each with the measured value and whether it is met."""
    ort, ref = backends.get("ort-cpu"), backends.get("torch")
    if not ort or "skipped" in ort:
        return {}
    out: dict[str, Any] = {}
    if ref and "skipped" not in ref:
        ratio = ort["frame_ms"]["p50"] / ref["frame_ms"]["p50"]
        out["p50_vs_torch_le_0.75"] = {"value": ratio, "met": ratio <= 0.75}
    eff = ort["efficiency"]["total"]
    out["efficiency_total_ge_0.75"] = {"value": eff, "met": eff >= 0.75}
    over = ort["overhead"]["outside_graphs_fraction_p50"]
    out["overhead_le_0.03"] = {"value": over, "met": over <= 0.03}
    # what loading and running the backend adds to the process (the bench process also holds torch's libraries,
    # which a `human3r-edge run` process does not); the absolute ratio is reported next to it
    rss = ort["rss_above_baseline_over_weights"]
    out["peak_rss_le_1.3x_weights"] = {"value": rss, "met": rss <= 1.3, "absolute": ort["rss_over_weights"]}
    return out


# ================================================================================================ writing
def default_json_path(s: BenchSettings) -> Path:
    kind = "gpu" if any(b in GPU_BACKENDS for b in s.backends) else "cpu"
    return RESULTS / f"{s.config}_{s.width}x{s.height}_{kind}.json"


def markdown(r: Mapping[str, Any]) -> str:
    """The result as a markdown report (tables of p50 per stage, ratios, efficiency, memory, targets)."""
    m = r["machine"]
    b = {k: v for k, v in r["backends"].items() if "skipped" not in v}
    w, h = r["resolution"]
    lines = [f"# human3r-edge bench: {r['config']} at {w}x{h}", "",
             f"{r['date']} on {m['cpu']} ({m['cores']} cores, {m['threads']} threads, "
             f"{m.get('memory_bytes', 0) / 2**30:.0f} GiB); load average before {m['loadavg_before'][0]:.2f}, "
             f"after {m['loadavg_after'][0]:.2f} (the run's own threads included); other processes used "
             f"{100 * m.get('foreign_cpu_share', 0.0):.1f} % of the CPU during the run. Measured sgemm peak **{m['sgemm_peak_gflops']:.1f} GFLOP/s** "
             f"({m['sgemm']['peak_library']}, {m['sgemm']['size']}^3, best of {m['sgemm']['repeats']}). "
             f"{r['warmup']} warm-up + {r['frames']} timed frames per backend, synthetic "
             f"{r['source_frame_size'][0]}x{r['source_frame_size'][1]} frames, random weights "
             f"(detection bias shifted so {r['people_frame0']} people pass on frame 0).", "",
             f"Command: `{r['command']}`" + (f" (ONNX Runtime options {r['ort_options']})" if r.get("ort_options")
                                              else ""), ""]
    if not m.get("quiet", True):
        lines += [f"**WARNING: the machine was busy (1-minute load average {m['loadavg_before'][0]:.2f} before the "
                  f"run, limit {QUIET_LOAD}; other processes used {100 * m.get('foreign_cpu_share', 0.0):.1f} % of "
                  f"the CPU during it, limit {100 * QUIET_FOREIGN:.0f} %): these timings, the sgemm peak and the "
                  "efficiencies are not representative; re-run on a quiet machine.**", ""]
    if b:
        names = list(b)
        lines += ["| stage (p50 ms) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k in STAGES:
            lines.append(f"| {k} | " + " | ".join(f"{b[n]['stages'][k]['p50']:.1f}" for n in names) + " |")
        lines.append("| **frame p50** | " + " | ".join(f"**{b[n]['frame_ms']['p50']:.1f}**" for n in names) + " |")
        lines.append("| frame p90 / p99 | " + " | ".join(f"{b[n]['frame_ms']['p90']:.1f} / "
                                                         f"{b[n]['frame_ms']['p99']:.1f}" for n in names) + " |")
        lines.append("| FPS | " + " | ".join(f"{b[n]['fps']:.3f}" for n in names) + " |")
        lines.append("| GFLOP per frame (counted) | " + " | ".join(f"{b[n]['flops']['total'] / 1e9:.1f}"
                                                                  for n in names) + " |")
        lines.append("| efficiency total (graphs only) | " + " | ".join(
            f"{100 * b[n]['efficiency']['total']:.1f} % ({100 * b[n]['efficiency']['graphs']:.1f} %)"
            for n in names) + " |")
        for k in GRAPH_STAGES:
            lines.append(f"| efficiency {k} | " + " | ".join(f"{100 * b[n]['efficiency'][k]:.1f} %"
                                                            for n in names) + " |")
        lines.append("| time outside graphs | " + " | ".join(
            f"{100 * b[n]['overhead']['outside_graphs_fraction_p50']:.1f} %" for n in names) + " |")
        lines.append("| peak RSS (GiB): absolute / above pre-load baseline | " + " | ".join(
            f"{b[n]['peak_rss_bytes'] / 2**30:.2f} / {b[n]['peak_rss_above_baseline_bytes'] / 2**30:.2f}"
            for n in names) + " |")
        lines.append("| peak RSS during load (GiB) | " + " | ".join(f"{b[n]['load_peak_rss_bytes'] / 2**30:.2f}"
                                                                  for n in names) + " |")
        lines.append("| fp32 weights of executed graphs (GiB) | " + " | ".join(
            f"{b[n]['weights_fp32_bytes'] / 2**30:.2f}" for n in names) + " |")
        lines.append("| people per frame | " + " | ".join(
            ",".join(str(p) for p in b[n]["people_per_frame"]) for n in names) + " |")
        if r.get("comparison"):
            lines.append("| frame p50 vs torch | " + " | ".join(
                f"{r['comparison'][n]['frame_p50_ratio']:.3f}x" for n in names) + " |")
    for n, v in r["backends"].items():
        if "skipped" in v:
            lines.append(f"\n{n}: skipped: {v['skipped']}")
    if r.get("targets"):
        lines += ["", "| ort-cpu target | measured | met |", "|---|---|---|"]
        for k, t in r["targets"].items():
            lines.append(f"| {k} | {t['value']:.3f} | {'yes' if t['met'] else 'NO'} |")
    lines += ["", f"FLOPs (from {r['flops_info']['source']}): " + ", ".join(
        f"{k} {r['flops'][k] / 1e9:.1f} G" for k in GRAPH_STAGES) + f"; total {r['flops']['total'] / 1e9:.1f} GFLOP. "
        "Only MatMul/Gemm/Conv/ConvTranspose/attention are counted.", ""]
    for n in b:
        lines.append(f"- {n}: {b[n]['what']}; FLOPs: {b[n]['flops_source']}")
    prof = b.get("ort-cpu", {}).get("profile")
    if prof:
        lines += ["", "ort-cpu profile (ONNX Runtime profiler, last of 2 frames, kernel time per op category; "
                  "efficiency = counted FLOPs of the category / its kernel time / sgemm peak):", "",
                  "| graph | run ms | matmul ms (share, eff.) | conv ms (share, eff.) | other ms (share) | top ops |",
                  "|---|---|---|---|---|---|"]
        for g, p in prof.items():
            if not p:
                continue
            c = p["categories"]

            def cell(k: str) -> str:
                e = c[k]["efficiency"]
                return f"{c[k]['ms']:.0f} ({100 * c[k]['share']:.0f} %" + (f", {100 * e:.0f} %)" if e else ")")
            top = ", ".join(f"{k} {v:.0f}" for k, v in list(p["by_op_ms"].items())[:6])
            lines.append(f"| {g} | {p['run_ms']:.0f} | {cell('matmul')} | {cell('conv')} | {cell('other')} | {top} |")
    return "\n".join(lines) + "\n"


def chart(r: Mapping[str, Any], path: Path) -> Path | None:
    """Stacked bars of the p50 stage times per backend (PNG); None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    b = {k: v for k, v in r["backends"].items() if "skipped" not in v}
    if not b:
        return None
    names = list(b)
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.6 * len(names)))
    left = np.zeros(len(names))
    cmap = plt.get_cmap("tab10")
    for i, k in enumerate(STAGES):
        vals = np.array([b[n]["stages"][k]["p50"] for n in names]) / 1e3
        ax.barh(names, vals, left=left, color=cmap(i % 10), label=k)
        left += vals
    ax.set_xlabel("seconds per frame (p50 per stage)")
    w, h = r["resolution"]
    ax.set_title(f"{r['config']} {w}x{h}, {r['machine']['threads']} threads, {r['machine']['cpu'][:40]}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(r: Mapping[str, Any], json_path: Path) -> tuple[Path, Path, Path | None]:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(r, indent=1))
    os.replace(tmp, json_path)
    md = json_path.with_suffix(".md")
    md.write_text(markdown(r))
    return json_path, md, chart(r, json_path.with_suffix(".png"))


def main(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    if args.prepare_only:
        assets = load_assets(s) or prepare_assets(s)
        print(f"bench | assets ready in {assets.directory} (bias shift {assets.info['bias_shift']:+.3f})")
        return 0
    r = run_bench(s)
    out = args.json or default_json_path(s)
    j, md, png = write_results(r, out)
    parts = [f"{n} {v['frame_ms']['p50']:.0f} ms" for n, v in r["backends"].items() if "skipped" not in v]
    extra = ""
    if "ort-cpu" in r.get("comparison", {}):
        extra = f", ort-cpu/torch {r['comparison']['ort-cpu']['frame_p50_ratio']:.2f}x"
    print(f"bench | {s.config} {s.width}x{s.height}: " + ", ".join(parts) + extra + f" -> {j}, {md}"
          + (f", {png}" if png else ""))
    return 0
