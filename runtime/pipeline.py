"""Per-frame logic over the Backend protocol: encoder -> host detection -> decoder -> SMPL-X head -> tracking,
with TTT3R flags, `reset_interval` segments (duplicate view + pose chaining) and the host geometry.

One `FramePipeline.step(img, img_mhmr)` call is one input frame, exactly as the reference's
`forward_recurrent_lighter` + `demo.prepare_output` treat it:

* frame 0 of a segment runs the decoder with `first=1` (pose token, no TTT3R gate);
* with `reset_interval=N`, frame i with (i+1) % N == 0 is a reset frame: it is processed normally, then the state
  is reset and the same view is processed again with `first=1` (its outputs are dropped, but its people are fed
  to the tracker as the reference does); later poses are chained onto the reset frame's pose.

Multi-stream (`MultiStreamPipeline`, exports with `streams` = N > 1, see backends/base.py): the host state of
one stream (tracker, pose chain, counters, state segment, reset schedule, detector, record) is a `StreamState`;
one `step({slot: (img, img_mhmr)})` runs ONE batched encoder over the present slots, per-stream detection, ONE
batched decoder (per-row first/ttt3r/human slots), per-stream tracking, ONE batched SMPL-X head (when any stream
has people) and per-stream geometry. Streams whose frame is a reset frame (each by its own reset_interval) get
their duplicate view in one more batched encoder + decoder run over just those slots, after
`backend.reset_streams(those slots)`. `FramePipeline` is the one-stream case of the same code (`_BatchPipeline`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from human3r_edge.runtime.backends.base import Backend, OnDevice
from human3r_edge.runtime.config import Human3RConfig
from human3r_edge.runtime.detect import Detections, Detector, nms3x3
from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.geometry import PoseChain, intrinsics, pose_to_c2w, weiszfeld_focal
from human3r_edge.runtime.graphs import DECODER, ENCODER, SMPL_HEAD
from human3r_edge.runtime.tracking import Tracker

SMPL_OUTPUTS = ("smpl_rotmat", "smpl_shape", "smpl_expression", "smpl_transl")
DECODER_FETCH = ("camera_pose", "human_tokens", "pts3d_self", "conf_self")
_SLOT_FEEDS = ("human_cell", "human_patch", "human_valid")


@dataclass(frozen=True)
class PipelineOptions:
    """Per-stream inference settings."""

    ttt3r: bool = True  # gate the state update with TTT3R (the demo's --use_ttt3r)
    reset_interval: int | None = None  # frames per state segment (the demo's --reset_interval); None = never
    max_people: int | None = None  # keep at most this many people per frame (<= the export's K slots)
    max_remembered: int | None = 256  # tracker memory bound (None: unbounded, as the reference; see tracking.py)
    human_mask: bool = False  # also fetch the encoder's human mask (R x R)
    extra_decoder_outputs: tuple[str, ...] = ()  # more decoder outputs to fetch (e.g. pts3d_other, rgb)
    record: bool = False  # keep every model step (duplicate views included) in `FramePipeline.steps`

    def __post_init__(self) -> None:
        if self.reset_interval is not None and (not isinstance(self.reset_interval, int)
                                                or isinstance(self.reset_interval, bool) or self.reset_interval < 1):
            raise Human3RError(msg("reset_interval", "must be a positive int or None", repr(self.reset_interval)))


@dataclass
class ModelStep:
    """One model step as the reference records it (for golden replays): every view, duplicates included."""

    duplicate: bool  # the duplicate view after a reset (its outputs are not a frame's)
    first: bool  # ran with the pose token and no TTT3R gate
    det_scores: np.ndarray  # (g, g) float32 after NMS
    human_mask: np.ndarray | None  # (R, R) float32
    detections: Detections
    track_ids: np.ndarray  # (n,) int64
    decoder: dict[str, np.ndarray]  # fetched decoder outputs without the batch axis
    smpl: dict[str, np.ndarray]  # (n, ...) SMPL-X head outputs


@dataclass
class StepOutput:
    """Host results of one input frame. Every array is a fresh copy owned by the caller (kept as long as it likes).

    Shapes: H, W = CUT3R image; R = human-branch square; n = people kept this frame.
    """

    index: int  # frame index since the pipeline (multi-stream: the stream) was created
    segment: int  # number of state resets before this frame
    reset_after: bool  # the state was reset after this frame (reset_interval)
    pose: np.ndarray  # (7,) float32 pose head output, relative to the segment's first camera
    c2w_segment: np.ndarray  # (4, 4) float32 camera-to-world of the segment
    c2w: np.ndarray  # (4, 4) float32 camera-to-world chained across resets
    focal: float  # Weiszfeld focal (pixels); NaN for a degenerate point map
    K: np.ndarray  # (3, 3) float32 intrinsics [[f,0,W//2],[0,f,H//2],[0,0,1]]
    pts3d_self: np.ndarray  # (H, W, 3) float32 points in this camera's frame
    conf_self: np.ndarray  # (H, W) float32 confidence (>= 1)
    detections: Detections
    track_ids: np.ndarray  # (n,) int64
    smpl: dict[str, np.ndarray]  # smpl_rotmat (n,53,3,3), smpl_shape (n,10), smpl_expression (n,10), smpl_transl (n,3)
    human_mask: np.ndarray | None = None  # (R, R) float32 when requested
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # extra_decoder_outputs, batch axis removed
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage (batched stages: the whole batch's time)


class StreamState:
    """The host-side state of one stream: options, detector, tracker, pose chain, counters and recorded steps."""

    def __init__(self, options: PipelineOptions, detector: Detector, fetch: tuple[str, ...]) -> None:
        self.options = options
        self.detector = detector
        self.tracker = Tracker(max_remembered=options.max_remembered)
        self.chain = PoseChain()
        self.fetch = fetch  # decoder outputs this stream returns
        self.steps: list[ModelStep] = []  # filled when options.record
        self.index = 0  # frames seen since the stream was created
        self.sequence_frame = 0  # frames since the last reset(): drives reset_interval as the reference's view index
        self.segment = 0
        self.segment_frame = 0  # model steps in the current state segment (the duplicate view counts)

    def reset(self) -> None:
        """Host part of a user reset: people forgotten (ids keep counting up), new world frame, new segment."""
        self.tracker.reset()
        self.chain.reset()
        self.segment += 1
        self.segment_frame = 0
        self.sequence_frame = 0

    def is_reset_frame(self) -> bool:
        n = self.options.reset_interval
        return n is not None and (self.sequence_frame + 1) % n == 0


class _BatchPipeline:
    """The batched step shared by FramePipeline (one stream, row 0) and MultiStreamPipeline (stream slots)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        spec = backend.spec
        self.config = Human3RConfig.from_dict(spec.config)
        self.width, self.height = (int(v) for v in spec.resolution)
        self.square = self.config.mhmr_img_res
        self.grid = self.config.mhmr_grid
        self.slots = int(spec.max_people)  # K human slots per frame (not stream slots)
        self.multi = backend.streams > 1  # batched graphs: axis 0 of every tensor is the stream axis

    def _new_stream(self, options: PipelineOptions) -> StreamState:
        spec = self.backend.spec
        detector = Detector((self.height, self.width), self.square, self.grid, self.slots, options.max_people)
        enc_out = {t.name for t in spec.graph(ENCODER).outputs}
        if options.human_mask and "human_mask" not in enc_out:
            raise Human3RError(msg("export", "has no human_mask output", sorted(enc_out), hint="re-export"))
        dec_out = {t.name for t in spec.graph(DECODER).outputs}
        missing = sorted(set(options.extra_decoder_outputs) - dec_out)
        if missing:
            raise Human3RError(msg("export", "lacks decoder outputs", missing, sorted(dec_out),
                                   "a non-lean export (without --lean) keeps pts3d_other, conf_other and rgb"))
        fetch = DECODER_FETCH + tuple(o for o in options.extra_decoder_outputs if o not in DECODER_FETCH)
        return StreamState(options, detector, fetch)

    def _run(self, graph: str, feeds: Mapping[str, Any], fetch: list[str], slots: list[int]) -> dict:
        if not self.multi:  # single-stream: the call as it always was (backend wrappers may not take slots)
            return self.backend.run(graph, feeds, fetch=fetch)
        return self.backend.run(graph, feeds, fetch=fetch, slots=slots)

    def _reset_rows(self, slots: list[int]) -> None:
        if self.multi:
            self.backend.reset_streams(slots)
        else:
            self.backend.reset_state()

    # ---------------------------------------------------------------------------------------------- one batch
    def _step_batch(self, streams: list[StreamState], slots: list[int], imgs: list[Any], mhmrs: list[Any]
                    ) -> list[StepOutput]:
        """One frame of each stream (row b: streams[b] in stream slot slots[b]) -> one StepOutput per row."""
        t: dict[str, float] = {}  # batched stages
        ts: list[dict[str, float]] = [{} for _ in streams]  # per-stream stages
        firsts = [s.segment_frame == 0 for s in streams]
        dets, enc = self._encode_and_detect(streams, slots, imgs, mhmrs, t, ts)
        dec = self._decode(streams, slots, dets, firsts, t, _union(s.fetch for s in streams))
        ids = []
        for b, (s, det) in enumerate(zip(streams, dets)):
            tic = time.perf_counter()
            ids.append(s.tracker.update(dec["human_tokens"][b, :det.count]))
            ts[b]["tracking"] = _ms(tic)
        smpl = self._smpl_head(slots, [d.count for d in dets], t)
        outs = []
        for b, s in enumerate(streams):
            if s.options.record:
                self._record(s, b, False, firsts[b], enc, dets[b], ids[b], dec, smpl[b])
            tic = time.perf_counter()
            pose = np.asarray(dec["camera_pose"][b], np.float32).copy()
            c2w_seg = pose_to_c2w(pose)
            c2w = s.chain.world(c2w_seg)
            pts = np.ascontiguousarray(dec["pts3d_self"][b])
            focal = weiszfeld_focal(pts)
            ts[b]["geometry"] = _ms(tic)
            timings = {**t, **ts[b]}
            for k in ("encoder", "detection", "decoder", "tracking", "smpl_head", "geometry"):  # the usual order
                if k in timings:
                    timings[k] = timings.pop(k)
            mask = enc["human_mask"][b] if s.options.human_mask and "human_mask" in enc else None
            outs.append(StepOutput(
                index=s.index, segment=s.segment, reset_after=s.is_reset_frame(), pose=pose, c2w_segment=c2w_seg,
                c2w=c2w, focal=focal, K=intrinsics(focal, self.width, self.height), pts3d_self=pts,
                conf_self=np.ascontiguousarray(dec["conf_self"][b]), detections=dets[b], track_ids=ids[b],
                smpl=smpl[b], human_mask=None if mask is None else np.ascontiguousarray(mask),
                extra={k: np.ascontiguousarray(dec[k][b]) for k in s.options.extra_decoder_outputs},
                timings=timings))
            s.index += 1
            s.sequence_frame += 1
            s.segment_frame += 1
        reset = [b for b, o in enumerate(outs) if o.reset_after]
        if reset and len(reset) < len(outs) and isinstance(imgs[0], OnDevice):
            self._device_subset(reset)  # the duplicate views' images into the first len(reset) device rows
        if reset:
            self._reset_segments([streams[b] for b in reset], [slots[b] for b in reset], [imgs[b] for b in reset],
                                 [mhmrs[b] for b in reset], [outs[b] for b in reset])
        return outs

    def _device_subset(self, rows: list[int]) -> None:
        raise Human3RError(msg("multi-stream batch", "ON_DEVICE images with a reset of some rows only",
                               hint="the duplicate view needs its rows' images; use host images"))

    def _reset_segments(self, streams: list[StreamState], slots: list[int], imgs: list[Any], mhmrs: list[Any],
                        outs: list[StepOutput]) -> None:
        """State reset after reset frames, then the duplicate views on the fresh states (outputs dropped)."""
        tic = time.perf_counter()
        for s, o in zip(streams, outs):
            s.chain.on_reset(o.c2w_segment)
            s.segment += 1
            s.segment_frame = 0
        self._reset_rows(slots)
        t_dup: dict[str, float] = {}
        ts: list[dict[str, float]] = [{} for _ in streams]
        dets, enc = self._encode_and_detect(streams, slots, imgs, mhmrs, t_dup, ts)
        record = [s.options.record for s in streams]
        fetch = _union(s.fetch if r else ("human_tokens",) for s, r in zip(streams, record))
        dec = self._decode(streams, slots, dets, [True] * len(streams), t_dup, fetch)
        ids = [s.tracker.update(dec["human_tokens"][b, :d.count]) for b, (s, d) in enumerate(zip(streams, dets))]
        if any(record):
            smpl = self._smpl_head(slots, [d.count if r else 0 for d, r in zip(dets, record)], t_dup)
            for b, s in enumerate(streams):
                if record[b]:
                    self._record(s, b, True, True, enc, dets[b], ids[b], dec, smpl[b], fetch=s.fetch)
        ms = _ms(tic)
        for s, o in zip(streams, outs):
            s.segment_frame = 1
            o.timings["reset_duplicate"] = ms

    def _record(self, s: StreamState, b: int, duplicate: bool, first: bool, enc: dict, det: Detections,
                ids: np.ndarray, dec: dict, smpl: dict[str, np.ndarray], fetch: tuple[str, ...] | None = None
                ) -> None:
        g = self.grid
        keys = s.fetch if fetch is None else fetch
        s.steps.append(ModelStep(
            duplicate=duplicate, first=first, det_scores=nms3x3(np.asarray(enc["det_scores"][b]).reshape(g, g)),
            human_mask=np.ascontiguousarray(enc["human_mask"][b]) if s.options.human_mask and "human_mask" in enc
            else None,
            detections=det, track_ids=ids.copy(),
            decoder={k: np.ascontiguousarray(dec[k][b]) for k in keys}, smpl=smpl))

    # ---------------------------------------------------------------------------------------------- graphs
    def _encode_and_detect(self, streams: list[StreamState], slots: list[int], imgs: list[Any], mhmrs: list[Any],
                           t: dict, ts: list[dict]) -> tuple[list[Detections], dict]:
        fetch = ["det_scores", "det_offsets"] + (["human_mask"] if any(s.options.human_mask for s in streams)
                                                 else [])
        feeds = {"img": _rows(imgs, "img"), "img_mhmr": _rows(mhmrs, "img_mhmr")}
        tic = time.perf_counter()
        enc = self._run(ENCODER, feeds, fetch, slots)
        t["encoder"] = _ms(tic)
        dets = []
        for b, s in enumerate(streams):
            tic = time.perf_counter()
            dets.append(s.detector.detect(enc["det_scores"][b:b + 1], enc["det_offsets"][b:b + 1]))
            ts[b]["detection"] = _ms(tic)
        return dets, enc

    def _decode(self, streams: list[StreamState], slots: list[int], dets: list[Detections], firsts: list[bool],
                t: dict, fetch: tuple[str, ...]) -> dict:
        per = [s.detector.slots_for(d).feeds() for s, d in zip(streams, dets)]
        first = np.array([1.0 if f else 0.0 for f in firsts], np.float32)
        ttt3r = np.array([1.0 if s.options.ttt3r else 0.0 for s in streams], np.float32)
        if self.multi:
            feeds = {k: np.stack([p[k] for p in per]) for k in _SLOT_FEEDS}  # (B, K)
        else:
            feeds = dict(per[0])  # (K,)
        feeds["first"] = first
        feeds["ttt3r"] = ttt3r
        tic = time.perf_counter()
        dec = self._run(DECODER, feeds, list(fetch), slots)
        t["decoder"] = _ms(tic)
        return dec

    def _smpl_head(self, slots: list[int], counts: list[int], t: dict) -> list[dict[str, np.ndarray]]:
        """Row b's (n_b, ...) SMPL-X head outputs; the head runs once over the decoder's batch if anyone is seen."""
        if not any(counts):
            return [_no_people() for _ in counts]
        tic = time.perf_counter()
        out = self._run(SMPL_HEAD, {}, list(SMPL_OUTPUTS), slots)
        t["smpl_head"] = _ms(tic)
        return [{k: np.ascontiguousarray(out[k][b, :n]) for k in SMPL_OUTPUTS} if n else _no_people()
                for b, n in enumerate(counts)]


