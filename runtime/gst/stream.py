"""What the `human3r` element does with a stream, without GStreamer types: check the properties, open the
Session, step frames, write `run`'s outputs and summary, finalise at EOS. element.py adapts it to GStreamer.

Everything `run` decides is reused from runtime/commands/run.py (argument checks, backend opening, GPU skinning, the
summary) through an argparse namespace built by `run`'s own parser, so the element and `human3r-edge run` take
the same defaults and write the same files.
"""
from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import Human3RError, msg


def run_args(props: dict[str, Any], source: str) -> argparse.Namespace:
    """`human3r-edge run`'s namespace for the element's properties (run's parser supplies every default)."""
    from human3r_edge.runtime.commands.run import BACKEND_CHOICES, add_arguments

    choices = {"backend": tuple(b for b in BACKEND_CHOICES if b != "torch"), "preprocessing": ("auto", "cpu", "gpu"),
               "skinning": ("auto", "cpu", "gpu"), "fit": ("exact", "crop")}
    for name, allowed in choices.items():
        if props.get(name) not in allowed:
            raise Human3RError(msg(f"human3r {name}", "unknown value", repr(props.get(name)), " / ".join(allowed)))
    engines, checkpoint, smplx = props.get("engines"), props.get("checkpoint"), props.get("smplx-model")
    if bool(engines) == bool(checkpoint):
        raise Human3RError(msg("human3r engines / checkpoint", "exactly one must be set",
                               f"engines={engines!r}, checkpoint={checkpoint!r}", "one of them",
                               "engines=DIR (an export folder) or checkpoint=CKPT (exported on the fly)"))
    if engines and not (Path(engines) / "export.json").is_file():
        what = "folder not found" if not Path(engines).exists() else "not an export directory (no export.json)"
        raise Human3RError(msg(f"human3r engines={engines}", what, None,
                               "a directory written by `human3r-edge export` or `human3r-edge build`"))
    if checkpoint and not Path(checkpoint).is_file():
        raise Human3RError(msg(f"human3r checkpoint={checkpoint}", "file not found"))
    if not smplx or not Path(smplx).is_file():
        raise Human3RError(msg(f"human3r smplx-model={smplx}", "file not found", None,
                               "an SMPL-X model file (SMPLX_NEUTRAL.npz)", "download it from smpl-x.is.tue.mpg.de, "
                               "or make a synthetic one with `human3r-edge make-assets`"))
    argv = [source, "--smplx-model", str(smplx), "--out", str(props.get("out") or "."),
            "--backend", props["backend"], "--preprocessing", props["preprocessing"], "--skinning", props["skinning"],
            "--fit", props["fit"], "--no-progress"]
    argv += ["--engines", str(engines)] if engines else ["--checkpoint", str(checkpoint)]
    if props.get("reset-interval"):
        argv += ["--reset-interval", str(props["reset-interval"])]
    if props.get("max-people"):
        argv += ["--max-people", str(props["max-people"])]
    if props.get("overwrite"):
        argv.append("--overwrite")
    parser = argparse.ArgumentParser(prog="human3r")
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.out = Path(props["out"]) if props.get("out") else None
    return args


