"""Discrete decisions of the FP16 graphs against FP32: which flipped, why, and whether the flip is explained by
the measured FP16 error (the acceptance rule of the FP16 budgets).

The runtime takes four discrete decisions per frame from float outputs:
* NMS: a DINOv2 cell is a detection candidate only if no 3x3 neighbour scores higher ("nms");
* threshold: a candidate is a detection when its score is >= 0.3 ("threshold");
* K cap: at most K candidates are kept, the highest scores ("cap");
* head patch: the CUT3R patch of the head location is a floor to a 16-pixel patch ("patch");
* track ids: Sinkhorn matching of the decoder's human tokens against the tracker memory ("track").

A flip is a decision FP16 takes differently from FP32 on the same inputs. Its *margin* is how far the FP32
value was from the boundary of the decision that flipped; the *bound* is the FP16 error measured on the same
run for the quantity that decides: the largest |score16 - score32| for a threshold, twice that for an NMS or
cap comparison (a difference of two scores), the largest head-location error for a patch, and twice the
largest log-assignment error for a track match. A flip is acceptable only where margin < bound: FP16 then
merely broke a near-tie it cannot resolve. A flip with a larger margin is a precision bug (an FP16 layer
that must be pinned to FP32).

Detections come from the encoder alone, which has no recurrent state: a detection flip in a free-running
stream is always first order. Track ids and everything from the decoder depend on the state, so the stream
also runs the FP16 decoder teacher-forced (FP32 state, memory, detections and tracker memory fed in) to
separate first-order flips from downstream consequences of an earlier flip. Ids are compared up to a
consistent relabelling in the free-running stream: one extra detection shifts the id counter for good,
which is bookkeeping, not a decision.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

THRESHOLD = 0.3  # runtime.detect.DETECTION_THRESHOLD (kept literal: the runtime imports stay lazy here)
PATCH = 16  # CUT3R patch, pixels


@dataclass
class Flip:
    """One flipped decision. `margin` and `bound` are in the units of the deciding quantity (score, pixels or
    log-assignment), `threshold_margin` is |score32 - 0.3| for detection flips (NaN otherwise)."""

    frame: int
    kind: str  # "threshold" | "nms" | "cap" | "patch" | "track"
    first_order: bool  # taken on the same inputs (teacher-forced); False: downstream of an earlier flip
    where: list[int]  # detection cell (h, w), or the person's index in the frame
    fp32: float  # the FP32 deciding value (score, pixel coordinate, log-assignment)
    fp16: float  # the FP16 value
    margin: float  # FP32 distance to the boundary of the decision that flipped
    threshold_margin: float  # FP32 score's margin to the 0.3 threshold (detection flips)
    bound: float = math.nan  # the measured FP16 error the margin is compared with (set by `finalise`)
    acceptable: bool = False  # margin < bound

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _neighbour_max(s: np.ndarray, h: int, w: int) -> float:
    y0, y1, x0, x1 = max(h - 1, 0), min(h + 2, s.shape[0]), max(w - 1, 0), min(w + 2, s.shape[1])
    win = s[y0:y1, x0:x1].astype(np.float64).copy()
    win[h - y0, w - x0] = -np.inf
    return float(win.max()) if win.size > 1 else -math.inf


def detection_flips(frame: int, s32: np.ndarray, s16: np.ndarray, cells32: np.ndarray, cells16: np.ndarray,
                    threshold: float = THRESHOLD) -> list[Flip]:
    """Flips between two detection sets of one frame. s32, s16: (g, g) scores before NMS; cells: (n, 2) (h, w)
    of the kept detections. Every cell detected by one precision only is classified by the decision that
    differs: NMS peak, threshold, or (neither) the K cap."""
    a = {tuple(int(v) for v in c) for c in np.asarray(cells32).reshape(-1, 2)}
    b = {tuple(int(v) for v in c) for c in np.asarray(cells16).reshape(-1, 2)}
    out = []
    for h, w in sorted(a ^ b):
        v32, v16 = float(s32[h, w]), float(s16[h, w])
        n32, n16 = _neighbour_max(s32, h, w), _neighbour_max(s16, h, w)
        peak32, peak16 = v32 >= n32, v16 >= n16
        pass32, pass16 = v32 >= threshold, v16 >= threshold
        nms_margin = abs(v32 - n32) if math.isfinite(n32) else math.inf
        thr_margin = abs(v32 - threshold)
        if peak32 != peak16 and pass32 != pass16:
            kind, margin = "nms+threshold", nms_margin  # both must be within their bounds
        elif peak32 != peak16:
            kind, margin = "nms", nms_margin
        elif pass32 != pass16:
            kind, margin = "threshold", thr_margin
        else:  # both keep it as a candidate: the K cap kept it in one precision only
            rivals = [float(s32[y, x]) for y, x in zip(*np.nonzero(s32 >= threshold))
                      if (int(y), int(x)) != (h, w) and float(s32[y, x]) >= _neighbour_max(s32, int(y), int(x))]
            kind, margin = "cap", min((abs(v32 - r) for r in rivals), default=math.inf)
        out.append(Flip(frame, kind, True, [h, w], v32, v16, margin, thr_margin))
    return out


def patch_flips(frame: int, cells32: np.ndarray, loc32: np.ndarray, patch32: np.ndarray, cells16: np.ndarray,
                loc16: np.ndarray, patch16: np.ndarray, width: int, height: int) -> tuple[list[Flip], float]:
    """Head-patch flips of the detections both precisions found, and the largest head-location error (pixels,
    in the CUT3R image) over them. loc: (n, 2) (x, y) clamped image pixels; patch: (n, 2) (y, x)."""
    index16 = {tuple(int(v) for v in c): i for i, c in enumerate(np.asarray(cells16).reshape(-1, 2))}
    out, err = [], 0.0
    for i, c in enumerate(np.asarray(cells32).reshape(-1, 2)):
        j = index16.get(tuple(int(v) for v in c))
        if j is None:
            continue
        d = np.abs(np.asarray(loc16[j], np.float64) - np.asarray(loc32[i], np.float64))
        err = max(err, float(d.max()))
        if np.array_equal(patch32[i], patch16[j]):
            continue
        for axis, size in ((0, width), (1, height)):  # loc is (x, y); patch is (y, x)
            if patch32[i][1 - axis] == patch16[j][1 - axis]:
                continue
            x = float(loc32[i][axis])
            frac = x / PATCH - math.floor(x / PATCH)
            margin = min(frac, 1.0 - frac) * PATCH
            if x <= 0.0 or x >= size - 1:  # clamped to the image border: no boundary on the clamped side
                margin = frac * PATCH if x <= 0.0 else (1.0 - frac) * PATCH
            out.append(Flip(frame, "patch", True, [int(c[0]), int(c[1])], x, float(loc16[j][axis]), margin,
                            math.nan))
    return out, err


def track_assignment(memory: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The tracker's (m, n) log-assignment scores of `tokens` against the remembered `memory` tokens."""
    from human3r_edge.runtime.tracking import log_optimal_transport, pairwise_distance

    return log_optimal_transport(-pairwise_distance(memory, tokens))[:-1, :-1]


