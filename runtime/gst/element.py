"""The `human3r` GStreamer element: a passthrough GstBase.BaseTransform that streams every video frame through a
`runtime.session.Session` and posts one `human3r-frame` element message per frame (see messages.py).

    gst-launch-1.0 filesrc location=clip.mp4 ! decodebin ! videoconvert ! \
        human3r engines=exports/tiny smplx-model=SMPLX_NEUTRAL.npz out=run/ ! fakesink

Lifecycle: NULL->READY checks the properties and opens the Session (the backend loads its models);
READY->PAUSED starts a stream; EOS finalises the outputs of `out=` (the files and summary.json `human3r-edge run`
writes, through runtime/outputs/writer.py); PAUSED->READY finalises an unfinished stream as interrupted; READY->NULL
closes the Session. Every failure is a GStreamer error whose text is our one-shape message.
Frames: system memory is mapped read-only and read in place (frames.py); `video/x-raw(memory:CUDAMemory)` buffers
are handed to the Session as a CUDA pointer plus stream (cuda_memory.py). Timestamps are buffer PTS.
"""
from __future__ import annotations

import traceback
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

from human3r_edge.runtime.gst.frames import FORMATS, Layout, check_format  # noqa: E402

Gst.init_check(None)

BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "trt")  # `run`'s choices but torch (not a runtime backend)
CUDA_FEATURE = "memory:CUDAMemory"
_FORMAT_LIST = "{ " + ", ".join(FORMATS) + " }"
CAPS = Gst.Caps.from_string(f"video/x-raw, format=(string){_FORMAT_LIST}, width=(int)[16, 32768], "
                            f"height=(int)[16, 32768]; video/x-raw({CUDA_FEATURE}), format=(string){_FORMAT_LIST}, "
                            "width=(int)[16, 32768], height=(int)[16, 32768]")
_RW = GObject.ParamFlags.READWRITE


def _str_prop(nick: str, blurb: str, default: str | None = None) -> tuple:
    return (str, nick, blurb, default, _RW)


PROPERTIES: dict[str, tuple] = {
    "engines": _str_prop("Engines", "export directory (ONNX or TensorRT engines), as `run --engines`"),
    "checkpoint": _str_prop("Checkpoint", "Human3R checkpoint exported on the fly at the first caps' size "
                            "(instead of engines), as `run --checkpoint`"),
    "backend": _str_prop("Backend", "ort-cpu, ort-cuda, ort-trt or trt", "ort-cpu"),
    "smplx-model": _str_prop("SMPL-X model", "SMPLX_NEUTRAL.npz (or .pkl)"),
    "out": _str_prop("Output folder", "write the files `human3r-edge run --out` writes (finalised at EOS); "
                     "unset: messages only"),
    "overwrite": (bool, "Overwrite", "replace a previous run's files in `out` (as run --overwrite)", False, _RW),
    "reset-interval": (int, "Reset interval", "reset the recurrent state every N frames (0: never)", 0,
                       GLib.MAXINT32, 0, _RW),
    "max-people": (int, "Max people", "people per frame (0: the export's slots)", 0, 1024, 0, _RW),
    "overlay": (bool, "Overlay", "draw the meshes and track ids into the passing frames (not passthrough)",
                False, _RW),
    "preprocessing": _str_prop("Preprocessing", "auto, cpu or gpu (as run --preprocessing)", "auto"),
    "skinning": _str_prop("Skinning", "auto, cpu or gpu (as run --skinning)", "auto"),
    "fit": _str_prop("Fit", "frames whose aspect does not give the export resolution: exact (refuse) or crop",
                     "exact"),
}


