"""The `human3r-frame` element message: one GstStructure per frame, posted on the bus (docs/gstreamer.md).

    human3r-frame
        pts           guint64   buffer PTS in ns (GST_CLOCK_TIME_NONE when the buffer has none)
        timestamp     gdouble   seconds: PTS / 1e9, else frame-index / fps (what trajectory.tum records)
        frame-index   gint      frames since the stream started (the Session's index)
        segment       gint      state segment (increments at every reset)
        c2w           GstValueArray of 16 gdouble, row-major camera-to-world 4x4 (OpenCV camera, world frame)
        K             GstValueArray of 9 gdouble, row-major intrinsics of the model image (the frame resized
                      and centre-cropped, `width` x `height` below)
        width, height gint      the model image size K refers to
        focal         gdouble   Weiszfeld focal in pixels (NaN when degenerate)
        num-people    gint
        people        GstValueArray of `person` structures:
            track-id gint, score gdouble,
            global-orient (3), body-pose (63), left-hand-pose (45), right-hand-pose (45), jaw-pose (3):
                axis-angle gdouble arrays, the smplx package's keyword names and layout,
            betas (10), expression (10), transl-head-cam (3): Human3R's head-joint translation (camera frame),
            transl (3): smplx's translation (only with an SMPL-X model),
            pelvis-cam (3), pelvis-world (3): the skinned pelvis joint (only with an SMPL-X model)
"""
from __future__ import annotations

from typing import Any

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GObject, Gst  # noqa: E402

import numpy as np  # noqa: E402

MESSAGE = "human3r-frame"
SMPLX_KEYS = ("global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose", "betas", "expression",
              "transl_head_cam", "transl")


def _array(a: Any) -> Any:
    return Gst.ValueArray([float(v) for v in np.asarray(a, np.float64).reshape(-1)])


def person_structure(p: Any) -> Gst.Structure:
    """One runtime.session.Person -> a `person` structure (new, owned by the caller)."""
    s = Gst.Structure.new_empty("person")
    s.set_value("track-id", int(p.track_id))
    s.set_value("score", float(p.score))
    for key, value in p.smplx_params("axis_angle").items():
        s.set_value(key.replace("_", "-"), _array(value))
    if p.joints_cam is not None:
        s.set_value("pelvis-cam", _array(p.joints_cam[0]))
    if p.joints_world is not None:
        s.set_value("pelvis-world", _array(p.joints_world[0]))
    return s


def frame_structure(r: Any, pts: int | None, timestamp: float) -> Gst.Structure:
    """A runtime.session.FrameResult -> the `human3r-frame` structure (new, owned by the caller)."""
    s = Gst.Structure.new_empty(MESSAGE)
    pts_value = GObject.Value(GObject.TYPE_UINT64)
    pts_value.set_uint64(Gst.CLOCK_TIME_NONE if pts is None else int(pts))
    s.set_value("pts", pts_value)
    s.set_value("timestamp", float(timestamp))
    s.set_value("frame-index", int(r.index))
    s.set_value("segment", int(r.segment))
    s.set_value("c2w", _array(r.c2w))
    s.set_value("K", _array(r.intrinsics))
    h, w = r.image.shape[:2]
    s.set_value("width", int(w))
    s.set_value("height", int(h))
    s.set_value("focal", float(r.focal))
    s.set_value("num-people", len(r.people))
    s.set_value("people", Gst.ValueArray([person_structure(p) for p in r.people]))
    return s
