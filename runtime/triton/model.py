"""The Python-backend model of the `python` flavour: one runtime `Session` per Triton sequence (correlation id).

Triton's sequence batcher (Oldest strategy) hands `execute` up to `max_batch_size` requests at once, each one frame of
one sequence; the control inputs CORRID / START / END say which sequence and where it starts or ends. This class
keeps a Session per correlation id: created on START (a START on a live id starts it anew), freed on END or after
`idle_seconds` without a request (Triton's own `max_sequence_idle_microseconds` releases the sequence slot at the same
time, so its next request without START is refused by Triton itself).

How a batch runs:
* a single-stream export: the requests run one after the other, each through its own sequence's `Session`;
* a multi-stream export (`export --streams N`): one `MultiSession` (runtime/multistream.py) holds every sequence in
  a stream slot (at most N live sequences), and the whole batch is ONE batched model step
  (`MultiSession.process`); a sequence's slot is closed (state rows back to the initial state) on END or idle.

The shim `model.py` that `triton-repo` writes into the repository imports this module and passes Triton's
`triton_python_backend_utils` in, so nothing here imports Triton (and the module can be tested without a server).

Inputs (batch axis first, one frame per request):
    FRAME        uint8 (H, W, 3) RGB, optional       FRAME_JPEG  uint8 (N,) encoded image bytes, optional
    (exactly one of them; a request with END and neither only closes the sequence)
Outputs (only those the client asks for are computed and sent):
    INDEX (1,) int64 frame index in the sequence, SEGMENT (1,) int32, POSE (4, 4) float32 c2w, INTRINSICS (3, 3),
    FOCAL (1,), TRACK_IDS (P,) int64, SCORES (P,), HEAD_UV (P, 2), ROTMAT (P, 53, 3, 3), BETAS (P, 10),
    EXPRESSION (P, 10), TRANSL (P, 3) head joint in camera coordinates; with an SMPL-X model: SMPLX_TRANSL (P, 3),
    VERTICES_CAM / VERTICES_WORLD (P, V, 3), JOINTS_CAM / JOINTS_WORLD (P, 127, 3); with dense=1: DEPTH (H, W),
    CONFIDENCE (H, W), POINTS_CAM (H, W, 3); LIVE_SEQUENCES (1,) int32 sequences held after this request.
"""
from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import Human3RError, msg

# output name -> (dtype, dims without the batch axis); -1 = variable
OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "INDEX": ("int64", (1,)), "SEGMENT": ("int32", (1,)), "POSE": ("float32", (4, 4)),
    "INTRINSICS": ("float32", (3, 3)), "FOCAL": ("float32", (1,)), "TRACK_IDS": ("int64", (-1,)),
    "SCORES": ("float32", (-1,)), "HEAD_UV": ("float32", (-1, 2)), "ROTMAT": ("float32", (-1, 53, 3, 3)),
    "BETAS": ("float32", (-1, 10)), "EXPRESSION": ("float32", (-1, 10)), "TRANSL": ("float32", (-1, 3)),
    "LIVE_SEQUENCES": ("int32", (1,)),
}
SMPLX_OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "SMPLX_TRANSL": ("float32", (-1, 3)), "VERTICES_CAM": ("float32", (-1, -1, 3)),
    "VERTICES_WORLD": ("float32", (-1, -1, 3)), "JOINTS_CAM": ("float32", (-1, -1, 3)),
    "JOINTS_WORLD": ("float32", (-1, -1, 3)),
}
DENSE_OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "DEPTH": ("float32", (-1, -1)), "CONFIDENCE": ("float32", (-1, -1)), "POINTS_CAM": ("float32", (-1, -1, 3)),
}
INPUTS: dict[str, tuple[str, tuple[int, ...]]] = {"FRAME": ("uint8", (-1, -1, 3)), "FRAME_JPEG": ("uint8", (-1,))}
CONTROLS = {"CORRID": "uint64", "START": "bool", "END": "bool"}
# Backends whose calls may come from any thread. The GPU backends (trt, ort-cuda, ort-trt) are bound to the thread
# that holds their CUDA context (pycuda contexts are per thread), so the idle reaper thread must not close their
# sessions or reset their stream rows: it retires the sequence (its id is refused at once, its metrics updated)
# and the next `execute`, on the model's own thread, releases it.
THREAD_FREE_BACKENDS = ("ort-cpu", "torch")


@dataclass
class Held:
    session: Any
    last_seen: float
    frames: int = 0