class Human3R(GstBase.BaseTransform):
    __gstmetadata__ = ("Human3R 4D humans", "Filter/Analyzer/Video",
                       "Camera poses, SMPL-X people and tracks per frame (human3r-edge); passthrough, optional "
                       "overlay; one `human3r-frame` element message per frame", "human3r-edge")
    __gsttemplates__ = (Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, CAPS),
                        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, CAPS))
    __gtype_name__ = "GstHuman3R"
    __gproperties__ = dict(PROPERTIES)  # a copy: PyGObject consumes it at class creation

    def __init__(self) -> None:
        super().__init__()
        self.props_: dict[str, Any] = {name: spec[3] for name, spec in PROPERTIES.items()}
        self.set_passthrough(True)
        self.set_in_place(True)
        self.sinkpad.add_probe(Gst.PadProbeType.QUERY_DOWNSTREAM | Gst.PadProbeType.PUSH | Gst.PadProbeType.PULL,
                               self._sink_query_probe)
        self.run: Any = None  # runtime.gst.stream.ElementRun while READY or above
        self.layout: Layout | None = None
        self.cuda = False
        self._caps_refused = False

    # ---------------------------------------------------------------------------------------------- properties
    def do_get_property(self, prop: GObject.ParamSpec) -> Any:
        return self.props_[prop.name]

    def do_set_property(self, prop: GObject.ParamSpec, value: Any) -> None:
        if self.run is not None and prop.name != "overlay":
            self._warning(f"human3r {prop.name} | cannot change while the session is open (READY or above); "
                          "ignored. Hint: set it in the NULL state")
            return
        self.props_[prop.name] = value
        if prop.name == "overlay":
            self.set_passthrough(not value)

    # ---------------------------------------------------------------------------------------------- states
    def do_change_state(self, transition: Gst.StateChange) -> Gst.StateChangeReturn:
        if transition == Gst.StateChange.NULL_TO_READY:
            if not self._guard(self._open):
                return Gst.StateChangeReturn.FAILURE
        ret = GstBase.BaseTransform.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY and self.run is not None:
            self._guard(lambda: self.run.finish("interrupted"))
        elif transition == Gst.StateChange.READY_TO_NULL and self.run is not None:
            self.run.close()
            self.run = None
        return ret

    def _open(self) -> None:
        from human3r_edge.runtime.gst.stream import ElementRun

        run = ElementRun(dict(self.props_), name=self.get_name())
        try:
            run.open()
        except BaseException:
            run.close()  # a backend opened before the failure is released; properties stay settable
            raise
        self.run = run

    def do_start(self) -> bool:
        if self.run is not None:
            self.run.begin_stream()
        self.layout = None
        self._caps_refused = False
        return True

    # ---------------------------------------------------------------------------------------------- caps
    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        return self._guard(lambda: self._set_caps(incaps))

    def _set_caps(self, caps: Gst.Caps) -> None:
        info = GstVideo.VideoInfo.new_from_caps(caps)
        if info is None:
            from human3r_edge.errors import Human3RError, msg

            raise Human3RError(msg("human3r caps", "not raw video", caps.to_string(), "video/x-raw"))
        fmt = info.finfo.name if info.finfo is not None else "?"
        check_format(fmt, info.width, info.height)
        self.layout = Layout(fmt, int(info.width), int(info.height), tuple(int(x) for x in info.offset),
                             tuple(int(x) for x in info.stride))
        features = caps.get_features(0)
        self.cuda = features is not None and features.contains(CUDA_FEATURE)
        fps_n, fps_d = info.fps_n, info.fps_d
        if self.run is not None:
            self.run.caps_changed(self.layout, fps_n / fps_d if fps_n > 0 and fps_d > 0 else 0.0, caps.to_string())

    def _sink_query_probe(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        """Queries on the sink pad (a probe: BaseTransform's do_query clashes with GstElement's in PyGObject).
        Before handling: answer upstream's CUDA context query; after: see an impossible caps query."""
        query = info.get_query()
        if info.type & Gst.PadProbeType.PUSH and query.type == Gst.QueryType.CONTEXT and self.run is not None:
            from human3r_edge.runtime.gst import cuda_memory

            try:
                if cuda_memory.answer_context_query(self, query, self.run):
                    return Gst.PadProbeReturn.HANDLED
            except Exception as exc:  # no CUDA context sharing: upstream then uses its own (frames still work)
                self._warning(f"human3r CUDA context | not shared: {exc}")
        elif info.type & Gst.PadProbeType.PULL and query.type == Gst.QueryType.CAPS:
            flt, result = query.parse_caps(), query.parse_caps_result()
            if flt is not None and result is not None and result.is_empty():
                self._refuse_caps(flt)
        elif info.type & Gst.PadProbeType.PULL and query.type == Gst.QueryType.ACCEPT_CAPS:
            if not query.parse_accept_caps_result():
                self._refuse_caps(query.parse_accept_caps())
        return Gst.PadProbeReturn.OK

    def _refuse_caps(self, caps: Gst.Caps) -> None:
        """Upstream insists on fixed raw video caps we cannot read: post our message as the error (GStreamer
        itself would only report `not-negotiated` from the source). Other refusals are left to negotiation."""
        if caps is None or not caps.is_fixed() or self._caps_refused:
            return
        st = caps.get_structure(0)
        fmt = st.get_string("format") if st.get_name() == "video/x-raw" else None
        if fmt is not None and fmt not in FORMATS:
            self._caps_refused = True
            self._error(f"human3r caps | unsupported video format: {fmt} ({st.get_value('width')}x"
                        f"{st.get_value('height')}). Expected "
                        f"{' / '.join(FORMATS)}. Hint: put `videoconvert` before human3r", Gst.CoreError.NEGOTIATION)

    # ---------------------------------------------------------------------------------------------- frames
    def do_transform_ip(self, buf: Gst.Buffer) -> Gst.FlowReturn:
        if self.run is None or self.layout is None:
            self._error("human3r | buffer before caps or with a closed session", Gst.CoreError.NEGOTIATION)
            return Gst.FlowReturn.NOT_NEGOTIATED
        ok = self._guard(lambda: self._frame(buf))
        return Gst.FlowReturn.OK if ok else Gst.FlowReturn.ERROR

    def _frame(self, buf: Gst.Buffer) -> None:
        assert self.run is not None and self.layout is not None
        layout = _buffer_layout(buf, self.layout)
        overlay = bool(self.props_["overlay"])
        pts = None if buf.pts == Gst.CLOCK_TIME_NONE else int(buf.pts)
        if self.cuda:
            from human3r_edge.runtime.gst.cuda_memory import cuda_frame

            with cuda_frame(buf, layout, self.run) as device_frame:
                result = self.run.step(device_frame, pts, device_frame.channel_order)
        else:
            flags = Gst.MapFlags.READ | (Gst.MapFlags.WRITE if overlay else 0)
            ok, info = buf.map(flags)
            if not ok:
                from human3r_edge.errors import Human3RError

                raise Human3RError(f"human3r buffer | cannot be mapped for {'writing' if overlay else 'reading'}.")
            try:
                from human3r_edge.runtime.gst.frames import host_view, write_rgb

                frame, order = host_view(info.data, layout)
                result = self.run.step(frame, pts, order)
                if overlay:
                    write_rgb(info.data, layout, self.run.overlay(result, frame, order, layout))
            finally:
                buf.unmap(info)
        for text in self.run.take_warnings():  # the Session's (a size change mid-stream, as `run` warns)
            self._warning(text)
        self.post_message(Gst.Message.new_element(self, self.run.message(result, pts)))

    # ---------------------------------------------------------------------------------------------- events
    def do_sink_event(self, event: Gst.Event) -> bool:
        if event.type == Gst.EventType.EOS and self.run is not None:
            if not self._guard(self.run.end_of_stream):
                return False  # the error is posted; the pipeline stops on it, not on EOS
        return GstBase.BaseTransform.do_sink_event(self, event)

    # ---------------------------------------------------------------------------------------------- errors
    def _guard(self, fn: Any) -> bool:
        """Run fn(); post any failure as a GStreamer error with our message (outputs finalised as failed)."""
        from human3r_edge.errors import BackendUnavailable, Human3RError

        try:
            fn()
            return True
        except Human3RError as exc:
            self._fail(str(exc), exc, Gst.StreamError.FAILED)
        except BackendUnavailable as exc:
            self._fail(f"backend unavailable: {exc}", exc, Gst.ResourceError.NOT_FOUND)
        except Exception as exc:  # an internal error: our summary line, the traceback as debug info
            self._fail(f"human3r | internal error: {type(exc).__name__}: {exc}", exc, Gst.CoreError.FAILED)
        return False

    def _fail(self, text: str, exc: BaseException, code: Any) -> None:
        if self.run is not None:
            try:
                self.run.finish("failed", exc)
            except Exception as inner:  # the outputs could not be finalised: say so in the debug text
                text += f" (outputs not finalised: {inner})"
        self._error(text, code, "".join(traceback.format_exception(exc))[-4000:])

    def _error(self, text: str, code: Any, debug: str = "") -> None:
        domain = {Gst.CoreError: Gst.core_error_quark, Gst.ResourceError: Gst.resource_error_quark}.get(
            type(code), Gst.stream_error_quark)()
        self.post_message(Gst.Message.new_error(self, GLib.Error.new_literal(domain, text, int(code)), debug or text))

    def _warning(self, text: str) -> None:
        err = GLib.Error.new_literal(Gst.stream_error_quark(), text, int(Gst.StreamError.FAILED))
        self.post_message(Gst.Message.new_warning(self, err, text))


def _buffer_layout(buf: Gst.Buffer, caps_layout: Layout) -> Layout:
    """The caps' layout, with the strides and offsets of the buffer's GstVideoMeta when it carries one."""
    meta = GstVideo.buffer_get_video_meta(buf)
    if meta is None:
        return caps_layout
    n = 2 if caps_layout.format == "NV12" else 1
    return Layout(caps_layout.format, caps_layout.width, caps_layout.height,
                  tuple(int(meta.offset[i]) for i in range(n)), tuple(int(meta.stride[i]) for i in range(n)))


GObject.type_register(Human3R)
__gstelementfactory__ = ("human3r", Gst.Rank.NONE, Human3R)
