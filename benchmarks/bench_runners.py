"""The timed per-frame loops of `human3r-edge bench`: the PyTorch reference, and each runtime backend through
`Session`, with their graph-time instrumentation (ONNX Runtime session timers, CUDA events)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.benchmarks.bench_assets import Assets
from human3r_edge.benchmarks.bench_settings import GPU_BACKENDS, BenchSettings
from human3r_edge.benchmarks.memory import peak_rss_bytes
from human3r_edge.benchmarks.timing import StageClock, timed

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
    from human3r_edge.runtime.pipeline import PipelineOptions
    from human3r_edge.runtime.session import Session, SessionOptions
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    opts: dict[str, Any] = dict(s.ort_options) if name.startswith("ort") else {}
    if name.startswith("ort"):
        opts.setdefault("intra_op_threads", s.threads)
    tic = time.perf_counter()
    backend = open_backend(name, directory, **opts)
    session = Session(backend, SMPLXModel.load(assets.smplx_model), SessionOptions(pipeline=PipelineOptions(ttt3r=True), dense=True))
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
