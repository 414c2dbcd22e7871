"""`human3r-edge run`: stream a video, an image folder or a camera through an export and write the outputs.

    human3r-edge run clip.mp4 --engines exports/896L --smplx-model SMPLX_NEUTRAL.npz --backend ort-cpu --out out/

`--checkpoint CKPT` instead of `--engines DIR` exports ONNX on the fly (through `human3r-edge export` in a
subprocess, cached under --cache-dir per checkpoint, resolution and slot count).

Exit codes (summary.json `status` in brackets; docs/outputs.md has the whole contract):
    0    complete [complete], or incomplete input without --strict [incomplete_input]
    1    internal error [failed, with `error`]
    2    bad input: arguments, damaged files (export, SMPL-X, checkpoint, video) [failed, when --out was created]
    3    backend unavailable [failed, when --out was created]
    4    incomplete input with --strict: a truncated video or unreadable images were skipped [incomplete_input]
    128+N  stopped by signal N: 130 SIGINT, 143 SIGTERM, 129 SIGHUP [interrupted]; every output is finalised

Several sources (`run a.mp4 b.mp4 c/ --engines DIR ...`, DIR exported with `--streams N`, N >= the number of
sources; `--checkpoint` exports with `--streams` = the number of sources) run as batched streams through one set
of engines: see runtime/commands/run_streams.py for the folder layout (OUT/stream_00/, ... and OUT/summary.json),
the per-stream statuses and the exit code (a stream that fails alone sets it, the others finish).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from human3r_edge.runtime.backends.capabilities import CudaContextProvider, adopted
from human3r_edge.errors import BackendUnavailable, Human3RError, msg

BACKEND_CHOICES = ("torch", "ort-cpu", "ort-cuda", "ort-trt", "trt")
EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_INCOMPLETE = 0, 1, 2, 3, 4
_DAMAGED = "the file is damaged or not a model file: export again, or copy the folder again"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "human3r-edge" / "exports"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="+", action=_Sources, metavar="SOURCE",
                   help="video file, image folder, or camera index (0, 1, ...); several sources run as batched "
                   "streams through one export made with `export --streams N` (N >= the number of sources), "
                   "writing OUT/stream_00/, OUT/stream_01/, ... and OUT/summary.json")
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--engines", type=Path, metavar="DIR", help="export directory (ONNX or TensorRT engines)")
    model.add_argument("--checkpoint", type=Path, metavar="CKPT", help="Human3R checkpoint: export on the fly")
    p.add_argument("--smplx-model", type=Path, required=True, metavar="FILE", help="SMPLX_NEUTRAL.npz (or .pkl)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default="ort-cpu", help="inference backend")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run's outputs in --out (only files "
                   "a run writes are removed); without it such a folder is refused")
    p.add_argument("--no-verify", action="store_true", help="do not check the export's files against its "
                   "checksums.sha256 (SHA-256 of every byte: about 2 s per GB on a loaded 2-core x86)")
    p.add_argument("--strict", action="store_true", help="exit 4 when the input was incomplete (a truncated video, "
                   "unreadable images skipped); without it they are recorded in summary.json and the exit is 0")
    p.add_argument("--reset-interval", type=int, default=None, metavar="N",
                   help="reset the recurrent state every N frames (the reference demo uses 100)")
    p.add_argument("--no-ttt3r", action="store_true", help="plain CUT3R state update (no TTT3R gating)")
    p.add_argument("--max-people", type=int, default=None, metavar="K", help="people per frame (<= export slots)")
    p.add_argument("--max-remembered", type=int, default=256, metavar="M",
                   help="people the tracker remembers; the least recently seen are forgotten beyond it "
                        "(0: never forget, as the reference, whose memory then grows with every new id)")
    p.add_argument("--save-depth", action="store_true", help="write depth/NNNNNN.npy (or .png, --depth-format)")
    p.add_argument("--depth-format", choices=("npy", "png"), default="npy", help="float32 .npy, or 16-bit PNG (mm)")
    p.add_argument("--save-meshes", action="store_true", help="write meshes/NNNNNN_track_NNNN.ply (world frame)")
    p.add_argument("--mesh-format", choices=("ply", "obj"), default="ply", help="mesh file format")
    p.add_argument("--preview", action="store_true", help="write preview.mp4 with the meshes drawn")
    p.add_argument("--no-scene", action="store_true", help="do not write scene.ply")
    p.add_argument("--conf-threshold", type=float, default=2.0, help="scene points need confidence above this")
    p.add_argument("--mask-threshold", type=float, default=0.1,
                   help="scene points where the human mask exceeds this are removed (the demo's --msk_threshold)")
    p.add_argument("--voxel-size", type=float, default=None, help="scene voxel (model units); default automatic")
    p.add_argument("--fit", choices=("exact", "crop"), default="exact",
                   help="frames whose aspect does not give the export resolution: refuse (exact) or cover+crop")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--stride", type=int, default=1, metavar="N", help="use every N-th frame")
    p.add_argument("--fps", type=float, default=None, help="frame rate for timestamps/preview when the source "
                   "has none (default: the video's, else 30)")
    p.add_argument("--size", type=int, default=512, help="long side of the model image for --checkpoint exports")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where --checkpoint exports are cached")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for ONNX Runtime backends")
    p.add_argument("--skinning", choices=("auto", "cpu", "gpu"), default="auto",
                   help="SMPL-X skinning: on the CPU (compiled kernels when a C compiler is present, else numpy), "
                   "or the CUDA kernels (auto: GPU with --backend trt)")
    p.add_argument("--preprocessing", choices=("auto", "cpu", "gpu"), default="auto",
                   help="frame preprocessing: PIL-exact on the CPU (in the reader thread), or the CUDA kernels "
                   "writing into the engine's inputs (auto: GPU on trt, ort-cuda and ort-trt when pycuda is installed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--batch-timeout-ms", type=float, default=None, metavar="MS",
                   help="several sources: a batch runs when every active stream has a frame, or when MS "
                   "milliseconds passed since the batch's first frame arrived (default: the multi-stream "
                   "session's, see runtime/multistream.py); late streams join the next batch")
    from human3r_edge.runtime.viewer.live import add_viewer_arguments  # --viewer, --viewer-port, --viewer-host (viser: lazy)

    add_viewer_arguments(p)
    from human3r_edge.runtime.triton.run_remote import add_remote_arguments  # --backend triton --url HOST:PORT

    add_remote_arguments(p)


class _Sources(argparse.Action):
    """SOURCE [SOURCE ...]: `args.sources` is the list, `args.source` the first one (what a single run reads)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        items = [str(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
        namespace.sources = items
        namespace.source = items[0] if items else None


def main(args: argparse.Namespace) -> int:
    signals = StopSignals()
    sources = list(getattr(args, "sources", None) or [args.source])
    try:
        with signals:
            from human3r_edge.runtime.triton.run_remote import dispatch  # --backend triton: a Triton server

            if (remote := dispatch(args, signals)) is not None:
                return remote
            if len(sources) > 1:
                from human3r_edge.runtime.commands.run_streams import run_streams

                return run_streams(args, signals, sys.modules[__name__])
            return _run(args, signals)
    except KeyboardInterrupt as exc:  # a stop during startup, before the output folder is created
        name = signals.received[0] if signals.received else "SIGINT"
        print(f"human3r-edge run | interrupted ({name}) during startup; nothing was written", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", signal.SIGINT))
    except BackendUnavailable as exc:
        print(f"human3r-edge run | backend unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except Human3RError as exc:
        print(f"human3r-edge run | {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


# ------------------------------------------------------------------------------------------------ signals
class Stop(KeyboardInterrupt):
    """A stop request (SIGINT, SIGTERM, SIGHUP) raised in the main thread. A KeyboardInterrupt, so that every
    `finally` and every reader thread shuts down exactly as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class StopSignals:
    """While entered (main thread only), SIGINT, SIGTERM and SIGHUP stop the run: the first one raises Stop in
    the main thread; once `raising` is False (a stop is under way, or the outputs are being finalised) a signal
    is only recorded and calls `on_repeat` (the writer then drops its queued frames and finishes at once).
    Nothing a signal does can interrupt the writing of the files."""

    SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)

    def __init__(self) -> None:
        self.received: list[str] = []
        self.raising = True
        self.on_repeat: Any = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signal.Signals(signum).name)
        if self.raising:
            self.raising = False
            raise Stop(signum)
        if self.on_repeat is not None:
            self.on_repeat()

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                if signal.getsignal(s) == signal.SIG_IGN:
                    continue  # ignored by whoever started us (nohup: SIGHUP; a background job: SIGINT): stay so
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


# ------------------------------------------------------------------------------------------------ the run
def _run(args: argparse.Namespace, signals: StopSignals) -> int:
    from human3r_edge.runtime import video
    from human3r_edge.runtime.outputs.folder import check_output_dir, claim_output_dir
    from human3r_edge.runtime.outputs.writer import BackgroundWriter, OutputOptions, OutputWriter
    from human3r_edge.runtime.pipeline import PipelineOptions
    from human3r_edge.runtime.session import Session, SessionOptions

    t_start = time.perf_counter()
    _check_args(args)
    check_output_dir(args.out, args.overwrite)  # before any heavy work; nothing is created yet
    if args.engines is not None and not args.no_verify:
        from human3r_edge.runtime.integrity import verify_export

        verify_export(args.engines)  # every byte against checksums.sha256 (when the export has one), first
    smplx_model = _load_smplx(args.smplx_model)
    from human3r_edge.runtime.viewer.live import open_live_viewer

    live = open_live_viewer(args, smplx_model.faces)  # None without --viewer; a port in use fails here, early
    probe = video.open_source(_source_arg(args.source), max_frames=1)
    first = probe.first_frame
    fps_src = float(getattr(probe, "fps", 0.0) or 0.0)
    frame_count = int(getattr(probe, "frame_count", 0) or 0) or len(getattr(probe, "files", [])) or None
    probe.close()
    export_dir = args.engines if args.engines is not None else _export_on_the_fly(args, first.shape[1],
                                                                                  first.shape[0])
    backend = _open_backend(args, export_dir, verify=args.engines is None and not args.no_verify)
    fps = args.fps or (fps_src if fps_src > 0 else 30.0)
    out_opts = OutputOptions(scene=not args.no_scene, conf_threshold=args.conf_threshold,
                             mask_threshold=args.mask_threshold, voxel_size=args.voxel_size,
                             save_depth=args.save_depth, depth_format=args.depth_format,
                             save_meshes=args.save_meshes, mesh_format=args.mesh_format, preview=args.preview,
                             fps=fps / args.stride)
    pipe = PipelineOptions(ttt3r=not args.no_ttt3r, reset_interval=args.reset_interval, max_people=args.max_people,
                           max_remembered=args.max_remembered or None)
    sess_opts = SessionOptions(pipeline=pipe, dense=out_opts.needs_dense, human_mask=out_opts.needs_mask,
                               fit=args.fit, preprocessing=args.preprocessing)
    total = frame_count
    if total is not None:
        total = -(-total // args.stride)
        if args.max_frames is not None:
            total = min(total, args.max_frames)
    session = Session(backend, smplx_model, sess_opts)
    _start_session(session, export_dir)  # model files are parsed here: a damaged one fails before --out exists
    stages: dict[str, float] = {}
    frames, tracks = 0, set()
    t_loop: float | None = None
    _, removed = claim_output_dir(args.out, args.overwrite)
    if removed:
        print(f"human3r-edge run | --overwrite: removed {removed} files of a previous run from {args.out}",
              file=sys.stderr)
    writer = BackgroundWriter(OutputWriter(args.out, out_opts, faces=smplx_model.faces))
    writer.writer.write_summary(_running_summary(args, export_dir))  # a kill leaves status "running"
    bar = _progress(total, args.no_progress)
    skinning_used = f"cpu-{smplx_model.backend}"  # cpu-native (compiled kernels) or cpu-numpy
    source: Any = None
    error: BaseException | None = None
    stop: int | None = None
    try:
        with session:
            skinner = _gpu_skinner(args, smplx_model, backend.spec.max_people, backend)
            if skinner is not None:
                session.smplx = skinner
                skinning_used = "cuda"
            source = video.open_source(_source_arg(args.source), max_frames=args.max_frames, stride=args.stride,
                                       transform=session.reader_transform, skip_corrupt=True)
            t_loop = time.perf_counter()
            for r in session.run(source):
                tic = time.perf_counter()
                writer.add(r)  # drawn and written in the writer thread; this times the hand-off (back-pressure)
                r.timings["outputs_wait"] = (time.perf_counter() - tic) * 1e3
                if live is not None:
                    live.offer(r)  # never waits: the viewer thread draws the newest frame, older ones are dropped
                for k, v in r.timings.items():
                    stages[k] = stages.get(k, 0.0) + v
                frames += 1
                tracks.update(r.track_ids)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{frames / (time.perf_counter() - t_loop):.2f} FPS, "
                                        f"{len(r.people)} people")
    except KeyboardInterrupt as exc:
        stop = int(getattr(exc, "signum", signal.SIGINT))
    except BaseException as exc:  # recorded in summary.json (status failed), then raised again below
        error = exc
    # Finalisation: from here a signal is only recorded (a repeated one drops the frames still queued).
    signals.raising = False
    signals.on_repeat = writer.hurry
    if len(signals.received) > 1:  # a second signal came before on_repeat was set
        writer.hurry()
    if bar is not None:
        bar.close()
    t_end = time.perf_counter()
    loop_s = t_end - (t_loop if t_loop is not None else t_end)
    try:
        writer.close()  # every queued frame is written before the summary is taken
    except BaseException as exc:
        error = error or exc
    viewer_report = None if live is None else live.close(args.viewer_linger, lambda: bool(signals.received))
    if error is None and frames == 0 and stop is None:
        error = Human3RError(msg(f"source {args.source}", "produced no frames", hint="check --max-frames/--stride"))
    committed = writer.writer.frames
    incomplete = _input_report(source, committed if stop is None else None)
    status = ("failed" if error is not None else "interrupted" if stop is not None or writer.dropped
              else "incomplete_input" if incomplete else "complete")
    summary = _summary(args, backend, export_dir, committed, loop_s, t_end - t_start, stages, tracks, writer)
    summary.update(status=status, interrupted=status == "interrupted", frames_processed=frames,
                   frames_dropped=writer.dropped, signals=list(signals.received), exit_code=None)
    if incomplete:
        summary["input"] = incomplete
    if error is not None:
        summary["error"] = {"type": type(error).__name__, "message": str(error)[:2000]}
    summary["settings"]["skinning_used"] = skinning_used
    if viewer_report is not None:
        summary["viewer"] = viewer_report
    code = (EXIT_BAD_INPUT if isinstance(error, Human3RError) else EXIT_UNAVAILABLE
            if isinstance(error, BackendUnavailable) else EXIT_INTERNAL if error is not None
            else 128 + stop if stop is not None
            else EXIT_INCOMPLETE if incomplete and args.strict else EXIT_OK)
    summary["exit_code"] = code
    writer.writer.write_summary(summary)
    if error is not None:
        raise error
    scene = f", scene {summary['scene_points']} points" if summary.get("scene_points") is not None else ""
    tail = {"interrupted": f" (interrupted by {', '.join(signals.received) or 'SIGINT'})",
            "incomplete_input": f" (incomplete input: {incomplete and incomplete['summary']})"}.get(status, "")
    print(f"human3r-edge run | {committed} frames in {loop_s:.1f} s ({summary['fps']:.2f} FPS), {len(tracks)} tracks"
          f"{scene}, backend {args.backend} -> {args.out}{tail}")
    return code


def _start_session(session: Any, export_dir: Path, stop: Any = None) -> None:
    """Activate the backend (ONNX parsing, engine deserialisation, initial state): a damaged model file is a
    Human3RError naming the export folder, never a traceback. `stop` undoes a failed start (default
    `session.close`; a MultiSession's is `shutdown`)."""
    stop = session.close if stop is None else stop
    try:
        session.start()
    except (Human3RError, BackendUnavailable, KeyboardInterrupt):
        stop()
        raise
    except Exception as exc:
        stop()
        raise Human3RError(msg(f"export {export_dir}", "a model file cannot be loaded",
                               f"{type(exc).__name__}: {str(exc)[:300]}", hint=_DAMAGED)) from exc


def _input_report(source: Any, decoded: int | None) -> dict | None:
    """What the source could not deliver (summary.json `input`), or None when it delivered everything."""
    if source is None:
        return None
    skipped = list(getattr(source, "skipped", []))
    early = getattr(source, "stopped_early", None)
    if not skipped and early is None:
        return None
    out: dict[str, Any] = {"skipped": skipped}
    if early is not None:
        out["frames_decoded"], out["frames_expected"] = early
        out["summary"] = f"video decoding stopped after {early[0]} of {early[1]} frames (truncated or corrupt)"
    else:
        n = len(getattr(source, "files", []))
        out["frames_expected"], out["frames_decoded"] = n, n - len(skipped)
        out["summary"] = (f"{len(skipped)} unreadable image(s) skipped: "
                          + ", ".join(x["file"] for x in skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    return out


# ------------------------------------------------------------------------------------------------ helpers
def _check_args(args: argparse.Namespace) -> None:
    for name in ("reset_interval", "max_people", "max_frames", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise Human3RError(msg(f"--{name.replace('_', '-')}", "must be >= 1", v))
    if args.stride < 1:
        raise Human3RError(msg("--stride", "must be >= 1", args.stride))
    if args.max_remembered < 0:
        raise Human3RError(msg("--max-remembered", "must be >= 0 (0: unbounded)", args.max_remembered))
    if not args.smplx_model.is_file():
        raise Human3RError(msg(f"--smplx-model {args.smplx_model}", "file not found", None,
                               "an SMPL-X model file (SMPLX_NEUTRAL.npz)",
                               "download it from smpl-x.is.tue.mpg.de, or make a synthetic one with "
                               "`human3r-edge make-assets`"))
    if args.engines is not None and not (args.engines / "export.json").is_file():
        raise Human3RError(msg(f"--engines {args.engines}", "not an export directory (no export.json)", None,
                               "a directory written by `human3r-edge export` or `human3r-edge build`"))
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise Human3RError(msg(f"--checkpoint {args.checkpoint}", "file not found"))


def _source_arg(source: str) -> str | int:
    return int(source) if source.isdigit() and not Path(source).exists() else source


def _load_smplx(path: Path) -> Any:
    from human3r_edge.runtime.smplx.skinning import SMPLXModel

    try:
        return SMPLXModel.load(path)
    except (Human3RError, BackendUnavailable):
        raise
    except Exception as exc:  # anything else a damaged file provokes: still the user's file, never a traceback
        raise Human3RError(msg(f"--smplx-model {path}", "cannot be read", f"{type(exc).__name__}: {str(exc)[:300]}",
                               "an SMPL-X model file (SMPLX_NEUTRAL.npz)", "the file is damaged: download it "
                               "again")) from exc


def _gpu_skinner(args: argparse.Namespace, model: Any, max_people: int, backend: Any = None) -> Any:
    """A CudaSkinner when asked for (or auto on the TensorRT backend), else None. It runs in the device's primary
    context, the one the backend uses: the trt backend keeps it current while active, the ONNX Runtime GPU
    backends push it in `ensure_cuda_context()` (ORT's CUDA runtime makes it current on every Run, so kernels
    of any other context, e.g. pycuda.autoinit's, would fail with "invalid resource handle"). The backend
    adopts the skinner, so its buffers are freed before that context is released."""
    if args.skinning == "cpu" or (args.skinning == "auto" and args.backend != "trt"):
        return None
    from human3r_edge.runtime.smplx.gpu import CudaSkinner

    try:
        if isinstance(backend, CudaContextProvider):
            backend.ensure_cuda_context()
        elif args.backend != "trt":
            raise BackendUnavailable(msg(f"--backend {args.backend}", "has no CUDA context for the kernels",
                                         hint="use --skinning cpu, or a GPU backend (trt, ort-cuda, ort-trt)"))
        skinner = CudaSkinner(model, max_people)
        return adopted(backend, skinner)
    except (BackendUnavailable, ImportError) as exc:
        if args.skinning == "gpu":
            raise BackendUnavailable(msg("--skinning gpu", "CUDA skinning unavailable", str(exc)[:300])) from exc
        print(f"human3r-edge run | GPU skinning unavailable, using the CPU: {str(exc)[:200]}", file=sys.stderr)
        return None


def _open_backend(args: argparse.Namespace, export_dir: Path, verify: bool = True) -> Any:
    from human3r_edge.runtime.backends import open_backend

    from human3r_edge.runtime.session import streaming_backend_options

    if verify:
        from human3r_edge.runtime.integrity import verify_export

        verify_export(export_dir)  # every byte against checksums.sha256 (when the export has one)
    opts: dict[str, Any] = {}
    if args.threads is not None and args.backend.startswith("ort"):
        opts["intra_op_threads"] = args.threads
    try:
        return open_backend(args.backend, export_dir, **streaming_backend_options(args.backend, opts))
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(msg(f"backend {args.backend}", "its module is not available", str(exc),
                                     hint="install the backend's libraries, or pick another --backend")) from exc
    except (Human3RError, BackendUnavailable):
        raise
    except Exception as exc:
        raise Human3RError(msg(f"export {export_dir}", "cannot be opened", f"{type(exc).__name__}: "
                               f"{str(exc)[:300]}", hint=_DAMAGED)) from exc


def _export_on_the_fly(args: argparse.Namespace, width0: int, height0: int, streams: int = 1) -> Path:
    """Export the checkpoint at the resolution the source's frames preprocess to, cached by file identity
    (`streams` > 1: a multi-stream export, `export --streams N`)."""
    from human3r_edge.runtime.preprocess import output_shape

    h, w = output_shape(width0, height0, args.size)
    return export_cached(args.checkpoint, w, h, args.max_people or 16, args.cache_dir, lean=True, streams=streams)


def export_cached(checkpoint: Path, width: int, height: int, max_people: int, cache_dir: Path, lean: bool = True,
                  streams: int = 1) -> Path:
    """`human3r-edge export` of `checkpoint` in a subprocess (the runtime never imports the exporter), cached
    under cache_dir by the checkpoint's path, size and mtime plus resolution, slots, leanness and (N > 1)
    `--streams N`."""
    from human3r_edge.runtime.graphs import check_resolution

    check_resolution(width, height)
    st = checkpoint.stat()
    ident = f"{checkpoint.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    out = cache_dir / (f"{checkpoint.stem}-{key}-{width}x{height}-k{max_people}{'-lean' if lean else ''}"
                       + (f"-s{streams}" if streams > 1 else ""))
    if (out / "export.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    cmd = [sys.executable, "-m", "human3r_edge", "export", "--checkpoint", str(checkpoint), "--resolution",
           f"{width}x{height}", "--out", str(tmp), "--max-people", str(max_people)] + (["--lean"] if lean else []) \
        + (["--streams", str(streams)] if streams > 1 else [])
    print(f"human3r-edge | exporting {checkpoint.name} at {width}x{height} (cached in {out})", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)  # a stop kills the child (subprocess.run)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0 or not (tmp / "export.json").is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise Human3RError(msg(f"export of {checkpoint}", "on-the-fly export failed",
                               " / ".join(tail) or proc.returncode, "a successful `human3r-edge export`",
                               "run `human3r-edge export --checkpoint CKPT --resolution "
                               f"{width}x{height} --out DIR{' --lean' if lean else ''}"
                               f"{f' --streams {streams}' if streams > 1 else ''}` yourself and pass "
                               "--engines DIR"))
    os.replace(tmp, out)
    return out


def _progress(total: int | None, disabled: bool) -> Any:
    if disabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr)


def _versions(backend_name: str) -> dict[str, str]:
    import numpy as np

    from human3r_edge import __version__

    v = {"human3r_edge": __version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        import cv2

        v["opencv"] = cv2.__version__
    except ImportError:
        pass
    # getattr: a module can be imported without a version, e.g. `tensorrt` when only tensorrt-stubs is installed
    # (a namespace package); the summary must never hide the real "only type stubs" error behind AttributeError
    if backend_name.startswith("ort") and sys.modules.get("onnxruntime") is not None:
        v["onnxruntime"] = str(getattr(sys.modules["onnxruntime"], "__version__", "unknown"))
    if backend_name in ("trt", "ort-trt") and sys.modules.get("tensorrt") is not None:
        v["tensorrt"] = str(getattr(sys.modules["tensorrt"], "__version__", "none (type stubs only)"))
    return v


def _running_summary(args: argparse.Namespace, export_dir: Path) -> dict:
    """summary.json while the run is in progress: what a killed run leaves (every other file is consistent with
    trajectory.tum, see runtime/outputs/writer.py; preview.mp4 only exists once finalised)."""
    return {"status": "running", "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": str(args.source), "out": str(args.out), "backend": args.backend, "export_dir": str(export_dir),
            "note": "the run has not finished (or was killed): trajectory.tum is the commit record; "
                    "per-frame files exist only for frames in it, scene.ply lags it by at most 300 frames, a "
                    "killed run's preview (.preview.partial.mp4) is not playable"}


def _summary(args: argparse.Namespace, backend: Any, export_dir: Path, frames: int, loop_s: float, wall_s: float,
             stages: dict[str, float], tracks: set, writer: Any) -> dict:
    scene = writer.scene
    n_scene = None
    if scene is not None and frames:
        n_scene = int(scene.points()[0].shape[0])
    spec = backend.spec
    return {
        "status": None, "source": str(args.source), "out": str(args.out), "frames": frames,
        "seconds": round(loop_s, 4), "wall_seconds": round(wall_s, 4),
        "fps": frames / loop_s if loop_s > 0 else 0.0,
        "stage_ms_mean": {k: round(v / max(frames, 1), 4) for k, v in sorted(stages.items())},
        "backend": args.backend, "export_dir": str(export_dir), "resolution": list(spec.resolution),
        "config": spec.config.get("name"), "max_people": spec.max_people, "tracks": len(tracks),
        "scene_points": n_scene, "settings": {"ttt3r": not args.no_ttt3r, "reset_interval": args.reset_interval,
                                              "max_people": args.max_people, "stride": args.stride,
                                              "max_remembered": args.max_remembered or None,
                                              "skinning": args.skinning,
                                              "preprocessing": args.preprocessing, "fit": args.fit},
        "versions": _versions(args.backend),
    }


# ------------------------------------------------------------------------------------------------ golden replay
