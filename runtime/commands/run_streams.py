"""`human3r-edge run A B C ... --engines DIR --out OUT`: several sources as batched streams through one export.

    human3r-edge run cam0.mp4 cam1.mp4 frames/ --engines exports/672S-s4 --smplx-model SMPLX_NEUTRAL.npz --out out/

The export must batch at least as many streams as there are sources (`human3r-edge export ... --streams N`;
with `--checkpoint` the on-the-fly export is made with `--streams` = the number of sources). Every stream keeps
its own recurrent state, reset schedule (`--reset-interval` counts per stream), tracks and outputs; the streams
share one set of engines through `runtime.multistream.MultiSession` (a batch forms when every active stream has
a frame, or when `--batch-timeout-ms` expires).

Folder layout (argument order):
    OUT/stream_00/ ... OUT/stream_NN/   each holds exactly the files a single-source run of that source writes
                                        (trajectory.tum, cameras.json, people/, scene.ply, summary.json, ...),
                                        its summary.json with that stream's own `status`, `exit_code`, `error`
    OUT/summary.json                    the aggregate: per-stream frames, FPS, latency p50/p95 (ms), status and
                                        exit code; aggregate FPS; overall status and exit code

Checked before any work (exit 2, nothing written): more sources than the export's N, the same source twice
(same file or folder after resolving links, or the same camera index), every source unreadable, and the
single-source checks (arguments, --out, the export's checksums, the SMPL-X model).
A stream that fails on its own (its source cannot be opened, decoding fails, its frames do not preprocess to
the export resolution, or its frame size changes mid-run) stops alone: its folder's summary.json says `failed`
with the message (a source that never opened leaves only that summary.json; the frames processed before a
failure mid-run stay written), and the other streams go on. With --checkpoint, the first readable source's
frame size decides the export resolution. --overwrite also covers every OUT/stream_XX/ of a previous run.
SIGINT / SIGTERM / SIGHUP stop every stream as they stop a single run: each stream's files are finalised and its
summary.json says `interrupted` (a stream that had already finished keeps its own status).

Exit code (also OUT/summary.json `exit_code`): 128+N after a stop signal (every stream is finalised, status
`interrupted`); else 1 if a stream hit an internal error; else 2 if a stream failed on bad input (an unreadable
source, a frame size change, a damaged video); else 3 if the backend was unavailable; else 4 with --strict when
a stream's input was incomplete; else 0. OUT/summary.json `status`: `interrupted`, `failed` (some stream
failed; the others' statuses are per stream), `incomplete_input`, or `complete`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import BackendUnavailable, Human3RError, msg

STREAM_DIR = "stream_{:02d}"
_STREAM_DIR_RE = re.compile(r"stream_\d{2,}")


@dataclass
class _Stream:
    """One source's stream in a multi-source run."""

    index: int
    source: str
    out: Path
    args: argparse.Namespace  # the run's arguments with this stream's `source` and `out` (for run._summary)
    error: BaseException | None = None
    source_error: BaseException | None = None  # set by the reader thread (_guarded): the stream ended there
    frame_source: Any = None  # the opened video.FrameSource
    writer: Any = None  # outputs.writer.BackgroundWriter
    fps_src: float = 0.0
    frame_count: int | None = None
    frames: int = 0
    tracks: set = field(default_factory=set)
    stages: dict = field(default_factory=dict)
    latency_ms: list = field(default_factory=list)
    t_first: float | None = None
    t_last: float | None = None
    finished: bool = False

    @property
    def name(self) -> str:
        return self.out.name


# ------------------------------------------------------------------------------------------------ checks
def source_identity(source: str) -> tuple[str, Any]:
    """What makes two source arguments the same stream: a camera index, or the resolved path."""
    s: str | int = int(source) if source.isdigit() and not Path(source).exists() else source  # as run's
    if isinstance(s, int):
        return ("camera", s)
    p = Path(s)
    try:
        st = p.stat()
        return ("file", (st.st_dev, st.st_ino))
    except OSError:
        return ("path", str(p.resolve()))