def track_margin(z32: np.ndarray, z16: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(margin, fp32 value, fp16 value) of the closest track decision: mutual best matches (gap between the best
    and second-best log-assignment of a row or column) and the match threshold log(threshold)."""
    margin, v32, v16 = math.inf, math.nan, math.nan
    lt = math.log(threshold)
    for z, axis in ((z32, 1), (z32, 0)):
        if z.shape[axis] < 2:
            continue
        part = np.sort(z, axis=axis)
        gap = np.take(part, -1, axis=axis) - np.take(part, -2, axis=axis)
        k = int(np.argmin(gap))
        if gap[k] < margin:
            margin = float(gap[k])
            v32 = float(np.take(part, -1, axis=axis)[k])
            v16 = float(np.take(np.sort(z16, axis=axis), -1, axis=axis)[k])
    if z32.size:
        best = z32.max(axis=1)
        k = int(np.argmin(np.abs(best - lt)))
        if abs(best[k] - lt) < margin:
            margin, v32, v16 = float(abs(best[k] - lt)), float(best[k]), float(z16.max(axis=1)[k])
    return margin, v32, v16


class Relabel:
    """Compares track ids of two streams up to a consistent one-to-one relabelling."""

    def __init__(self) -> None:
        self.fwd: dict[int, int] = {}
        self.back: dict[int, int] = {}

    def same(self, ids32: np.ndarray, ids16: np.ndarray) -> bool:
        """True if ids16 are ids32 under the relabelling so far, extended by the pairs first seen in this frame
        (the map grows only when the frame agrees)."""
        a, b = [int(x) for x in np.asarray(ids32)], [int(x) for x in np.asarray(ids16)]
        if len(a) != len(b):
            return False
        fwd, back = dict(self.fwd), dict(self.back)
        for x, y in zip(a, b):
            fx, by = fwd.get(x), back.get(y)
            if fx is None and by is None:
                fwd[x], back[y] = y, x
            elif fx != y or by != x:
                return False
        self.fwd, self.back = fwd, back
        return True


def finalise(flips: list[Flip], score_error: float, loc_error: float, track_error: float) -> list[Flip]:
    """Set each flip's bound from the errors measured over the run and decide whether it is acceptable."""
    for f in flips:
        if f.kind == "threshold":
            f.bound = score_error
        elif f.kind in ("nms", "nms+threshold", "cap"):
            f.bound = 2.0 * score_error
        elif f.kind == "patch":
            f.bound = loc_error
        elif f.kind == "track":
            f.bound = 2.0 * track_error
        f.acceptable = bool(math.isfinite(f.margin) and f.margin < f.bound)
        if f.kind == "nms+threshold":
            f.acceptable = f.acceptable and f.threshold_margin < score_error
    return flips


def margin_table(flips: list[Flip]) -> list[str]:
    """Markdown rows of a flip table."""
    rows = ["| frame | kind | order | where | FP32 | FP16 | margin | margin to 0.3 | bound | acceptable |",
            "|---:|---|---|---|---:|---:|---:|---:|---:|---|"]
    for f in flips:
        thr = "" if not math.isfinite(f.threshold_margin) else f"{f.threshold_margin:.3g}"
        rows.append(f"| {f.frame} | {f.kind} | {'first' if f.first_order else 'downstream'} | {tuple(f.where)} | "
                    f"{f.fp32:.5g} | {f.fp16:.5g} | {f.margin:.3g} | {thr} | {f.bound:.3g} | "
                    f"{'yes' if f.acceptable else '**no**'} |")
    return rows