def result_tensors(r: Any, live: int) -> dict[str, np.ndarray]:
    """Every output of one FrameResult, without the batch axis."""
    people = r.people
    f32 = np.float32

    def stack(attr: str, shape: tuple[int, ...], dtype: Any = f32) -> np.ndarray:
        vals = [getattr(p, attr) for p in people]
        if not vals or any(v is None for v in vals):
            return np.zeros((0,) + shape, dtype)
        return np.ascontiguousarray(np.stack([np.asarray(v, dtype) for v in vals]))

    out: dict[str, np.ndarray] = {
        "INDEX": np.array([r.index], np.int64), "SEGMENT": np.array([r.segment], np.int32),
        "POSE": np.asarray(r.c2w, f32), "INTRINSICS": np.asarray(r.intrinsics, f32),
        "FOCAL": np.array([r.focal], f32), "TRACK_IDS": np.array([p.track_id for p in people], np.int64),
        "SCORES": np.array([p.score for p in people], f32), "HEAD_UV": stack("head_uv", (2,)),
        "ROTMAT": stack("rotmat", (53, 3, 3)), "BETAS": stack("betas", (10,)),
        "EXPRESSION": stack("expression", (10,)), "TRANSL": stack("transl", (3,)),
        "SMPLX_TRANSL": stack("smplx_transl", (3,)), "VERTICES_CAM": stack("vertices_cam", (0, 3)),
        "VERTICES_WORLD": stack("vertices_world", (0, 3)), "JOINTS_CAM": stack("joints_cam", (0, 3)),
        "JOINTS_WORLD": stack("joints_world", (0, 3)), "LIVE_SEQUENCES": np.array([live], np.int32),
    }
    for name, attr in (("DEPTH", "depth"), ("CONFIDENCE", "confidence"), ("POINTS_CAM", "points_cam")):
        v = getattr(r, attr)
        out[name] = np.zeros((0, 0) if name != "POINTS_CAM" else (0, 0, 3), f32) if v is None else np.asarray(v, f32)
    return out


def decode_jpeg(data: np.ndarray) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(np.asarray(data, np.uint8).tobytes())) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # PIL raises several types for corrupt data
        raise Human3RError(msg("FRAME_JPEG", "not a decodable image", f"{data.size} bytes ({exc})",
                               "JPEG or PNG bytes")) from exc


