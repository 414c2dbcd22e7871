"""Many cameras, one set of engines: `MultiSession` batches N streams through a multi-stream export
(`human3r-edge export ... --streams N`), each stream with its own recurrent state rows, reset schedule, tracks and
pose chain (runtime/pipeline.py `MultiStreamPipeline`).

    with MultiSession.open("exports/tiny_x4", backend="ort-cpu", streams=4) as ms:
        out = ms.step({"cam0": frame0, "cam2": frame2})      # -> {"cam0": FrameResult, "cam2": FrameResult}
        ms.reset("cam0"); ms.close("cam2")
        for stream_id, result in ms.run({"cam0": "a.mp4", "cam1": "b.mp4"}):   # or a list: ids 0, 1, ...
            ...
        ms.status                                            # {"cam0": "finished", "cam1": "failed: ...", ...}

Stream ids are any hashables; an id takes the lowest free stream slot (0..N-1) on first use (`add(id, options)`
gives it its own SessionOptions, e.g. another reset_interval); `close(id)` frees the slot (its state rows go back
to the initial state). More open ids than N is a clear Human3RError. A stream absent from a batch is not run:
its state rows are not touched (bit-identical), its host state does not move, so a stream delayed by k batches
gives the same outputs as one never delayed: bit-identical when its frames run in batches of the same sizes
(ONNX Runtime picks GEMM kernels by batch size: the same frame in a batch of another size differs by float
rounding, measured ~1.4e-6 of max|points| on tiny_a, batch 1 vs 2).

Frame size: each stream keeps the frame size of its first frame. A frame of another size is an error for that
stream alone: it fails (status 'failed: ...'; `step` raises, `submit` raises to its producer) and the others go
on. (A single `Session` only warns: there the caller owns the one source and a new size is most likely a
deliberate change of mode. Here frames of many producers are routed by stream id, and a new size under one id
most likely means frames of two cameras were mixed up, which would silently corrupt that stream's recurrent
state, tracks and trajectory. `close(id)` and a new frame under the id start it afresh at the new size.)

Thread-safety contract:
* frames may arrive from one producer thread per camera: `submit(stream_id, frame, timestamp)` and
  `end(stream_id, error=None)` are thread-safe. `submit` preprocesses the frame on the producer's thread (host
  preprocessing overlaps inference; on the GPU path it only normalises and copies it, see Preprocessing) and
  puts it in the stream's bounded queue (`queue_size`; a full queue blocks the producer, or raises with
  block=False), so memory stays bounded whatever the camera rate;
* everything else (`step`, `process`, `process_next`, `run`, `reset`, `close`, `add` from the consumer side,
  `shutdown`) is called from ONE consumer thread, the one that runs the backend (GPU contexts are per thread);
* the batcher (`StreamBatcher`) forms a batch when every active stream has a frame queued, or when
  `batch_timeout_ms` has passed since the oldest queued frame arrived; late streams join the next batch. A
  stream counts as active from its first `submit` (or from the start of `run`) until it ends (`end`) or closes.
  Default 70 ms: one frame interval of a 15 FPS camera (66.7 ms) plus jitter, as DeepStream's
  batched-push-timeout is usually set to one frame interval. Unsynchronised cameras at >= 15 FPS then each have a
  frame within the timeout, so batches are full (fewest engine runs), and a stalled or dead camera delays the
  others by at most one frame interval. When inference is the bottleneck every queue holds frames and batches
  form at once; the timeout only matters when the cameras are slower than the engines.
* `run(sources)` reads each source (runtime/video.py readers: file, folder, camera; or any iterable of frames)
  in its own producer thread into the batcher; sources may have different sizes and frame rates. A source that
  ends or fails stops alone: `status[id]` becomes 'finished' or 'failed: <message>' (with `with_ends=True`, run
  also yields `(id, StreamEnd)` once per stream, after its last result) and the others go on.
* Do not mix `step` and `submit` for the same stream; `step` bypasses the batcher.

Preprocessing: on the GPU backends (trt, ort-cuda, ort-trt; SessionOptions.preprocessing 'auto' or 'gpu') the
frame of the stream in batch row b is written by the preprocessing kernels (runtime/device_frames.py) straight
into row b of the batched img / img_mhmr device buffers (the first B of their N rows, as the backends bind them),
and the batch runs with ON_DEVICE feeds. GPU contexts are per thread, so this happens on the consumer thread
when the batch is formed: `submit` then only normalises a host frame on the producer's thread (a CUDA frame is
queued as it is and must stay valid until its batch has run). A stream with preprocessing='cpu', or a frame
that takes the CPU path (fit='crop' with another aspect), is prepared on the host and its rows uploaded. After
a reset of some rows only, the duplicate views' rows are moved to the first rows on the device. Elsewhere
(ort-cpu) preprocessing is on the host; 'gpu' there is an error, as for Session.

Skinning: one call for the people of every stream of a batch (`session.skin_batch`: the camera frame, then each
stream's c2w), split only where a GPU skinner's max_people is smaller than the batch's people.
"""
from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Generator, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from human3r_edge.errors import BackendUnavailable, Human3RError, msg
from human3r_edge.runtime.backends.base import ON_DEVICE, Backend
from human3r_edge.runtime.backends.capabilities import takes_device_feeds
from human3r_edge.runtime.frames import check_frame_size, normalize_frame
from human3r_edge.runtime.pipeline import MultiStreamPipeline
from human3r_edge.runtime.session import (FrameResult, PreparedFrame, SessionOptions, build_result, load_smplx,
                                          pipeline_options, prepare_host, skin_batch, streaming_backend_options)