class FramePipeline(_BatchPipeline):
    """Streams frames through one backend (which must be active) and owns the host-side per-stream state.

    The one-stream case of the batched pipeline: a single-stream export, or stream slot 0 of a multi-stream one."""

    def __init__(self, backend: Backend, options: PipelineOptions = PipelineOptions()) -> None:
        super().__init__(backend)
        self.options = options
        self.stream = self._new_stream(options)

    # the stream's host state, under the names this class always had
    @property
    def detector(self) -> Detector:
        return self.stream.detector

    @detector.setter
    def detector(self, value: Detector) -> None:
        self.stream.detector = value

    @property
    def tracker(self) -> Tracker:
        return self.stream.tracker

    @property
    def chain(self) -> PoseChain:
        return self.stream.chain

    @property
    def fetch(self) -> tuple[str, ...]:
        return self.stream.fetch

    @property
    def steps(self) -> list[ModelStep]:
        return self.stream.steps

    @property
    def index(self) -> int:
        return self.stream.index

    @property
    def sequence_frame(self) -> int:
        return self.stream.sequence_frame

    @property
    def segment(self) -> int:
        return self.stream.segment

    @property
    def segment_frame(self) -> int:
        return self.stream.segment_frame

    # ---------------------------------------------------------------------------------------------- control
    def reset(self) -> None:
        """Start a new sequence: initial state, new world frame, people forgotten (ids keep counting up)."""
        self._reset_rows([0])
        self.stream.reset()

    # ---------------------------------------------------------------------------------------------- per frame
    def step(self, img: Any, img_mhmr: Any) -> StepOutput:
        """img (3, H, W) float32 in [-1, 1]; img_mhmr (3, R, R) float32 (pad_image of img). Not retained.

        Either may be the ON_DEVICE marker (backends with device feeds): the image already waits in the
        backend's input buffer (GPU preprocessing) and stays there for the reset frame's duplicate view."""
        return self._step_batch([self.stream], [0], [img], [img_mhmr])[0]


