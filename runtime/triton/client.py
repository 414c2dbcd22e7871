"""The client backend: a `RemoteSession` streams one source's frames to a Triton server as one sequence (one
correlation id) and returns the same `FrameResult`s as a local `Session`.

    with RemoteSession("127.0.0.1:8000") as s:          # or Session-like: open_session(backend="triton", url=...)
        for frame in frames:
            r = s.step(frame)                              # FrameResult: c2w, intrinsics, people (track ids, SMPL-X)

Operations:
* readiness: `start()` checks the server's /v2/health/ready and the model's readiness (a clear error otherwise).
* the server restarts mid-sequence (the connection fails): the client waits for the server to be ready again (up to
  `reconnect_timeout` s), sends the same frame again with START and goes on. The sequence's recurrent state is lost:
  the reset is recorded in `resets` (frame, reason, time), the segment counter moves on, track ids continue after the
  largest id seen (ids are never reused) and poses are chained onto the last pose before the restart (as the runtime
  chains segments). No frame is lost: the frame whose request failed is the one sent again.
* the server answers that it does not know the sequence (never started, idle past its timeout, or a restart between
  two requests): a clear error (`Human3RError`), unless `restart_lost=True`, which restarts it as above.
* a frame the model refuses (too small, corrupt JPEG, wrong dtype): the server's message as a `Human3RError`.
"""
from __future__ import annotations

import io
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.runtime.frames import normalize_frame, to_image_u8
from human3r_edge.runtime.session import FrameResult, Person

MODEL_NAME = "human3r"
BASE_OUTPUTS = ("INDEX", "SEGMENT", "POSE", "INTRINSICS", "FOCAL", "TRACK_IDS", "SCORES", "HEAD_UV", "ROTMAT",
                "BETAS", "EXPRESSION", "TRANSL", "LIVE_SEQUENCES")
SMPLX_OUTPUTS = ("SMPLX_TRANSL", "VERTICES_CAM", "VERTICES_WORLD", "JOINTS_CAM", "JOINTS_WORLD")
DENSE_OUTPUTS = ("DEPTH", "CONFIDENCE", "POINTS_CAM")
UNKNOWN_SEQUENCE = ("must specify the START flag", "no state on the server")


def _tritonclient() -> Any:
    try:
        import tritonclient.http as httpclient
    except ImportError as exc:
        raise BackendUnavailable(msg("backend triton", "tritonclient is not installed", str(exc),
                                     hint="pip install 'human3r-edge[serve]' (tritonclient[http])")) from exc
    return httpclient


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, OSError, TimeoutError)):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("connection refused", "connection reset", "broken pipe", "connection aborted",
                                   "remotedisconnected", "timed out", "connectionclosed", "unavailable"))


def new_sequence_id() -> int:
    """A random correlation id in 1..2^63-1 (0 is Triton's 'no sequence')."""
    return random.SystemRandom().randrange(1, 2 ** 63)