DEFAULT_BATCH_TIMEOUT_MS = 70.0  # one 15 FPS frame interval (66.7 ms) plus jitter; see the module docstring
RUNNING, FINISHED, CLOSED = "running", "finished", "closed"


@dataclass(frozen=True)
class StreamEnd:
    """Yielded by `run(..., with_ends=True)` (and `process_next`) once per stream, after its last result."""

    stream_id: Hashable
    status: str  # 'finished' or 'failed: <message>'
    frames: int  # frames of the stream that were processed
    error: BaseException | None = None


@dataclass(frozen=True)
class DeviceBoundFrame:
    """A frame accepted for GPU preprocessing on the consumer thread (what `submit` queues on the GPU path):
    a normalised host uint8 frame, or a CUDA array interface object read in place."""

    frame: Any
    order: str  # 'RGB' or 'BGR'
    source_hw: tuple[int, int]
    ms: float  # host time spent so far (normalisation)
    cuda_stream: Any = None  # the producer's CUDA stream of a device frame (see Session.step)


@dataclass
class Batch:
    """What the batcher hands the consumer: one queued item per stream present, and the streams that ended
    (their queues empty, so every frame of theirs was handed out before)."""

    frames: dict[Hashable, Any] = field(default_factory=dict)
    ended: dict[Hashable, BaseException | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.frames or self.ended)


class StreamClosed(Human3RError):
    """A producer put a frame into a stream that was closed (or ended) meanwhile."""