class MultiStreamPipeline(_BatchPipeline):
    """Batches frames of several streams through one multi-stream export (`spec.streams` = N; a single-stream
    export works as N = 1). Each stream slot 0..N-1 has its own `StreamState` and its own backend state rows.

    options_per_stream: PipelineOptions for every slot (one for all), a sequence (slot k: item k) or a mapping
    slot -> options; slots not given open with `open(slot, options)` before their first frame."""

    def __init__(self, backend: Backend, options_per_stream: PipelineOptions | Sequence[PipelineOptions]
                 | Mapping[int, PipelineOptions] = PipelineOptions()) -> None:
        super().__init__(backend)
        self.n = backend.streams
        self.streams: dict[int, StreamState] = {}
        # ON_DEVICE batches: moves device rows (ascending batch rows) to rows 0.. before the duplicate views of a
        # reset of some rows only (runtime/device_frames.py GpuFramePreparer.move_rows); None: such a batch fails
        self.move_device_rows: Callable[[list[int]], None] | None = None
        if isinstance(options_per_stream, PipelineOptions):
            per: dict[int, PipelineOptions] = {k: options_per_stream for k in range(self.n)}
        elif isinstance(options_per_stream, Mapping):
            per = dict(options_per_stream)
        else:
            per = dict(enumerate(options_per_stream))
        for k, o in per.items():
            self.open(k, o)

    def _check_slot(self, slot: int) -> int:
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= int(slot) < self.n:
            raise Human3RError(msg("stream slot", "out of range", repr(slot), f"an int in 0..{self.n - 1}",
                                   f"the export batches at most {self.n} stream(s) (export --streams N)"))
        return int(slot)

    def open(self, slot: int, options: PipelineOptions = PipelineOptions()) -> StreamState:
        """A fresh stream in `slot` (host state new; call `reset(slot)` too if the slot's rows were used)."""
        slot = self._check_slot(slot)
        self.streams[slot] = self._new_stream(options)
        return self.streams[slot]

    def release(self, slot: int) -> None:
        """Forget the stream in `slot`: its backend rows go back to the initial state, its host state is dropped."""
        slot = self._check_slot(slot)
        self._reset_rows([slot])
        self.streams.pop(slot, None)

    def reset(self, slot: int) -> None:
        """Start a new sequence in one stream: its initial state rows, new world frame, people forgotten."""
        slot = self._check_slot(slot)
        self._reset_rows([slot])
        self._stream(slot).reset()

    def _stream(self, slot: int) -> StreamState:
        if slot not in self.streams:
            raise Human3RError(msg(f"stream slot {slot}", "not open", sorted(self.streams),
                                   hint="open(slot, options) first"))
        return self.streams[slot]

    def step(self, frames: Mapping[int, tuple[Any, Any]]) -> dict[int, StepOutput]:
        """{slot: (img (3, H, W), img_mhmr (3, R, R)) float32} -> {slot: StepOutput}, rows in ascending slot order.
        Slots absent from `frames` are not touched (their state rows stay bit-identical).

        ON_DEVICE images: every row must be ON_DEVICE (the caller wrote the batch rows, ascending slots, into the
        device buffers); the duplicate views after a reset of some rows only need `move_device_rows`."""
        if not frames:
            return {}
        slots = sorted(self._check_slot(k) for k in frames)
        streams = [self._stream(k) for k in slots]
        imgs = [frames[k][0] for k in slots]
        mhmrs = [frames[k][1] for k in slots]
        on_dev = [isinstance(x, OnDevice) for x in imgs + mhmrs]
        if any(on_dev) and len(slots) > 1:
            if not all(on_dev):
                raise Human3RError(msg("multi-stream batch", "mixes ON_DEVICE and host images", hint="one or "
                                       "the other for the whole batch"))
            if any(s.is_reset_frame() for s in streams) and not all(s.is_reset_frame() for s in streams) \
                    and self.move_device_rows is None:
                raise Human3RError(msg("multi-stream batch", "ON_DEVICE images with a reset of some rows only",
                                       hint="the duplicate view needs its rows' images; use host images"))
        return dict(zip(slots, self._step_batch(streams, slots, imgs, mhmrs)))

    def _device_subset(self, rows: list[int]) -> None:
        if self.move_device_rows is None:
            super()._device_subset(rows)
        else:
            self.move_device_rows(rows)


def _rows(xs: list[Any], name: str) -> Any:
    """Batch rows of per-stream images: (B, ...) float32, or the ON_DEVICE marker."""
    if isinstance(xs[0], OnDevice):
        return xs[0]  # already in the backend's input buffer
    arrs = []
    for x in xs:
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise Human3RError(msg("pipeline input", "must be float32", x.dtype, "float32 from preprocess"))
        arrs.append(x)
    if len(arrs) == 1:
        return np.ascontiguousarray(arrs[0])[None]
    shapes = {a.shape for a in arrs}
    if len(shapes) > 1:
        raise Human3RError(msg(f"pipeline input {name}", "rows of different shapes", sorted(shapes),
                               "the export's image shape for every stream"))
    return np.stack(arrs)


def _union(fetches: Any) -> tuple[str, ...]:
    out: list[str] = []
    for f in fetches:
        out += [k for k in f if k not in out]
    return tuple(out)


def _no_people() -> dict[str, np.ndarray]:
    return {k: np.zeros((0,) + s, np.float32) for k, s in zip(SMPL_OUTPUTS, ((53, 3, 3), (10,), (10,), (3,)))}


def _ms(tic: float) -> float:
    return (time.perf_counter() - tic) * 1e3