def check_duplicates(sources: list[str]) -> None:
    seen: dict[tuple[str, Any], int] = {}
    for i, s in enumerate(sources):
        key = source_identity(s)
        if key in seen:
            j = seen[key]
            raise Human3RError(msg("sources", "the same source is given twice",
                                   f"{sources[j]!r} (source {j + 1}) and {s!r} (source {i + 1})",
                                   "distinct sources, one stream each",
                                   "pass each video, image folder or camera once"))
        seen[key] = i


def export_streams(export_dir: Path) -> int:
    """N of an export folder (export.json `streams`, 1 when absent)."""
    try:
        return int(json.loads((Path(export_dir) / "export.json").read_text()).get("streams", 1))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise Human3RError(msg(f"--engines {export_dir}", "export.json cannot be read", str(exc)[:200],
                               hint="export again")) from exc


def check_stream_count(n: int, streams: int, export_dir: Path) -> None:
    if n > streams:
        raise Human3RError(msg(f"--engines {export_dir}", "more sources than the export batches",
                               f"{n} sources, export made with --streams {streams}", f"at most {streams} source(s)",
                               f"export again with `human3r-edge export ... --streams {n}` (and `build` the engines "
                               f"from it), or pass at most {streams} source(s)"))


def stream_dirs(out: Path, n: int) -> list[Path]:
    return [out / STREAM_DIR.format(k) for k in range(n)]


def _existing_stream_dirs(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.is_symlink() and _STREAM_DIR_RE.fullmatch(p.name))


def check_outputs(out: Path, n: int, overwrite: bool) -> None:
    """--out and every stream folder (those of this run, and any stream_XX a previous run left) hold no previous
    run's files unless --overwrite; nothing is created."""
    from human3r_edge.runtime.outputs.folder import check_output_dir

    check_output_dir(out, overwrite)
    for d in sorted(set(stream_dirs(out, n)) | set(_existing_stream_dirs(out))):
        check_output_dir(d, overwrite)


def claim_outputs(out: Path, n: int, overwrite: bool) -> int:
    from human3r_edge.runtime.outputs.folder import claim_output_dir

    _, removed = claim_output_dir(out, overwrite)
    for d in sorted(set(stream_dirs(out, n)) | set(_existing_stream_dirs(out))):
        removed += claim_output_dir(d, overwrite)[1]
    return removed


# ------------------------------------------------------------------------------------------------ summaries
def exit_code_of(error: BaseException | None) -> int:
    if error is None:
        return 0
    return 3 if isinstance(error, BackendUnavailable) else 2 if isinstance(error, Human3RError) else 1


def combine_exit_codes(codes: list[int], stop: int | None) -> int:
    """The run's exit code from the streams' (see the module docstring)."""
    if stop is not None:
        return 128 + stop
    for c in (1, 2, 3, 4):
        if c in codes:
            return c
    return 0