class StreamBatcher:
    """Per-stream bounded queues and the batching policy (thread-safe; see the module docstring).

    clock: seconds, monotonic (a fake clock in tests drives `poll`)."""

    def __init__(self, timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS, queue_size: int = 4,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(queue_size, int) or isinstance(queue_size, bool) or queue_size < 1:
            raise Human3RError(msg("queue_size", "must be an int >= 1", repr(queue_size)))
        try:
            t = float(timeout_ms)
        except (TypeError, ValueError):
            t = -1.0
        if not t >= 0:
            raise Human3RError(msg("batch_timeout_ms", "must be a number >= 0", repr(timeout_ms),
                                   f"milliseconds (default {DEFAULT_BATCH_TIMEOUT_MS:g})"))
        self.timeout = t / 1e3
        self.queue_size = queue_size
        self.clock = clock
        self._cond = threading.Condition()
        self._queues: dict[Hashable, collections.deque] = {}  # stream -> deque of (arrival time, item)
        self._ending: dict[Hashable, BaseException | None] = {}  # streams that will get no more items

    def add(self, sid: Hashable) -> None:
        """Register an active stream (idempotent)."""
        with self._cond:
            self._queues.setdefault(sid, collections.deque())
            self._cond.notify_all()

    def __contains__(self, sid: Hashable) -> bool:
        with self._cond:
            return sid in self._queues

    @property
    def streams(self) -> list[Hashable]:
        with self._cond:
            return list(self._queues)

    def put(self, sid: Hashable, item: Any, block: bool = True, timeout: float | None = None,
            create: bool = True) -> None:
        """Queue one item of stream `sid` (registered on first use unless create=False: then StreamClosed);
        blocks while its queue is full."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if sid in self._ending:
                raise StreamClosed(msg(f"stream {sid!r}", "has ended", hint="no frames after end()"))
            if not create and sid not in self._queues:
                raise StreamClosed(msg(f"stream {sid!r}", "closed"))
            q = self._queues.setdefault(sid, collections.deque())
            while len(q) >= self.queue_size:
                left = None if deadline is None else deadline - time.monotonic()
                if not block or (left is not None and left <= 0):
                    raise Human3RError(msg(f"stream {sid!r}", "queue full", f"{len(q)} frames waiting",
                                           hint="inference is slower than this camera; block, or drop frames"))
                self._cond.wait(0.1 if left is None else min(left, 0.1))
                if self._queues.get(sid) is not q or sid in self._ending:
                    raise StreamClosed(msg(f"stream {sid!r}", "closed while a frame waited to be queued"))
            q.append((self.clock(), item))
            self._cond.notify_all()

    def end(self, sid: Hashable, error: BaseException | None = None) -> None:
        """No more items for `sid`: it is reported in `Batch.ended` once its queued items are handed out."""
        with self._cond:
            if sid not in self._queues:
                self._queues[sid] = collections.deque()
            if sid not in self._ending or (error is not None and self._ending[sid] is None):
                self._ending[sid] = error
            self._cond.notify_all()

    def remove(self, sid: Hashable) -> None:
        """Forget `sid` now (its queued items are dropped; a producer blocked in `put` gets StreamClosed)."""
        with self._cond:
            self._queues.pop(sid, None)
            self._ending.pop(sid, None)
            self._cond.notify_all()

    def poll(self) -> Batch | None:
        """The next batch if the policy says one is ready now (by `clock`), else None. Never blocks."""
        with self._cond:
            return self._poll_locked() or None

    def _poll_locked(self) -> Batch:
        ended = {s: self._ending.pop(s) for s, q in list(self._queues.items()) if s in self._ending and not q}
        for s in ended:
            del self._queues[s]
        pending = [s for s, q in self._queues.items() if q]
        if not pending:
            return Batch({}, ended)
        waiting = [s for s, q in self._queues.items() if not q and s not in self._ending]
        oldest = min(self._queues[s][0][0] for s in pending)
        if waiting and self.clock() - oldest < self.timeout:
            return Batch({}, ended)
        frames = {s: self._queues[s].popleft()[1] for s in pending}
        self._cond.notify_all()  # room in the queues
        return Batch(frames, ended)

    def next(self, timeout: float | None = None) -> Batch | None:
        """Block until a batch is ready (returned), `timeout` seconds pass (an empty Batch) or no stream is
        registered any more (None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                b = self._poll_locked()
                if b:
                    return b
                if not self._queues:
                    return None
                pending = [q[0][0] for q in self._queues.values() if q]
                wait = 0.1
                if pending:  # wake when the oldest frame's timeout expires (in clock seconds)
                    wait = min(wait, max(min(pending) + self.timeout - self.clock(), 0.0005))
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return Batch()
                    wait = min(wait, left)
                self._cond.wait(wait)


class MultiSession:
    """N video streams through one multi-stream export (see the module docstring).

    backend: a Backend over an export with `spec.streams` >= `streams` (a single-stream export serves one
    stream). smplx: a skinner or a model path (shared by the streams), or None. options: the SessionOptions of
    every stream; stream_options: {id: SessionOptions} for streams that differ (or `add(id, options)`).
    streams: how many streams may be open at once (default: the export's N; more is an error).
    """

    def __init__(self, backend: Backend, smplx: Any = None, options: SessionOptions = SessionOptions(), *,
                 streams: int | None = None, stream_options: Mapping[Hashable, SessionOptions] | None = None,
                 batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS, queue_size: int = 4,
                 clock: Callable[[], float] = time.monotonic) -> None:
        n = backend.streams
        if streams is None:
            streams = n
        if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
            raise Human3RError(msg("streams", "must be an int >= 1", repr(streams), f"1..{n}"))
        if streams > n:
            raise Human3RError(msg("streams", "more than the export batches", streams, f"at most {n} (the "
                                   "export's N)", f"re-export with --streams {streams} (export.json 'streams')"))
        self.backend = backend
        self.n = streams
        self.options = options
        self.stream_options = dict(stream_options or {})
        for o in [options, *self.stream_options.values()]:
            self._check_options(o)
        self.smplx = load_smplx(smplx)
        self.width, self.height = (int(v) for v in backend.spec.resolution)
        self.gpu_preprocessor: Any = None  # device_frames.GpuFramePreparer once started, when used
        self.batcher = StreamBatcher(batch_timeout_ms, queue_size, clock)
        self.pipeline: MultiStreamPipeline | None = None
        self._owns_activation = False
        self._lock = threading.RLock()
        self._slots: dict[Hashable, int] = {}  # open stream -> slot
        self._opts: dict[Hashable, SessionOptions] = {}
        self._hw: dict[Hashable, tuple[int, int]] = {}  # frame size of each open stream
        self._status: dict[Hashable, str] = {}
        self._frames: dict[Hashable, int] = {}  # frames processed per open stream

    @classmethod
    def open(cls, export_dir: str | Path, backend: str = "ort-cpu", streams: int | None = None,
             smplx_model: Any = None, options: SessionOptions = SessionOptions(), *,
             stream_options: Mapping[Hashable, SessionOptions] | None = None,
             batch_timeout_ms: float = DEFAULT_BATCH_TIMEOUT_MS, queue_size: int = 4,
             **backend_options: Any) -> "MultiSession":
        """A MultiSession over the export directory `export_dir` with backend `backend`; smplx_model: a model
        file path or a loaded skinner (see `Session`), or None."""
        from human3r_edge.runtime.backends import open_backend

        be = open_backend(backend, export_dir, **streaming_backend_options(backend, backend_options))
        return cls(be, smplx_model, options, streams=streams, stream_options=stream_options,
                   batch_timeout_ms=batch_timeout_ms, queue_size=queue_size)

    @staticmethod
    def _check_options(o: SessionOptions) -> None:
        if not isinstance(o, SessionOptions):
            raise Human3RError(msg("stream options", "not a SessionOptions", type(o).__name__))

    def _gpu_wanted(self, o: SessionOptions) -> bool:
        """Stream options `o` preprocess on the GPU here ('gpu' without a GPU preparer is an error)."""
        if o.preprocessing == "gpu" and self.gpu_preprocessor is None and self.pipeline is not None:
            raise Human3RError(msg("preprocessing='gpu'", "backend has no device input buffers",
                                   self.backend.name, "a GPU backend (trt, ort-cuda, ort-trt)",
                                   "use preprocessing='auto' or 'cpu'"))
        return o.preprocessing != "cpu" and self.gpu_preprocessor is not None

    # ---------------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "MultiSession":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def start(self) -> None:
        if not self.backend.is_active:
            self.backend.activate()
            self._owns_activation = True
        if self.pipeline is None:
            self.pipeline = MultiStreamPipeline(self.backend, {})
        opts = [self.options, *self.stream_options.values()]
        if self.gpu_preprocessor is None and any(o.preprocessing != "cpu" for o in opts):
            self._start_gpu_preprocessing(any(o.preprocessing == "gpu" for o in opts))
        if self.gpu_preprocessor is not None:
            self.pipeline.move_device_rows = self.gpu_preprocessor.move_rows

    def _start_gpu_preprocessing(self, wanted: bool) -> None:
        """The GPU preparer (on this thread: the consumer's, whose CUDA context runs the backend)."""
        import warnings

        from human3r_edge.runtime.device_frames import GpuFramePreparer

        if not takes_device_feeds(self.backend):
            if wanted:
                raise Human3RError(msg("preprocessing='gpu'", "backend has no device input buffers",
                                       self.backend.name, "a GPU backend (trt, ort-cuda, ort-trt)",
                                       "use preprocessing='auto' or 'cpu'"))
            return
        try:
            self.gpu_preprocessor = GpuFramePreparer(self.backend, max(self.width, self.height),
                                                     int(self._require().square))
        except (BackendUnavailable, ImportError) as exc:
            if wanted:
                raise
            warnings.warn(msg("GPU preprocessing", "unavailable, using the CPU", str(exc)[:300]), stacklevel=3)

    def shutdown(self) -> None:
        """Close every stream and release the backend (if this session activated it)."""
        with self._lock:
            for sid in list(self._slots):
                self.batcher.remove(sid)
                self._status[sid] = CLOSED
            self._slots.clear()
        self.gpu_preprocessor = None  # its buffers are the backend's adopted resources (freed at deactivation)
        if self._owns_activation:
            self.backend.deactivate()
            self._owns_activation = False
        self.pipeline = None

    def _require(self) -> MultiStreamPipeline:
        if self.pipeline is None:
            raise Human3RError(msg("multi-stream session", "not started",
                                   hint="use `with MultiSession(...) as ms:` or call start()"))
        return self.pipeline

    # ---------------------------------------------------------------------------------------------- streams
    @property
    def status(self) -> dict[Hashable, str]:
        """Every stream id seen: 'running', 'finished', 'failed: <message>' or 'closed' (a copy)."""
        with self._lock:
            return dict(self._status)

    @property
    def stream_ids(self) -> list[Hashable]:
        """The open streams, in slot order."""
        with self._lock:
            return sorted(self._slots, key=self._slots.__getitem__)

    def slot_of(self, stream_id: Hashable) -> int:
        with self._lock:
            if stream_id not in self._slots:
                raise Human3RError(msg(f"stream {stream_id!r}", "not open", self.stream_ids))
            return self._slots[stream_id]

    def add(self, stream_id: Hashable, options: SessionOptions | None = None) -> int:
        """Open a stream (its own SessionOptions, else stream_options[id], else the session's) -> its slot.
        Streams open by themselves on first use; thread-safe."""
        pipe = self._require()
        try:
            hash(stream_id)
        except TypeError as exc:
            raise Human3RError(msg("stream id", "not hashable", type(stream_id).__name__,
                                   "a str, an int or another hashable")) from exc
        with self._lock:
            if stream_id in self._slots:
                if options is not None and options != self._opts[stream_id]:
                    raise Human3RError(msg(f"stream {stream_id!r}", "already open with other options",
                                           hint="close it first"))
                return self._slots[stream_id]
            opts = options if options is not None else self.stream_options.get(stream_id, self.options)
            self._check_options(opts)
            self._gpu_wanted(opts)
            used = set(self._slots.values())
            free = [k for k in range(self.n) if k not in used]
            if not free:
                raise Human3RError(msg(f"stream {stream_id!r}", "no free stream slot",
                                       f"{self.n} streams open: {self.stream_ids}", f"at most {self.n} streams",
                                       "close(id) a stream first, or re-export with a larger --streams N"))
            pipe.open(free[0], pipeline_options(opts))
            self._slots[stream_id] = free[0]
            self._opts[stream_id] = opts
            self._status[stream_id] = RUNNING
            self._frames[stream_id] = 0
            self._hw.pop(stream_id, None)
            return free[0]

    def _open_for_frames(self, stream_id: Hashable) -> int:
        with self._lock:
            st = self._status.get(stream_id)
            if stream_id in self._slots and st is not None and st.startswith("failed"):
                raise Human3RError(msg(f"stream {stream_id!r}", "has failed", st[len("failed: "):],
                                       hint=f"close({stream_id!r}) to start it again"))
            return self.add(stream_id)

    def reset(self, stream_id: Hashable) -> None:
        """Start a new scene in one stream: initial state rows, new world frame, people forgotten."""
        self._require().reset(self.slot_of(stream_id))

    def close(self, stream_id: Hashable) -> None:
        """Close one stream: queued frames dropped, its slot freed (state rows reset), status 'closed'."""
        self._retire(stream_id, CLOSED)

    def _retire(self, stream_id: Hashable, status: str) -> None:
        pipe = self._require()
        slot = self.slot_of(stream_id)
        self.batcher.remove(stream_id)
        pipe.release(slot)
        with self._lock:
            del self._slots[stream_id]
            self._opts.pop(stream_id, None)
            self._hw.pop(stream_id, None)
            self._status[stream_id] = status

    # ---------------------------------------------------------------------------------------------- frames
    def prepare(self, stream_id: Hashable, frame: Any, channel_order: str | None = None, *,
                open_stream: bool = True) -> PreparedFrame:
        """Host preprocessing of one frame of `stream_id` (thread-safe; opens the stream on first use unless
        open_stream=False: then a stream that is not open raises StreamClosed). A frame size other than the
        stream's first fails the stream (see the module docstring)."""
        got = self._accept(stream_id, frame, channel_order, open_stream=open_stream, device=False)
        assert isinstance(got, PreparedFrame)
        return got

    def _accept(self, stream_id: Hashable, frame: Any, channel_order: str | None = None, *,
                open_stream: bool = True, device: bool = True, cuda_stream: Any = None
                ) -> PreparedFrame | DeviceBoundFrame:
        """A frame of `stream_id` checked and made ready for a batch (thread-safe): host-prepared, or (device=True
        and the stream preprocesses on the GPU) a DeviceBoundFrame for the consumer's kernels."""
        if open_stream:
            self._open_for_frames(stream_id)
        elif stream_id not in self._slots:
            raise StreamClosed(msg(f"stream {stream_id!r}", "closed"))
        with self._lock:
            opts = self._opts.get(stream_id)
        if opts is None:
            raise StreamClosed(msg(f"stream {stream_id!r}", "closed while its frame was prepared"))
        tic = time.perf_counter()
        order = (channel_order or opts.channel_order).upper()
        gpu = self.gpu_preprocessor if device and self._gpu_wanted(opts) else None
        cai = getattr(frame, "__cuda_array_interface__", None) if gpu is not None else None
        a: Any = None
        if cai is not None:  # read in place by the kernels on the consumer thread
            shape = tuple(int(v) for v in cai["shape"])
            hw = (shape[0], shape[1]) if len(shape) >= 2 else (0, 0)
            check_frame_size(*hw)
        else:
            a = normalize_frame(frame, stream=cuda_stream)
            hw = (int(a.shape[0]), int(a.shape[1]))
        with self._lock:
            before = self._hw.setdefault(stream_id, hw)
        if before != hw:
            err = Human3RError(msg(f"stream {stream_id!r} frame", "size changed mid-run",
                                   f"{before[1]}x{before[0]} -> {hw[1]}x{hw[0]}", f"{before[1]}x{before[0]} (WxH)",
                                   f"one camera per stream id; close({stream_id!r}) to restart it at the new size"))
            self._fail(stream_id, err)
            raise err
        if gpu is not None and gpu.fits(*hw):
            if a is not None and (a is frame or a.base is not None):
                a = a.copy()  # queued past this call: the producer may reuse its frame buffer (a camera's)
            return DeviceBoundFrame(frame if a is None else a, order, hw, (time.perf_counter() - tic) * 1e3,
                                    cuda_stream)
        if a is None:  # a device frame that takes the CPU path (fit='crop', or the clear size error)
            a = normalize_frame(frame, stream=cuda_stream)
        square = self._require().square
        return prepare_host(a, order, self.width, self.height, square, opts.fit, tic)

    def _fail(self, stream_id: Hashable, error: BaseException) -> None:
        """A stream fails: at once for `step` users; through the batcher (after its queued frames, which were
        good) for streams fed by `submit`/`run`."""
        if stream_id in self.batcher:
            self.batcher.end(stream_id, error)
            return
        with self._lock:
            if stream_id in self._status:
                self._status[stream_id] = f"failed: {error}"

    def step(self, frames: Mapping[Hashable, Any], timestamps: Mapping[Hashable, float | None] | None = None
             ) -> dict[Hashable, FrameResult]:
        """One batch: {stream_id: frame} -> {stream_id: FrameResult} (same order). Frames are accepted as
        `Session.step` accepts them. Every frame is prepared before any model work: an error (e.g. a frame size
        change, which also fails that stream) raises with no stream advanced."""
        if not isinstance(frames, Mapping):
            raise Human3RError(msg("step", "frames must be a mapping", type(frames).__name__,
                                   "{stream_id: frame}"))
        ts = timestamps or {}
        with self._lock:
            new = [sid for sid in frames if sid not in self._slots]
            if len(self._slots) + len(new) > self.n:
                raise Human3RError(msg(f"streams {new!r}", "no free stream slot",
                                       f"{len(self._slots)} streams open: {self.stream_ids}",
                                       f"at most {self.n} streams", "close(id) a stream first, or re-export "
                                       "with a larger --streams N"))
        try:
            prepared = {sid: (self._accept(sid, f), ts.get(sid)) for sid, f in frames.items()}
        except BaseException:
            for sid in new:  # opened by this call, no frame run: not left holding a slot
                if sid in self._slots and self._frames.get(sid) == 0 and not self._status[sid].startswith("failed"):
                    self._retire(sid, CLOSED)
                    with self._lock:
                        del self._status[sid]
            raise
        return self.process(prepared)

    def process(self, prepared: Mapping[Hashable, Any]) -> dict[Hashable, FrameResult]:
        """Run already prepared frames ({stream_id: PreparedFrame or (PreparedFrame, timestamp)}; the batcher's
        DeviceBoundFrames likewise) as one batch."""
        pipe = self._require()
        items: dict[Hashable, tuple[Any, float | None]] = {}
        for sid, p in prepared.items():
            items[sid] = p if isinstance(p, tuple) else (p, None)
            f = items[sid][0]
            if not isinstance(f, DeviceBoundFrame) and (not isinstance(f, PreparedFrame) or f.img_mhmr is None):
                raise Human3RError(msg("prepared frame", "has no human-branch image", None, "a frame from prepare()"))
        slots = {sid: self.add(sid) for sid in items}  # frames accepted before a failure still run
        if any(isinstance(p, DeviceBoundFrame) for p, _ in items.values()):
            ready = self._to_device_rows(items, slots)
            outs = pipe.step({slots[sid]: (ON_DEVICE, ON_DEVICE) for sid in items})
        else:
            ready = {sid: p for sid, (p, _) in items.items()}
            outs = pipe.step({slots[sid]: (p.img, p.img_mhmr) for sid, p in ready.items()})
        sids = list(items)
        tic = time.perf_counter()
        skins = skin_batch(self.smplx, [outs[slots[sid]] for sid in sids], [self._opts[sid] for sid in sids])
        skin_ms = (time.perf_counter() - tic) * 1e3
        results = {}
        for sid, skin in zip(sids, skins):
            p, t = ready[sid], items[sid][1]
            out = outs[slots[sid]]
            out.timings["preprocess"] = p.ms
            results[sid] = build_result(out, p, t, self._opts[sid], self.smplx, self.width, self.height, skin=skin,
                                        skin_ms=skin_ms)
            self._frames[sid] += 1
        return results

    def _to_device_rows(self, items: Mapping[Hashable, tuple[Any, float | None]], slots: Mapping[Hashable, int]
                        ) -> dict[Hashable, PreparedFrame]:
        """Every frame of the batch into its row of the device input buffers (row b: the b-th smallest slot, as
        the pipeline orders the batch): the kernels for DeviceBoundFrames, an upload for host-prepared ones.
        Returns each stream's PreparedFrame (host CUT3R image for the result)."""
        gpu = self.gpu_preprocessor
        if gpu is None:
            raise Human3RError(msg("GPU-bound frames", "the session has no GPU preprocessing (shut down?)"))
        ready: dict[Hashable, PreparedFrame] = {}
        for row, sid in enumerate(sorted(items, key=slots.__getitem__)):
            f = items[sid][0]
            if isinstance(f, DeviceBoundFrame):
                tic = time.perf_counter()
                got = gpu.prepare(f.frame, f.order, stream=f.cuda_stream, row=row)
                if got is not None:
                    ready[sid] = PreparedFrame(got[0], None, f.source_hw, f.ms + (time.perf_counter() - tic) * 1e3,
                                               device_token=1)
                    continue
                a = normalize_frame(f.frame, stream=f.cuda_stream)
                f = prepare_host(a, f.order, self.width, self.height, self._require().square, self._opts[sid].fit,
                                 tic)
            gpu.upload_row(row, f.img, f.img_mhmr)
            ready[sid] = f
        return ready

    # ---------------------------------------------------------------------------------------------- batching
    def submit(self, stream_id: Hashable, frame: Any, timestamp: float | None = None, *,
               channel_order: str | None = None, block: bool = True, timeout: float | None = None) -> None:
        """Producer side (thread-safe, one producer thread per camera): preprocess `frame` here and queue it for
        the batcher. Blocks while the stream's queue is full (block=False: raises instead)."""
        prepared = self._accept(stream_id, frame, channel_order)
        self.batcher.put(stream_id, (prepared, timestamp), block=block, timeout=timeout)

    def _submit_existing(self, stream_id: Hashable, frame: Any, timestamp: float | None, channel_order: str | None
                         ) -> None:
        """`submit` for run()'s producers: a stream closed meanwhile is not reopened (StreamClosed)."""
        prepared = self._accept(stream_id, frame, channel_order, open_stream=False)
        self.batcher.put(stream_id, (prepared, timestamp), create=False)

    def end(self, stream_id: Hashable, error: BaseException | None = None) -> None:
        """Producer side (thread-safe): no more frames for `stream_id`; with `error`, it failed. Its status
        changes once its queued frames are processed."""
        self.batcher.end(stream_id, error)

    def process_next(self, wait: bool | float = True) -> list[tuple[Hashable, FrameResult | StreamEnd]] | None:
        """Consumer side: form the next batch by the batching policy, run it -> [(id, FrameResult), ...,
        (id, StreamEnd) for streams that ended]. wait: True blocks until a batch is ready, False polls, a number
        waits at most that many seconds ([] when nothing was ready). None: no stream is active any more."""
        self._require()
        b = self.batcher.poll() if wait is False else self.batcher.next(None if wait is True else float(wait))
        if b is None:
            return None if wait is not False or not self.batcher.streams else []
        events: list[tuple[Hashable, FrameResult | StreamEnd]] = []
        if b.frames:
            events += list(self.process(b.frames).items())
        for sid, err in b.ended.items():
            if sid not in self._slots:
                continue
            with self._lock:
                st = self._status.get(sid, RUNNING)
            status = f"failed: {err}" if err is not None else (st if st.startswith("failed") else FINISHED)
            frames = self._frames.get(sid, 0)
            self._retire(sid, status)
            events.append((sid, StreamEnd(sid, status, frames, err)))
        return events

    def run(self, sources: Mapping[Hashable, Any] | Sequence[Any], *, max_frames: int | None = None,
            queue_size: int = 4, with_ends: bool = False
            ) -> Generator[tuple[Hashable, FrameResult | StreamEnd], None, None]:
        """Run several sources batched -> (stream_id, FrameResult) as results come (and (stream_id, StreamEnd)
        once per stream with with_ends=True). sources: {id: source} or a list (ids 0, 1, ...); a source is a
        video file, an image folder, a camera index, a `video.FrameSource` or an iterable of frames. Each is
        read in its own thread; one that cannot be opened or fails stops alone (`status[id]`). Asking for more
        streams than free slots, or the same file or camera twice, raises here, before any work. Leaving the
        loop early (or `close()` on the iterator) closes the streams of this run."""
        self._require()
        srcs = self._sources(sources)
        open_other = [s for s in self.stream_ids if s not in srcs]
        if len(srcs) + len(open_other) > self.n:
            raise Human3RError(msg("run", "more sources than stream slots", f"{len(srcs)} sources"
                                   + (f" + {len(open_other)} open streams" if open_other else ""),
                                   f"at most {self.n - len(open_other)}",
                                   "the export batches at most N streams: re-export with --streams N"))
        _check_duplicates(srcs)
        return self._run(srcs, max_frames, queue_size, with_ends)

    def _run(self, srcs: dict[Hashable, Any], max_frames: int | None, queue_size: int, with_ends: bool
             ) -> Generator[tuple[Hashable, FrameResult | StreamEnd], None, None]:
        for sid in srcs:
            self._open_for_frames(sid)
            self.batcher.add(sid)  # active from now: batches wait for its first frame (up to the timeout)
        stop = threading.Event()
        threads = [threading.Thread(target=self._produce, args=(sid, src, stop, max_frames, queue_size),
                                    name=f"human3r-stream-{sid}", daemon=True) for sid, src in srcs.items()]
        for t in threads:
            t.start()
        try:
            while True:
                events = self.process_next(wait=True)
                if events is None:
                    break
                for sid, item in events:
                    if with_ends or not isinstance(item, StreamEnd):
                        yield sid, item
                if not any(sid in self._slots for sid in srcs):
                    break
        finally:
            stop.set()
            for sid in srcs:
                if sid in self._slots:
                    self._retire(sid, CLOSED)  # left early: wakes a producer blocked on a full queue
            for t in threads:
                t.join(timeout=5.0)

    def _sources(self, sources: Any) -> dict[Hashable, Any]:
        if isinstance(sources, Mapping):
            return dict(sources)
        if isinstance(sources, (str, bytes, os.PathLike, int)) or not isinstance(sources, Sequence):
            raise Human3RError(msg("run", "sources must be a dict or a list", type(sources).__name__,
                                   "{stream_id: source} or [source, ...]", "for one source use Session.run"))
        return dict(enumerate(sources))

    def _produce(self, sid: Hashable, source: Any, stop: threading.Event, max_frames: int | None,
                 queue_size: int) -> None:
        """Producer thread of one source: open it, read, prepare and queue every frame, then end the stream."""
        from human3r_edge.runtime import video

        src: Any = None
        try:
            if isinstance(source, (str, os.PathLike, int)) and not isinstance(source, bool):
                src = video.open_source(source, queue_size=queue_size, max_frames=max_frames)
            else:
                src = source
            if isinstance(src, video.FrameSource):
                frames: Any = ((f.image, f.timestamp, "RGB") for f in src)
            else:
                frames = ((f, None, None) for f in _iterate(src))
            for i, (image, ts, order) in enumerate(frames):
                if stop.is_set() or (max_frames is not None and i >= max_frames):
                    break
                if image is None:
                    raise Human3RError(msg(f"stream {sid!r}", "source gave a frame without an image",
                                           hint="open FrameSources without a transform"))
                self._submit_existing(sid, image, ts, order)
            self.end(sid)
        except StreamClosed:
            pass
        except BaseException as exc:  # the stream fails alone; the consumer reports it
            if not stop.is_set() and sid in self.batcher:
                self.batcher.end(sid, exc)
        finally:
            if isinstance(src, video.FrameSource) and src is not source:
                src.close()


def _iterate(src: Any) -> Iterator[Any]:
    try:
        return iter(src)
    except TypeError as exc:
        raise Human3RError(msg("source", "not iterable", type(src).__name__,
                               "a path, a camera index, a FrameSource or an iterable of frames")) from exc


def _check_duplicates(srcs: Mapping[Hashable, Any]) -> None:
    """The same file, folder or camera given to two streams is an error (a camera opens once; a file twice is
    almost surely a mistake)."""
    seen: dict[Any, Hashable] = {}
    for sid, src in srcs.items():
        if isinstance(src, bool):
            continue
        if isinstance(src, int) or (isinstance(src, str) and src.isdigit() and not Path(src).exists()):
            key: Any = ("camera", int(src))
        elif isinstance(src, (str, os.PathLike)):
            key = ("path", str(Path(src).resolve()))
        else:
            key = ("object", id(src))
        if key in seen:
            raise Human3RError(msg(f"stream {sid!r}", "duplicate source", f"{src} (also stream {seen[key]!r})",
                                   "each file, folder or camera once"))
        seen[key] = sid