class ElementRun:
    """One element instance's session and outputs. open() (NULL->READY), begin_stream() (READY->PAUSED),
    caps_changed(), step() per frame, end_of_stream() (EOS), finish() (PAUSED->READY, errors), close()."""

    def __init__(self, props: dict[str, Any], name: str = "human3r") -> None:
        self.props = props
        self.name = name
        self.args = run_args(props, f"gstreamer:{name}")
        self.session: Any = None
        self.smplx_model: Any = None
        self.export_dir: Path | None = None
        self.skinning_used = ""
        self.fps = 0.0
        self.caps = ""
        self.t_open = time.perf_counter()
        self.warnings: list[str] = []
        self._reset_stream()

    def _reset_stream(self) -> None:
        self.writer: Any = None
        self.frames = 0
        self.tracks: set[int] = set()
        self.stages: dict[str, float] = {}
        self.t_first: float | None = None
        self.finished = False
        self.summary: dict | None = None

    # ---------------------------------------------------------------------------------------------- lifecycle
    def open(self) -> None:
        """Check the output folder, load the SMPL-X model, open and start the Session (engines=), as `run` does
        before its first frame. With checkpoint= the Session opens at the first caps (the export needs the size)."""
        from human3r_edge.runtime.outputs.folder import check_output_dir
        from human3r_edge.runtime.commands.run import _load_smplx

        a = self.args
        if a.out is not None:
            check_output_dir(a.out, a.overwrite)
        self.smplx_model = _load_smplx(a.smplx_model)
        if a.engines is not None:
            from human3r_edge.runtime.integrity import verify_export

            verify_export(a.engines)
            self._start_session(a.engines)

    def _start_session(self, export_dir: Path) -> None:
        from human3r_edge.runtime.commands.run import _gpu_skinner, _open_backend, _start_session
        from human3r_edge.runtime.pipeline import PipelineOptions
        from human3r_edge.runtime.session import Session, SessionOptions

        a = self.args
        backend = _open_backend(a, export_dir, verify=a.engines is None)
        out = self.output_options()
        pipe = PipelineOptions(ttt3r=not a.no_ttt3r, reset_interval=a.reset_interval, max_people=a.max_people,
                               max_remembered=a.max_remembered or None)
        options = SessionOptions(pipeline=pipe,
                                 dense=out.needs_dense if a.out is not None else False,
                                 human_mask=out.needs_mask if a.out is not None else False, fit=a.fit,
                                 preprocessing=a.preprocessing)
        session = Session(backend, self.smplx_model, options)
        _start_session(session, export_dir)
        self.skinning_used = f"cpu-{self.smplx_model.backend}"
        skinner = _gpu_skinner(a, self.smplx_model, backend.spec.max_people, backend)
        if skinner is not None:
            session.smplx = skinner
            self.skinning_used = "cuda"
        self.session, self.export_dir = session, Path(export_dir)

    def output_options(self) -> Any:
        from human3r_edge.runtime.outputs.writer import OutputOptions

        a = self.args
        return OutputOptions(scene=not a.no_scene, conf_threshold=a.conf_threshold, mask_threshold=a.mask_threshold,
                             voxel_size=a.voxel_size, save_depth=a.save_depth, depth_format=a.depth_format,
                             save_meshes=a.save_meshes, mesh_format=a.mesh_format, preview=a.preview,
                             fps=self.fps or 30.0)

    def begin_stream(self) -> None:
        """A new stream (READY->PAUSED): a fresh scene and outputs; the Session's models stay loaded."""
        if self.frames and self.session is not None and self.session.pipeline is not None:
            self.session.reset()
        self._reset_stream()

    def caps_changed(self, layout: Any, fps: float, caps: str) -> None:
        if self.writer is None:
            self.fps, self.caps = fps, caps
        if self.session is None:  # checkpoint=: export at this size (cached), as `run` does from its first frame
            from human3r_edge.runtime.commands.run import _export_on_the_fly

            self._start_session(_export_on_the_fly(self.args, layout.width, layout.height))

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    # ---------------------------------------------------------------------------------------------- frames
    def step(self, frame: Any, pts: int | None, channel_order: str) -> Any:
        """One frame (read during this call only) -> its FrameResult; recorded in the outputs."""
        if self.session is None:
            raise Human3RError(msg("human3r", "no session (the element is not READY)"))
        if self.t_first is None:
            self.t_first = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prepared = self.session.prepare(frame, channel_order)
            r = self.session.process(prepared, None if pts is None else pts / 1e9)
        self.warnings += [str(w.message) for w in caught]
        if self.args.out is not None:
            if self.writer is None:
                self._open_writer()
            tic = time.perf_counter()
            self.writer.add(r)
            r.timings["outputs_wait"] = (time.perf_counter() - tic) * 1e3
        for k, v in r.timings.items():
            self.stages[k] = self.stages.get(k, 0.0) + v
        self.frames += 1
        self.tracks.update(r.track_ids)
        return r

    def take_warnings(self) -> list[str]:
        """Warnings the Session gave since the last call (the element posts them as GStreamer warnings)."""
        out, self.warnings = self.warnings, []
        return out

    def _open_writer(self) -> None:
        from human3r_edge.runtime.outputs.folder import claim_output_dir
        from human3r_edge.runtime.outputs.writer import BackgroundWriter, OutputWriter
        from human3r_edge.runtime.commands.run import _running_summary

        claim_output_dir(self.args.out, self.args.overwrite)
        self.writer = BackgroundWriter(OutputWriter(self.args.out, self.output_options(),
                                                    faces=self.smplx_model.faces))
        self.writer.writer.write_summary(_running_summary(self.args, self.export_dir or Path()))

    def timestamp(self, r: Any) -> float:
        return float(r.timestamp) if r.timestamp is not None else r.index / (self.fps or 30.0)

    def message(self, r: Any, pts: int | None) -> Any:
        """The `human3r-frame` GstStructure of a result (messages.py)."""
        from human3r_edge.runtime.gst.messages import frame_structure

        return frame_structure(r, pts, self.timestamp(r))

    def overlay(self, r: Any, frame: np.ndarray, channel_order: str, layout: Any) -> np.ndarray:
        """A new (H, W, 3) RGB image: the input frame with the meshes and track ids drawn (runtime/outputs/preview.py's
        drawing, projected with K brought back to the frame's pixels), for writing back into the buffer."""
        from human3r_edge.runtime.outputs.preview import draw_meshes
        from human3r_edge.runtime.gst.frames import frame_intrinsics

        rgb = np.ascontiguousarray(frame[..., 2::-1] if channel_order == "BGR" else frame[..., :3])
        k = frame_intrinsics(r.intrinsics, layout.width, layout.height, self.session.size)
        faces = getattr(self.smplx_model, "faces", None)
        return draw_meshes(rgb, r.people, k, faces)

    # ---------------------------------------------------------------------------------------------- the end
    def end_of_stream(self) -> None:
        if self.frames == 0:
            self.finished = True
            raise Human3RError(msg(f"human3r ({self.name})", "end of stream before any frame", None,
                                   "at least one video frame", "check the source (an empty file or folder, "
                                   "num-buffers=0, a decoder that produced nothing)"))
        self.finish("complete")

    def finish(self, status: str, error: BaseException | None = None) -> dict | None:
        """Finalise the outputs (idempotent): every queued frame written, then summary.json with `status`
        ('complete', 'interrupted' or 'failed'), as `run` writes it. Returns the summary (None without out=)."""
        if self.finished:
            return self.summary
        self.finished = True
        if self.writer is None:
            return None
        from human3r_edge.runtime.commands.run import _summary

        t_end = time.perf_counter()
        loop_s = t_end - (self.t_first if self.t_first is not None else t_end)
        asked = status
        try:
            self.writer.close()
        except BaseException as exc:
            error = error or exc
            status = "failed"
        committed = self.writer.writer.frames
        summary = _summary(self.args, self.session.backend, self.export_dir or Path(), committed, loop_s,
                           t_end - self.t_open, self.stages, self.tracks, self.writer)
        summary.update(status=status, interrupted=status == "interrupted", frames_processed=self.frames,
                       frames_dropped=self.writer.dropped, signals=[], exit_code=None)  # gst-launch's, not ours
        if error is not None:
            summary["error"] = {"type": type(error).__name__, "message": str(error)[:2000]}
        summary["settings"]["skinning_used"] = self.skinning_used
        summary["gstreamer"] = {"element": self.name, "caps": self.caps,
                                "fps_caps": self.fps if math.isfinite(self.fps) else None}
        self.writer.writer.write_summary(summary)
        self.summary = summary
        if error is not None and asked != "failed":  # the outputs failed at a normal end: the element must say so
            raise error
        return summary