class RemoteSession:
    """One stream through a Triton server (the `python` flavour repository's `human3r` model). Not thread-safe:
    one RemoteSession per stream, started and used in one thread (its HTTP client, geventhttpclient, is bound to
    the thread that made it).

    resume=True joins an existing sequence `sequence_id` (no START on the first request); `restart_lost=True`
    restarts a sequence the server no longer knows instead of raising."""

    def __init__(self, url: str, sequence_id: int | None = None, *, model: str = MODEL_NAME,
                 vertices: bool = True, dense: bool = False, jpeg: bool = False, jpeg_quality: int = 95,
                 network_timeout: float = 60.0, reconnect_timeout: float = 60.0, restart_lost: bool = False,
                 channel_order: str = "RGB", resume: bool = False) -> None:
        self.url = url
        self.sequence_id = int(sequence_id) if sequence_id is not None else new_sequence_id()
        if not 0 < self.sequence_id < 2 ** 64:
            raise Human3RError(msg("sequence_id", "out of range", self.sequence_id, "1 .. 2^64-1"))
        self.model = model
        self.want_vertices, self.want_dense, self.jpeg, self.jpeg_quality = vertices, dense, jpeg, jpeg_quality
        self.network_timeout, self.reconnect_timeout = network_timeout, reconnect_timeout
        self.restart_lost = restart_lost
        self.channel_order = channel_order.upper()
        self.client: Any = None
        self.outputs: list[str] = []
        self.served: set[str] = set()
        self.width = self.height = 0
        self.index = 0  # frames returned
        self.resets: list[dict[str, Any]] = []  # sequence restarts (server restart / lost sequence)
        self.latencies_ms: list[float] = []
        self._started = bool(resume)  # the server holds our sequence (resume: join `sequence_id` without START)
        self._opened = False  # a START was sent (Triton holds a sequence slot until END or its idle timeout)
        self._segment_offset = 0
        self._last_segment = 0
        self._id_offset = 0
        self._max_id = -1
        self._chain = np.eye(4, dtype=np.float32)
        self._last_c2w: np.ndarray | None = None
        self._rechain = False

    # ---------------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "RemoteSession":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> Any:
        http = _tritonclient()
        self.client = http.InferenceServerClient(self.url, connection_timeout=self.network_timeout,
                                                 network_timeout=self.network_timeout)
        return self.client

    def start(self) -> "RemoteSession":
        if self.client is not None:
            return self
        client = self._connect()
        if not self._ready():
            raise BackendUnavailable(msg(f"triton server {self.url}", "not ready", "/v2/health/ready failed",
                                         hint="start it with `human3r-edge triton-server --repo REPO` and check "
                                         "--url HOST:PORT (the HTTP port)"))
        try:
            config = client.get_model_config(self.model)
        except Exception as exc:
            raise BackendUnavailable(msg(f"triton model {self.model}", "not available", str(exc)[:300],
                                         hint="is the repository written by `human3r-edge triton-repo`?")) from exc
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.width, self.height = int(params.get("width", 0)), int(params.get("height", 0))
        served = {o["name"] for o in config.get("output", [])}
        self.served = served
        wanted = list(BASE_OUTPUTS) + (list(SMPLX_OUTPUTS) if self.want_vertices else []) + (
            list(DENSE_OUTPUTS) if self.want_dense else [])
        self.outputs = [n for n in wanted if n in served]
        if self.want_dense and "DEPTH" not in served:
            raise Human3RError(msg("dense outputs", "not served by this repository", sorted(served),
                                   hint="write the repository with `triton-repo --dense`"))
        return self

    def _ready(self) -> bool:
        try:
            return bool(self.client.is_server_ready()) and bool(self.client.is_model_ready(self.model))
        except Exception:
            return False

    def close(self) -> None:
        """End the sequence on the server (a request with END and no frame frees its state) and disconnect."""
        if self.client is None:
            return
        if self._started or self._opened:
            try:
                self._infer(None, start=False, end=True, outputs=["LIVE_SEQUENCES"])
            except Exception:  # the server may be gone: its idle timeout frees the state then
                pass
            self._started = self._opened = False
        try:
            self.client.close()
        except Exception:
            pass
        self.client = None

    # ---------------------------------------------------------------------------------------------- requests
    def _inputs(self, frame: np.ndarray | None) -> list[Any]:
        http = _tritonclient()
        if frame is None:
            return []
        if self.jpeg:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=self.jpeg_quality)
            data = np.frombuffer(buf.getvalue(), np.uint8)[None]
            t = http.InferInput("FRAME_JPEG", list(data.shape), "UINT8")
            t.set_data_from_numpy(data)
            return [t]
        data = np.ascontiguousarray(frame)[None]
        dtype = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32", np.dtype(np.uint16): "UINT16"}.get(
            data.dtype, "UINT8")
        t = http.InferInput("FRAME", list(data.shape), dtype)
        t.set_data_from_numpy(data)
        return [t]

    def _infer(self, frame: np.ndarray | None, start: bool, end: bool, outputs: list[str] | None = None) -> Any:
        http = _tritonclient()
        outs = [http.InferRequestedOutput(n, binary_data=True) for n in (outputs or self.outputs)]
        return self.client.infer(self.model, self._inputs(frame), outputs=outs, sequence_id=self.sequence_id,
                                 sequence_start=start, sequence_end=end)

    def _wait_ready(self, reason: str) -> None:
        deadline = time.monotonic() + self.reconnect_timeout
        while time.monotonic() < deadline:
            try:
                if self.client is not None:
                    self.client.close()
            except Exception:
                pass
            try:
                self._connect()
                if self._ready():
                    return
            except Exception:
                pass
            time.sleep(0.25)
        raise BackendUnavailable(msg(f"triton server {self.url}", "did not come back", reason,
                                     f"ready within {self.reconnect_timeout:g} s", "check the server; the run "
                                     "stops here with every result so far written"))

    def _restart(self, reason: str) -> None:
        self.resets.append({"frame": self.index, "sequence_id": self.sequence_id, "reason": reason[:300],
                            "time": time.time()})
        self._started = False
        self._segment_offset = self._last_segment + 1
        self._id_offset = self._max_id + 1
        self._rechain = self._last_c2w is not None

    def step(self, frame: Any, timestamp: float | None = None, *, end: bool = False) -> FrameResult:
        """Send one frame (numpy HxWx3 uint8 in `channel_order`, or what `Session.step` takes on the host) -> its
        FrameResult. end=True closes the sequence with this frame."""
        if self.client is None:
            self.start()
        a = normalize_frame(frame)
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        elif a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        elif a.shape[2] == 4:
            a = a[:, :, :3]
        if self.channel_order == "BGR":
            a = a[:, :, ::-1]
        a = np.ascontiguousarray(a)
        while True:
            tic = time.perf_counter()
            try:
                self._opened = self._opened or not self._started
                res = self._infer(a, start=not self._started, end=end)
                break
            except Exception as exc:
                text = str(exc)
                if _is_connection_error(exc) and not any(s in text for s in UNKNOWN_SEQUENCE):
                    if self.reconnect_timeout <= 0:
                        raise BackendUnavailable(msg(f"triton server {self.url}", "unreachable", text[:300])) from exc
                    self._wait_ready(text[:200])
                    self._restart(f"server unreachable: {text[:200]}")
                    continue
                if any(s in text for s in UNKNOWN_SEQUENCE):
                    if self.restart_lost and self._started:
                        self._restart(f"sequence lost on the server: {text[:200]}")
                        continue
                    raise Human3RError(msg(f"triton sequence {self.sequence_id}", "unknown to the server",
                                           text[:300], hint="it was idle longer than the server's timeout, or the "
                                           "server restarted: start a new sequence (RemoteSession(..., "
                                           "restart_lost=True) restarts it by itself)")) from exc
                raise Human3RError(msg(f"triton sequence {self.sequence_id}", "request refused", text[:500])) from exc
        self.latencies_ms.append((time.perf_counter() - tic) * 1e3)
        self._started = not end
        return self._result(res, a, timestamp)

    def _result(self, res: Any, frame: np.ndarray, timestamp: float | None) -> FrameResult:
        def get(name: str) -> np.ndarray | None:
            v = res.as_numpy(name) if name in self.outputs else None
            return None if v is None else v[0]

        c2w = np.asarray(get("POSE"), np.float32)
        if self._rechain:
            assert self._last_c2w is not None
            self._chain = (self._last_c2w.astype(np.float64) @ np.linalg.inv(c2w.astype(np.float64))).astype(
                np.float32)
            self._rechain = False
        if self.resets:
            c2w = (self._chain @ c2w).astype(np.float32)
        self._last_c2w = c2w
        segment = int(np.asarray(get("SEGMENT")).reshape(-1)[0]) + self._segment_offset
        self._last_segment = segment
        ids = np.asarray(get("TRACK_IDS"), np.int64) + self._id_offset
        if ids.size:
            self._max_id = max(self._max_id, int(ids.max()))
        people = []
        fields = {"smplx_transl": "SMPLX_TRANSL", "vertices_cam": "VERTICES_CAM", "vertices_world": "VERTICES_WORLD",
                  "joints_cam": "JOINTS_CAM", "joints_world": "JOINTS_WORLD"}
        extra_arrays = {k: get(n) for k, n in fields.items()}
        scores, uv, rot = get("SCORES"), get("HEAD_UV"), get("ROTMAT")
        betas, expr, transl = get("BETAS"), get("EXPRESSION"), get("TRANSL")
        assert scores is not None and uv is not None and rot is not None
        assert betas is not None and expr is not None and transl is not None
        for i, tid in enumerate(ids):
            extra = {k: np.array(v[i]) for k, v in extra_arrays.items() if v is not None and len(v) > i}
            people.append(Person(track_id=int(tid), score=float(scores[i]), head_uv=np.array(uv[i]),
                                 rotmat=np.array(rot[i]), betas=np.array(betas[i]), expression=np.array(expr[i]),
                                 transl=np.array(transl[i]), **extra))
        dense: dict[str, Any] = {}
        if self.want_dense:
            from human3r_edge.runtime.geometry import transform_points

            pts = get("POINTS_CAM")
            dense = dict(depth=get("DEPTH"), confidence=get("CONFIDENCE"), points_cam=pts,
                         points_world=None if pts is None else transform_points(c2w, pts))
        r = FrameResult(index=self.index, timestamp=timestamp, image=self._model_image(frame), c2w=c2w,
                        intrinsics=np.asarray(get("INTRINSICS"), np.float32),
                        focal=float(np.asarray(get("FOCAL")).reshape(-1)[0]), segment=segment, people=tuple(people),
                        timings={"remote": self.latencies_ms[-1]}, **dense)
        self.index += 1
        return r

    def _model_image(self, frame: np.ndarray) -> np.ndarray:
        """The model input image (what a local FrameResult carries), made here from the frame (not sent back)."""
        from human3r_edge.runtime import preprocess as pp

        size = max(self.width, self.height)
        if size <= 0:
            return np.zeros((0, 0, 3), np.uint8)
        try:
            return to_image_u8(pp.preprocess_rgb(frame, size))
        except Human3RError:
            return np.zeros((self.height, self.width, 3), np.uint8)

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms, np.float64)
        return {"backend": "triton", "url": self.url, "model": self.model, "sequence_id": self.sequence_id,
                "frames": self.index, "resets": list(self.resets),
                "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}
                if lat.size else {}}


def open_session(backend: str = "ort-cpu", export_dir: str | Path | None = None, *, url: str | None = None,
                 **options: Any) -> Any:
    """One entry for a local or a remote stream: backend='triton' with url='HOST:PORT' gives a RemoteSession
    (options: RemoteSession's); any other backend name opens `Session.open(export_dir, backend, **options)`.
    Both have `step(frame) -> FrameResult`, `start()`/`close()` and work as context managers."""
    if backend != "triton":
        from human3r_edge.runtime.session import Session

        if export_dir is None:
            raise Human3RError(msg(f"backend {backend}", "needs an export folder", None,
                                   hint="open_session('ort-cpu', 'exports/tiny'), or backend='triton' with url="))
        return Session.open(export_dir, backend, **options)
    if not url:
        raise Human3RError(msg("backend triton", "needs the server's HOST:PORT", url, hint="url='127.0.0.1:8000'"))
    return RemoteSession(url, **options)