class SequenceModel:
    """What `TritonPythonModel` delegates to; `pb` is Triton's `triton_python_backend_utils` module."""

    def __init__(self, pb: Any, args: dict[str, Any]) -> None:
        self.pb = pb
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        self.export_dir = version_dir / params.get("export_dir", "export")
        smplx = params.get("smplx_model", "")
        self.smplx_path = (version_dir / smplx) if smplx else None
        self.backend_name = params.get("backend", "ort-cpu")
        self.dense = params.get("dense", "0") == "1"
        self.idle_seconds = float(params.get("idle_seconds", "60"))
        self.max_sequences = int(params.get("max_sequences", "8"))
        self.held: dict[int, Held] = {}
        self.retired: list[tuple[int, Held]] = []  # freed by the reaper, released on the model thread (see above)
        self.lock = threading.RLock()
        self.smplx_model: Any = None
        if self.smplx_path is not None:
            from human3r_edge.runtime.smplx.skinning import SMPLXModel

            self.smplx_model = SMPLXModel.load(self.smplx_path)  # one body model shared by every sequence
        # a multi-stream export (export --streams N): every batch of sequences runs as ONE batched model step
        from human3r_edge.runtime.iospec import ExportSpec

        self.multi: Any = None
        self.batch_sizes: list[int] = []
        streams = int(getattr(ExportSpec.load(self.export_dir), "streams", 1) or 1)
        if streams > 1:
            from human3r_edge.runtime.multistream import MultiSession
            from human3r_edge.runtime.session import SessionOptions

            self.max_sequences = min(self.max_sequences, streams)
            self.multi = MultiSession.open(self.export_dir, self.backend_name, streams, self.smplx_model,
                                           SessionOptions(dense=self.dense))
            self.multi.start()
        self.families: list[Any] = []
        self.metrics: dict[str, Any] = {}
        try:  # custom metrics on Triton's own metrics port
            fam = pb.MetricFamily(name="human3r_live_sequences", description="sequences whose state is held",
                                  kind=pb.MetricFamily.GAUGE)
            model = str(args.get("model_name", "human3r"))
            self.metrics["live"] = fam.Metric(labels={"model": model})
            cnt = pb.MetricFamily(name="human3r_sequences_freed_total", description="sequence states freed, by reason",
                                  kind=pb.MetricFamily.COUNTER)
            self.metrics["end"] = cnt.Metric(labels={"model": model, "reason": "end"})
            self.metrics["idle"] = cnt.Metric(labels={"model": model, "reason": "idle"})
            self.metrics["restart"] = cnt.Metric(labels={"model": model, "reason": "restart"})
            self.families = [fam, cnt]  # a family must outlive its metrics
        except Exception:  # an older Python backend without custom metrics: serve without them
            self.metrics = {}
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="human3r-idle-reaper", daemon=True)
        self._reaper.start()

    # ------------------------------------------------------------------------------------------- sequences
    def _new_session(self) -> Any:
        from human3r_edge.runtime.session import Session, SessionOptions

        s = Session.open(self.export_dir, self.backend_name, None, SessionOptions(dense=self.dense))
        s.smplx = self.smplx_model
        s.start()
        return s

    def _free(self, corrid: int, reason: str, from_reaper: bool = False) -> None:
        held = self.held.pop(corrid, None)
        if held is not None:
            if from_reaper and self.backend_name not in THREAD_FREE_BACKENDS:
                self.retired.append((corrid, held))  # released by the next execute, on the model's thread
            else:
                self._release(corrid, held)
            self._count(reason)

    def _release(self, corrid: int, held: Held) -> None:
        if held.session is not None:
            held.session.close()
        elif self.multi is not None and corrid in self.multi.stream_ids:
            self.multi.close(corrid)  # its slot's state rows go back to the initial state

    def release_retired(self) -> None:
        """Release the sequences the reaper retired (called on the model's thread: execute, finalize)."""
        with self.lock:
            retired, self.retired = self.retired, []
            for corrid, held in retired:
                self._release(corrid, held)

    def _count(self, reason: str) -> None:
        try:
            if reason in self.metrics:
                self.metrics[reason].increment(1)
            if "live" in self.metrics:
                self.metrics["live"].set(len(self.held))
        except Exception:  # metrics are best effort: never fail a request for them
            pass

    def reap(self, now: float | None = None, from_reaper: bool = False) -> list[int]:
        """Free every sequence idle for longer than idle_seconds; returns their ids. From the reaper thread, a
        thread-bound (GPU) backend's sequences are only retired (see THREAD_FREE_BACKENDS)."""
        now = time.monotonic() if now is None else now
        with self.lock:
            gone = [c for c, h in self.held.items() if now - h.last_seen > self.idle_seconds]
            for c in gone:
                self._free(c, "idle", from_reaper)
        return gone

    def _reap_loop(self) -> None:
        while not self._stop.wait(min(1.0, self.idle_seconds / 4)):
            self.reap(from_reaper=True)

    # ------------------------------------------------------------------------------------------- requests
    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order. Admission (control flags, inputs) is per request; the model work
        is one `Session.step` per request, or ONE batched `MultiSession.process` for the whole batch."""
        self.release_retired()
        responses: list[Any] = [None] * len(requests)
        admitted: list[tuple[int, Any, int, bool, bool, np.ndarray]] = []
        for i, request in enumerate(requests):
            try:
                got = self._admit(request)
                if isinstance(got, tuple):
                    corrid, start, end, image = got
                    admitted.append((i, request, corrid, start, end, image))
                else:
                    responses[i] = got  # END without a frame: closed
            except Exception as exc:
                responses[i] = self._error(exc)
        if self.multi is None:
            for i, request, corrid, start, end, image in admitted:
                try:
                    try:
                        r = self.held[corrid].session.step(image)
                    except BaseException:
                        self._after(corrid, start, end, failed=True)
                        raise
                    self._after(corrid, start, end, failed=False)
                    responses[i] = self._respond(request, r)
                except Exception as exc:
                    responses[i] = self._error(exc)
        else:
            self._run_batch(admitted, responses)
        return responses

    def _run_batch(self, admitted: list[tuple[int, Any, int, bool, bool, np.ndarray]], responses: list[Any]) -> None:
        assert self.multi is not None
        prepared: dict[int, Any] = {}
        ok = []
        for a in admitted:
            i, _, corrid, start, end, image = a
            try:
                prepared[corrid] = self.multi.prepare(corrid, image)
                ok.append(a)
            except Exception as exc:
                responses[i] = self._error(exc)
                self._after(corrid, start, end, failed=True)
        if not ok:
            return
        try:
            with self.lock:
                outs = self.multi.process(prepared)  # one batched model step for every sequence of the batch
                self.batch_sizes.append(len(prepared))
        except Exception as exc:
            for i, _, corrid, start, end, _ in ok:
                responses[i] = self._error(exc)
                self._after(corrid, start, end, failed=True)
            return
        for i, request, corrid, start, end, _ in ok:
            self._after(corrid, start, end, failed=False)
            try:
                responses[i] = self._respond(request, outs[corrid])
            except Exception as exc:
                responses[i] = self._error(exc)

    def _error(self, exc: BaseException) -> Any:
        pb = self.pb
        if isinstance(exc, Human3RError):
            return pb.InferenceResponse(error=pb.TritonError(str(exc)))
        return pb.InferenceResponse(error=pb.TritonError(  # never take the server down for one request
            msg("human3r model", "request failed", f"{type(exc).__name__}: {exc}")))

    def _after(self, corrid: int, start: bool, end: bool, failed: bool) -> None:
        """After a frame: END frees the sequence; so does a failed first frame (its next request needs START)."""
        with self.lock:
            held = self.held.get(corrid)
            if held is not None:
                held.frames += 1
            if end or (failed and start):
                self._free(corrid, "end")

    def _respond(self, request: Any, r: Any) -> Any:
        pb = self.pb
        wanted = request.requested_output_names() if hasattr(request, "requested_output_names") else None
        tensors = result_tensors(r, len(self.held))
        names = [n for n in tensors if wanted is None or n in wanted]
        return pb.InferenceResponse(output_tensors=[pb.Tensor(n, tensors[n][None]) for n in names])

    def _input(self, request: Any, name: str) -> np.ndarray | None:
        t = self.pb.get_input_tensor_by_name(request, name)
        return None if t is None else t.as_numpy()

    def _admit(self, request: Any) -> tuple[int, bool, bool, np.ndarray] | Any:
        """(corrid, start, end, image) of a request with a frame, or the response of an END without one."""
        pb = self.pb
        corrid = int(np.asarray(self._input(request, "CORRID")).reshape(-1)[0])
        start = bool(np.asarray(self._input(request, "START")).reshape(-1)[0])
        end = bool(np.asarray(self._input(request, "END")).reshape(-1)[0])
        frame = self._input(request, "FRAME")
        jpeg = self._input(request, "FRAME_JPEG")
        if frame is not None and jpeg is not None:
            raise Human3RError(msg(f"sequence {corrid}", "request has both FRAME and FRAME_JPEG", hint="send one"))
        image = None
        if frame is not None:
            if frame.ndim != 4 or frame.shape[0] != 1:
                raise Human3RError(msg(f"sequence {corrid}: FRAME", "bad shape", frame.shape, "(1, H, W, 3) uint8"))
            image = frame[0]
        elif jpeg is not None:
            image = decode_jpeg(jpeg.reshape(-1))
        with self.lock:
            if start:
                if corrid in self.held:
                    self._free(corrid, "restart")
                if len(self.held) >= self.max_sequences:
                    raise Human3RError(msg(f"sequence {corrid}", "too many live sequences",
                                           len(self.held), f"at most {self.max_sequences}",
                                           "end sequences (END flag) or raise --max-sequences"))
                if self.multi is None:
                    self.held[corrid] = Held(self._new_session(), time.monotonic())
                else:
                    self.multi.add(corrid)
                    self.held[corrid] = Held(None, time.monotonic())
                self._count("")
            held = self.held.get(corrid)
            if held is None:
                raise Human3RError(msg(f"sequence {corrid}", "no state on the server", "a request without START",
                                       "START on the first request of a sequence",
                                       "the sequence was never started, was idle longer than the timeout "
                                       f"({self.idle_seconds:g} s) or the server restarted: start it again"))
            held.last_seen = time.monotonic()
            if image is None:
                if not end:
                    raise Human3RError(msg(f"sequence {corrid}", "request has no frame", hint="send FRAME (uint8 "
                                           "HxWx3) or FRAME_JPEG; only a request with END may come without a frame"))
                self._free(corrid, "end")
                return pb.InferenceResponse(output_tensors=[pb.Tensor("LIVE_SEQUENCES",
                                                                      np.array([[len(self.held)]], np.int32))])
        return corrid, start, end, image

    def finalize(self) -> None:
        self._stop.set()
        self.release_retired()
        with self.lock:
            for c in list(self.held):
                self._free(c, "end")
            if self.multi is not None:
                self.multi.shutdown()