def latency_stats(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50": None, "p95": None, "mean": None}
    a = np.asarray(ms, np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "mean": round(float(a.mean()), 3)}


def aggregate_summary(args: argparse.Namespace, streams: list[_Stream], per_stream: list[dict], export_dir: Any,
                      loop_s: float, wall_s: float, stop: int | None, signals: list[str], code: int,
                      status: str, batch_timeout_ms: float | None = None) -> dict:
    total = sum(int(s.get("frames") or 0) for s in per_stream)
    return {
        "status": status, "exit_code": code, "interrupted": status == "interrupted",
        "sources": [st.source for st in streams], "out": str(args.out), "streams": len(streams),
        "export_dir": None if export_dir is None else str(export_dir), "backend": args.backend,
        "batch_timeout_ms": batch_timeout_ms,
        "frames": total, "seconds": round(loop_s, 4), "wall_seconds": round(wall_s, 4),
        "aggregate_fps": total / loop_s if loop_s > 0 else 0.0, "signals": list(signals),
        "per_stream": [{
            "stream": st.name, "index": st.index, "source": st.source, "status": s.get("status"),
            "exit_code": s.get("exit_code"), "frames": s.get("frames", 0), "fps": s.get("fps", 0.0),
            "latency_ms": s.get("latency_ms") or latency_stats([]), "tracks": s.get("tracks", 0),
            **({"error": s["error"]} if s.get("error") else {}), **({"input": s["input"]} if s.get("input") else {}),
        } for st, s in zip(streams, per_stream)],
        "note": "each stream_XX/ holds the files a single-source run of that source writes; latency_ms: per "
                "frame, the sum of its stage times (preprocessing, the model runs of its batch, this stream's "
                "host work and skinning), without the wait for a batch to form or the hand-off to the writer; "
                "fps: a stream's frames over the time from the start of the loop to its last result; "
                "aggregate_fps: every stream's frames over the loop's time",
    }


def write_json(path: Path, data: dict) -> None:
    from human3r_edge.runtime.outputs.atomic import atomic_write
    from human3r_edge.runtime.outputs.writer import _json_default

    atomic_write(path, json.dumps(data, indent=1, default=_json_default))


def failed_stream_summary(st: _Stream, backend: str) -> dict:
    """summary.json of a stream that never started (its source could not be opened)."""
    err = st.error
    assert err is not None
    return {"status": "failed", "exit_code": exit_code_of(err), "source": st.source, "out": str(st.out),
            "frames": 0, "fps": 0.0, "backend": backend, "interrupted": False, "frames_processed": 0,
            "error": {"type": type(err).__name__, "message": str(err)[:2000]}, "stream": st.index,
            "latency_ms": latency_stats([])}


# ------------------------------------------------------------------------------------------------ the run
def run_streams(args: argparse.Namespace, signals: Any, R: Any) -> int:
    """`human3r-edge run` with several sources (see the module docstring). `signals` is run.StopSignals, `R` the
    run command's module (its helpers are shared; passed in, so that this module never imports it back)."""
    import signal as _signal
    import sys

    from human3r_edge.runtime import video
    from human3r_edge.runtime.multistream import DEFAULT_BATCH_TIMEOUT_MS, MultiSession, StreamEnd
    from human3r_edge.runtime.outputs.writer import BackgroundWriter, OutputOptions, OutputWriter
    from human3r_edge.runtime.pipeline import PipelineOptions
    from human3r_edge.runtime.session import SessionOptions

    t_start = time.perf_counter()
    sources = [str(x) for x in args.sources]
    n = len(sources)
    R._check_args(args)
    timeout_ms = DEFAULT_BATCH_TIMEOUT_MS if args.batch_timeout_ms is None else float(args.batch_timeout_ms)
    if not timeout_ms >= 0:
        raise Human3RError(msg("--batch-timeout-ms", "must be >= 0", args.batch_timeout_ms,
                               f"milliseconds (default {DEFAULT_BATCH_TIMEOUT_MS:g})"))
    if getattr(args, "viewer", False):
        raise Human3RError(msg("--viewer", "shows one stream", f"{n} sources", "one source with --viewer",
                               "run the viewer on one stream's folder afterwards: human3r-edge view OUT/stream_00"))
    if args.engines is not None:
        check_stream_count(n, export_streams(args.engines), args.engines)
    check_duplicates(sources)
    check_outputs(args.out, n, args.overwrite)  # before any heavy work; nothing is created yet
    if args.engines is not None and not args.no_verify:
        from human3r_edge.runtime.integrity import verify_export

        verify_export(args.engines)
    streams = []
    for k, (src, out_k) in enumerate(zip(sources, stream_dirs(args.out, n))):
        ns = argparse.Namespace(**vars(args))
        ns.source, ns.out = src, out_k
        streams.append(_Stream(k, src, out_k, ns))
    for st in streams:  # open every source (reads its first frame): an unreadable one fails alone
        try:
            st.frame_source = video.open_source(R._source_arg(st.source), max_frames=args.max_frames,
                                                stride=args.stride, skip_corrupt=True)
            st.fps_src = float(getattr(st.frame_source, "fps", 0.0) or 0.0)
            st.frame_count = (int(getattr(st.frame_source, "frame_count", 0) or 0)
                              or len(getattr(st.frame_source, "files", [])) or None)
        except Human3RError as exc:
            st.error = exc
    good = [st for st in streams if st.error is None]
    try:
        if not good:
            raise Human3RError(msg("sources", "none can be read", "; ".join(f"{st.source}: {st.error}"
                                                                          for st in streams)[:1500],
                                   hint="check the paths and camera indices"))
        smplx_model = R._load_smplx(args.smplx_model)
        first = good[0].frame_source.first_frame
        export_dir = (args.engines if args.engines is not None
                      else R._export_on_the_fly(args, first.shape[1], first.shape[0], streams=n))
        backend = R._open_backend(args, export_dir, verify=args.engines is None and not args.no_verify)
        check_stream_count(n, backend.streams, export_dir)
        pipe = PipelineOptions(ttt3r=not args.no_ttt3r, reset_interval=args.reset_interval,
                               max_people=args.max_people, max_remembered=args.max_remembered or None)
        out_opts = {st.index: _output_options(args, st, OutputOptions) for st in good}
        o0 = next(iter(out_opts.values()))
        sess_opts = SessionOptions(pipeline=pipe, dense=o0.needs_dense, human_mask=o0.needs_mask, fit=args.fit,
                                   preprocessing=args.preprocessing)
        ms = MultiSession(backend, smplx_model, sess_opts, streams=n, batch_timeout_ms=timeout_ms)
        R._start_session(ms, export_dir, stop=ms.shutdown)
    except BaseException:
        for st in streams:
            if st.frame_source is not None:
                st.frame_source.close()
        raise
    skinning_used = f"cpu-{smplx_model.backend}"
    error: BaseException | None = None
    stop: int | None = None
    t_loop: float | None = None
    bar = None
    try:
        removed = claim_outputs(args.out, n, args.overwrite)
        if removed:
            print(f"human3r-edge run | --overwrite: removed {removed} files of a previous run from {args.out}",
                  file=sys.stderr)
        write_json(args.out / "summary.json", {
            "status": "running", "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "sources": sources, "out": str(args.out), "backend": args.backend, "export_dir": str(export_dir),
            "streams": n, "note": "the run has not finished (or was killed): each stream_XX/summary.json says "
                                  "where that stream stands"})
        for st in streams:
            if st.error is not None:
                st.out.mkdir(parents=True, exist_ok=True)
                write_json(st.out / "summary.json", failed_stream_summary(st, args.backend))
                continue
            st.writer = BackgroundWriter(OutputWriter(st.out, out_opts[st.index], faces=smplx_model.faces))
            st.writer.writer.write_summary(R._running_summary(st.args, export_dir))
        total = sum(_expected(args, st) or 0 for st in good) or None
        bar = R._progress(total, args.no_progress)
        with ms:
            skinner = R._gpu_skinner(args, smplx_model, backend.spec.max_people * n, backend)  # one call per batch
            if skinner is not None:
                ms.smplx = skinner
                skinning_used = "cuda"
            t_loop = time.perf_counter()
            by_id: dict[Any, _Stream] = {st.index: st for st in good}
            events = ms.run({st.index: _guarded(st) for st in good}, with_ends=True)
            try:
                for sid, item in events:
                    st = by_id[sid]
                    now = time.perf_counter()
                    if isinstance(item, StreamEnd):
                        st.finished = True
                        st.t_last = st.t_last or now
                        if item.error is not None or item.status.startswith("failed"):
                            st.error = st.error or item.error or Human3RError(item.status)
                        continue
                    if st.error is not None:  # its writer failed: the stream was closed
                        continue
                    r = item
                    tic = time.perf_counter()
                    try:
                        assert st.writer is not None
                        st.writer.add(r)
                    except Exception as exc:  # this stream's outputs cannot be written: it fails alone
                        st.error = exc
                        st.finished = True
                        ms.close(sid)
                        continue
                    r.timings["outputs_wait"] = (time.perf_counter() - tic) * 1e3
                    st.latency_ms.append(sum(v for k, v in r.timings.items() if k != "outputs_wait"))
                    for stage, v in r.timings.items():
                        st.stages[stage] = st.stages.get(stage, 0.0) + v
                    st.frames += 1
                    st.tracks.update(r.track_ids)
                    st.t_first = st.t_first or now
                    st.t_last = now
                    if bar is not None:
                        bar.update(1)
                        done = sum(x.frames for x in streams)
                        bar.set_postfix_str(f"{done / (time.perf_counter() - t_loop):.2f} FPS, {n} streams")
            finally:
                events.close()  # stops the reader threads, frees the slots
    except KeyboardInterrupt as exc:
        stop = int(getattr(exc, "signum", _signal.SIGINT))
    except BaseException as exc:  # every unfinished stream fails with it (recorded), then raised below
        error = exc
    # Finalisation: from here a signal is only recorded (a repeated one drops the frames still queued).
    signals.raising = False
    ms.shutdown()  # idempotent (`with ms` already did it unless the run failed before)
    writers = [st.writer for st in streams if st.writer is not None]
    signals.on_repeat = lambda: [w.hurry() for w in writers]
    if len(signals.received) > 1:
        signals.on_repeat()
    if bar is not None:
        bar.close()
    t_end = time.perf_counter()
    per_stream = []
    for st in streams:
        if st.writer is None:  # never opened, or the run failed before its writer existed
            st.error = st.error or error or Human3RError(msg(f"stream {st.name}", "not started"))
            per_stream.append(failed_stream_summary(st, args.backend))
            if st.frame_source is not None:
                st.frame_source.close()
            continue
        try:
            st.writer.close()
        except BaseException as exc:
            st.error = st.error or exc
        st.error = st.error or st.source_error
        if st.error is None and not st.finished and stop is None:
            st.error = error
        interrupted = stop is not None and not st.finished
        if st.error is None and st.frames == 0 and not interrupted:
            st.error = Human3RError(msg(f"source {st.source}", "produced no frames",
                                        hint="check --max-frames/--stride"))
        committed = st.writer.writer.frames
        incomplete = R._input_report(st.frame_source, committed if not interrupted else None)
        status = ("failed" if st.error is not None else "interrupted" if interrupted or st.writer.dropped
                  else "incomplete_input" if incomplete else "complete")
        loop_s = ((st.t_last if st.finished and st.t_last else t_end) - (t_loop if t_loop is not None else t_end))
        summary = R._summary(st.args, backend, export_dir, committed, loop_s, t_end - t_start, st.stages,
                             st.tracks, st.writer)
        code = (exit_code_of(st.error) if st.error is not None else 128 + stop if status == "interrupted"
                and stop is not None else R.EXIT_INCOMPLETE if incomplete and args.strict else R.EXIT_OK)
        summary.update(status=status, interrupted=status == "interrupted", frames_processed=st.frames,
                       frames_dropped=st.writer.dropped, signals=list(signals.received), exit_code=code,
                       stream=st.index, latency_ms=latency_stats(st.latency_ms))
        summary["settings"].update(skinning_used=skinning_used, batch_timeout_ms=timeout_ms, streams=n)
        if incomplete:
            summary["input"] = incomplete
        if st.error is not None:
            summary["error"] = {"type": type(st.error).__name__, "message": str(st.error)[:2000]}
        st.writer.writer.write_summary(summary)
        per_stream.append(summary)
    codes = [int(s.get("exit_code") or 0) for s in per_stream]
    if error is not None:
        codes.append(exit_code_of(error))
    code = combine_exit_codes(codes, stop)
    statuses = [s["status"] for s in per_stream]
    status = ("interrupted" if stop is not None else "failed" if "failed" in statuses
              else "incomplete_input" if "incomplete_input" in statuses else "complete")
    loop_s = t_end - (t_loop if t_loop is not None else t_end)
    agg = aggregate_summary(args, streams, per_stream, export_dir, loop_s, t_end - t_start, stop,
                            list(signals.received), code, status, timeout_ms)
    if error is not None:
        agg["error"] = {"type": type(error).__name__, "message": str(error)[:2000]}
    if args.out.is_dir():  # (not when the run failed before claiming --out)
        write_json(args.out / "summary.json", agg)
    if error is not None:
        raise error
    for st, s in zip(streams, per_stream):
        why = f": {str(s['error']['message'])[:300]}" if s.get("error") else ""
        print(f"human3r-edge run | {st.name} {s['status']}: {s.get('frames', 0)} frames "
              f"({float(s.get('fps') or 0.0):.2f} FPS) from {st.source}{why}",
              file=sys.stderr if s["status"] == "failed" else sys.stdout)
    print(f"human3r-edge run | {n} streams, {agg['frames']} frames in {loop_s:.1f} s "
          f"({agg['aggregate_fps']:.2f} FPS aggregate), status {status}, backend {args.backend} -> {args.out}")
    return code


def _guarded(st: _Stream) -> Any:
    """st.frame_source as the MultiSession reads it, ending the stream (its frames so far are processed and
    written) when its frame size changes or its reader fails; the reason is kept in `st.source_error` and the
    stream is then reported `failed` with it (a message naming the source and its folder)."""
    from human3r_edge.runtime import video

    class _Guarded(video.FrameSource):
        def __init__(self) -> None:
            super().__init__(queue_size=1)
            self.inner = st.frame_source
            self.description = getattr(self.inner, "description", "source")

        def __iter__(self) -> Any:
            size = None
            try:
                for f in self.inner:
                    hw = None if f.image is None else tuple(f.image.shape[:2])
                    if size is None:
                        size = hw
                    elif hw != size:
                        assert size is not None and hw is not None
                        st.source_error = Human3RError(msg(
                            f"source {st.source} ({st.name})", "frame size changed mid-run",
                            f"{size[1]}x{size[0]} -> {hw[1]}x{hw[0]} at frame {f.index}",
                            f"every frame {size[1]}x{size[0]} (WxH), the size of the stream's first frame",
                            "one camera or video per stream; the frames before were processed and written"))
                        return
                    yield f
            except Exception as exc:  # the reader failed: this stream ends, the others go on
                st.source_error = exc
            finally:
                self.inner.close()

        def close(self) -> None:
            self._closed = True
            self.inner.close()

    return _Guarded()


def _output_options(args: argparse.Namespace, st: _Stream, cls: Any) -> Any:
    fps = args.fps or (st.fps_src if st.fps_src > 0 else 30.0)
    return cls(scene=not args.no_scene, conf_threshold=args.conf_threshold, mask_threshold=args.mask_threshold,
               voxel_size=args.voxel_size, save_depth=args.save_depth, depth_format=args.depth_format,
               save_meshes=args.save_meshes, mesh_format=args.mesh_format, preview=args.preview,
               fps=fps / args.stride)


def _expected(args: argparse.Namespace, st: _Stream) -> int | None:
    total = st.frame_count
    if total is None:
        return None
    total = -(-total // args.stride)
    return min(total, args.max_frames) if args.max_frames is not None else total
