"""Per-frame logic over the Backend protocol: encoder -> host detection -> decoder -> SMPL-X head -> tracking,
with TTT3R flags, `reset_interval` segments (duplicate view + pose chaining) and the host geometry.

One `FramePipeline.step(img, img_mhmr)` call is one input frame, exactly as the reference's
`forward_recurrent_lighter` + `demo.prepare_output` treat it:

* frame 0 of a segment runs the decoder with `first=1` (pose token, no TTT3R gate);
* with `reset_interval=N`, frame i with (i+1) % N == 0 is a reset frame: it is processed normally, then the state
  is reset and the same view is processed again with `first=1` (its outputs are dropped, but its people are fed
  to the tracker as the reference does); later poses are chained onto the reset frame's pose.
"""
from __future__ import annotations

import time
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

    index: int  # frame index since the pipeline was created
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
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage


class FramePipeline:
    """Streams frames through one backend (which must be active) and owns the host-side per-stream state."""

    def __init__(self, backend: Backend, options: PipelineOptions = PipelineOptions()) -> None:
        self.backend = backend
        self.options = options
        spec = backend.spec
        self.config = Human3RConfig.from_dict(spec.config)
        self.width, self.height = (int(v) for v in spec.resolution)
        self.square = self.config.mhmr_img_res
        self.grid = self.config.mhmr_grid
        self.slots = int(spec.max_people)
        self.detector = Detector((self.height, self.width), self.square, self.grid, self.slots, options.max_people)
        self.tracker = Tracker(max_remembered=options.max_remembered)
        self.chain = PoseChain()
        enc_out = {t.name for t in spec.graph(ENCODER).outputs}
        if options.human_mask and "human_mask" not in enc_out:
            raise Human3RError(msg("export", "has no human_mask output", sorted(enc_out), hint="re-export"))
        dec_out = {t.name for t in spec.graph(DECODER).outputs}
        missing = sorted(set(options.extra_decoder_outputs) - dec_out)
        if missing:
            raise Human3RError(msg("export", "lacks decoder outputs", missing, sorted(dec_out),
                                   "a non-lean export (without --lean) keeps pts3d_other, conf_other and rgb"))
        self.fetch = DECODER_FETCH + tuple(o for o in options.extra_decoder_outputs if o not in DECODER_FETCH)
        self.steps: list[ModelStep] = []  # filled when options.record
        self.index = 0  # frames seen since the pipeline was created
        self.sequence_frame = 0  # frames since the last reset(): drives reset_interval as the reference's view index
        self.segment = 0
        self.segment_frame = 0  # model steps in the current state segment (the duplicate view counts)

    # ---------------------------------------------------------------------------------------------- control
    def reset(self) -> None:
        """Start a new sequence: initial state, new world frame, people forgotten (ids keep counting up)."""
        self.backend.reset_state()
        self.tracker.reset()
        self.chain.reset()
        self.segment += 1
        self.segment_frame = 0
        self.sequence_frame = 0

    # ---------------------------------------------------------------------------------------------- per frame
    def step(self, img: Any, img_mhmr: Any) -> StepOutput:
        """img (3, H, W) float32 in [-1, 1]; img_mhmr (3, R, R) float32 (pad_image of img). Not retained.

        Either may be the ON_DEVICE marker (backends with device feeds): the image already waits in the
        backend's input buffer (GPU preprocessing) and stays there for the reset frame's duplicate view."""
        t: dict[str, float] = {}
        first = self.segment_frame == 0
        det, enc = self._encode_and_detect(img, img_mhmr, t)
        dec = self._decode(det, first, t, self.fetch)
        n = det.count
        tic = time.perf_counter()
        ids = self.tracker.update(dec["human_tokens"][0, :n])
        t["tracking"] = _ms(tic)
        smpl = self._smpl_head(n, t)
        if self.options.record:
            self._record(False, first, enc, det, ids, dec, smpl)
        tic = time.perf_counter()
        pose = np.asarray(dec["camera_pose"][0], np.float32).copy()
        c2w_seg = pose_to_c2w(pose)
        c2w = self.chain.world(c2w_seg)
        pts = np.ascontiguousarray(dec["pts3d_self"][0])
        focal = weiszfeld_focal(pts)
        t["geometry"] = _ms(tic)
        reset_after = self._is_reset_frame()
        out = StepOutput(
            index=self.index, segment=self.segment, reset_after=reset_after, pose=pose, c2w_segment=c2w_seg,
            c2w=c2w, focal=focal, K=intrinsics(focal, self.width, self.height), pts3d_self=pts,
            conf_self=np.ascontiguousarray(dec["conf_self"][0]), detections=det, track_ids=ids, smpl=smpl,
            human_mask=np.ascontiguousarray(enc["human_mask"][0]) if "human_mask" in enc else None,
            extra={k: np.ascontiguousarray(dec[k][0]) for k in self.options.extra_decoder_outputs}, timings=t)
        self.index += 1
        self.sequence_frame += 1
        self.segment_frame += 1
        if reset_after:
            self._reset_segment(img, img_mhmr, c2w_seg, t)
        return out

    def _is_reset_frame(self) -> bool:
        n = self.options.reset_interval
        return n is not None and (self.sequence_frame + 1) % n == 0

    def _reset_segment(self, img: Any, img_mhmr: Any, c2w_seg: np.ndarray, t: dict) -> None:
        """State reset after a reset frame, then the duplicate view on the fresh state (outputs dropped)."""
        tic = time.perf_counter()
        self.chain.on_reset(c2w_seg)
        self.backend.reset_state()
        self.segment += 1
        self.segment_frame = 0
        t_dup: dict[str, float] = {}
        det, enc = self._encode_and_detect(img, img_mhmr, t_dup)
        record = self.options.record
        dec = self._decode(det, True, t_dup, self.fetch if record else ("human_tokens",))
        ids = self.tracker.update(dec["human_tokens"][0, :det.count])
        if record:
            self._record(True, True, enc, det, ids, dec, self._smpl_head(det.count, t_dup))
        self.segment_frame = 1
        t["reset_duplicate"] = _ms(tic)

    def _record(self, duplicate: bool, first: bool, enc: dict, det: Detections, ids: np.ndarray, dec: dict,
                smpl: dict[str, np.ndarray]) -> None:
        g = self.grid
        self.steps.append(ModelStep(
            duplicate=duplicate, first=first, det_scores=nms3x3(np.asarray(enc["det_scores"]).reshape(g, g)),
            human_mask=np.ascontiguousarray(enc["human_mask"][0]) if "human_mask" in enc else None,
            detections=det, track_ids=ids.copy(),
            decoder={k: np.ascontiguousarray(v[0]) for k, v in dec.items()}, smpl=smpl))

    # ---------------------------------------------------------------------------------------------- graphs
    def _encode_and_detect(self, img: Any, img_mhmr: Any, t: dict) -> tuple[Detections, dict]:
        fetch = ["det_scores", "det_offsets"] + (["human_mask"] if self.options.human_mask else [])
        tic = time.perf_counter()
        enc = self.backend.run(ENCODER, {"img": _batch(img), "img_mhmr": _batch(img_mhmr)}, fetch=fetch)
        t["encoder"] = _ms(tic)
        tic = time.perf_counter()
        det = self.detector.detect(enc["det_scores"], enc["det_offsets"])
        t["detection"] = _ms(tic)
        return det, enc

    def _decode(self, det: Detections, first: bool, t: dict, fetch: tuple[str, ...] = DECODER_FETCH) -> dict:
        feeds = self.detector.slots_for(det).feeds()
        feeds["first"] = np.array([1.0 if first else 0.0], np.float32)
        feeds["ttt3r"] = np.array([1.0 if self.options.ttt3r else 0.0], np.float32)
        tic = time.perf_counter()
        dec = self.backend.run(DECODER, feeds, fetch=list(fetch))
        t["decoder"] = _ms(tic)
        return dec

    def _smpl_head(self, n: int, t: dict) -> dict[str, np.ndarray]:
        if n == 0:
            return {k: np.zeros((0,) + s, np.float32) for k, s in
                    zip(SMPL_OUTPUTS, ((53, 3, 3), (10,), (10,), (3,)))}
        tic = time.perf_counter()
        out = self.backend.run(SMPL_HEAD, {}, fetch=list(SMPL_OUTPUTS))
        t["smpl_head"] = _ms(tic)
        return {k: np.ascontiguousarray(out[k][0, :n]) for k in SMPL_OUTPUTS}


def _batch(x: Any) -> Any:
    if isinstance(x, OnDevice):
        return x  # already in the backend's input buffer
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise Human3RError(msg("pipeline input", "must be float32", x.dtype, "float32 from preprocess"))
    return np.ascontiguousarray(x)[None]


def _ms(tic: float) -> float:
    return (time.perf_counter() - tic) * 1e3
