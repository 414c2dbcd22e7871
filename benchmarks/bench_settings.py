"""What one `human3r-edge bench` run is: its typed settings and the command-line arguments that make them."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from human3r_edge.errors import Human3RError, msg

STAGES = ("preprocess", "encoder", "decoder", "smpl_head", "skinning", "postprocess", "outputs")
GRAPH_STAGES = ("encoder", "decoder", "smpl_head")
RUNTIME_BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "trt")
GPU_BACKENDS = ("ort-cuda", "ort-trt", "trt")
CONFIGS = ("tiny", "672S", "672B", "672L", "896L")

@dataclass(frozen=True)
class BenchSettings:
    """Everything that defines one benchmark run."""

    config: str  # preset name
    width: int  # CUT3R image width (multiple of 16)
    height: int
    backends: tuple[str, ...]
    frames: int  # timed frames per backend
    warmup: int  # untimed frames per backend, before the timed ones
    threads: int  # intra-op threads of torch and ONNX Runtime
    people: int  # people passing detection on frame 0 (the detection bias is shifted to get this)
    max_people: int  # K human slots of the export
    seed: int
    cache: Path  # seeded checkpoint, SMPL-X files and exports are cached here
    engines: Path | None  # an existing lean export for the ORT backends (skips the export step)
    trt_engines: Path | None  # engine directory for the `trt` backend
    peak_size: int
    peak_repeats: int
    ort_options: tuple[tuple[str, Any], ...] = ()
    profile: bool = False  # also profile ort-cpu per op type (a separate, untimed pass)

    @property
    def source_size(self) -> tuple[int, int]:
        """(W0, H0) of the synthetic source frames: 1.25x the model image, as the anchor's 640x360."""
        return self.width * 5 // 4, self.height * 5 // 4


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError as exc:
        raise Human3RError(msg("--resolution", "not WxH", repr(text), "e.g. 512x288")) from exc
    from human3r_edge.runtime.graphs import check_resolution

    check_resolution(w, h)
    return w, h


def _option_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="672S", choices=CONFIGS)
    p.add_argument("--resolution", default="512x288", help="WxH of the model image (default 512x288)")
    p.add_argument("--backends", default="torch,ort-cpu",
                   help="comma list of torch, ort-cpu, ort-cuda, ort-trt, trt (default torch,ort-cpu)")
    p.add_argument("--frames", type=int, default=5, help="timed frames per backend (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed frames per backend first (default 1)")
    p.add_argument("--json", type=Path, default=None,
                   help="result JSON (markdown and PNG next to it); default benchmarks/results/<config>_<WxH>_<cpu|gpu>.json")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every core)")
    p.add_argument("--people", type=int, default=2, help="people passing detection on frame 0 (default 2)")
    p.add_argument("--max-people", type=int, default=16, help="K human slots of the export (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None,
                   help="asset cache (default $HUMAN3R_BENCH_CACHE or ~/.cache/human3r-edge/bench)")
    p.add_argument("--engines", type=Path, default=None, help="use this lean ONNX export for the ORT backends")
    p.add_argument("--trt-engines", type=Path, default=None, help="engine directory for the trt backend")
    p.add_argument("--ort-option", action="append", default=[], metavar="KEY=VALUE",
                   help="ONNX Runtime backend option (OrtOptions field), e.g. allow_spinning=false")
    p.add_argument("--peak-size", type=int, default=4096, help="sgemm size for the machine peak (default 4096)")
    p.add_argument("--peak-repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true",
                   help="also profile ort-cpu per op type (ONNX Runtime profiler, a separate untimed pass)")
    p.add_argument("--prepare-only", action="store_true",
                   help="only build the cached seeded checkpoint (and export) for these settings, then exit")
    p.add_argument("--streams", type=int, default=None, metavar="N",
                   help="multi-stream benchmark instead (benchmarks/bench_streams.py): B = 1, 2, 4 .. N streams "
                   "batched vs B sequential single sessions on ort-cpu -> benchmarks/results/bench_streams.json")
    p.add_argument("--streams-engines", type=Path, default=None, metavar="DIR",
                   help="with --streams: an `export --streams N` export of the same weights (skips that export)")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    w, h = parse_resolution(args.resolution)
    backends = tuple(b.strip() for b in str(args.backends).split(",") if b.strip())
    bad = [b for b in backends if b != "torch" and b not in RUNTIME_BACKENDS]
    if not backends or bad or len(set(backends)) != len(backends):
        raise Human3RError(msg("--backends", "unknown, empty or repeated backends", args.backends,
                               "a comma list of torch, " + ", ".join(RUNTIME_BACKENDS)))
    for name in ("frames", "people", "max_people"):
        if int(getattr(args, name)) < 1:
            raise Human3RError(msg(f"--{name.replace('_', '-')}", "must be >= 1", getattr(args, name)))
    if args.warmup < 0:
        raise Human3RError(msg("--warmup", "must be >= 0", args.warmup))
    threads = int(args.threads) if args.threads else (os.cpu_count() or 1)
    opts = []
    for item in args.ort_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise Human3RError(msg("--ort-option", "not KEY=VALUE", repr(item), "e.g. allow_spinning=false"))
        opts.append((key.strip(), _option_value(value.strip())))
    cache = args.cache or Path(os.environ.get("HUMAN3R_BENCH_CACHE", Path.home() / ".cache/human3r-edge/bench"))
    return BenchSettings(args.config, w, h, backends, int(args.frames), int(args.warmup), threads,
                         int(args.people), int(args.max_people), int(args.seed), Path(cache), args.engines,
                         args.trt_engines, int(args.peak_size), int(args.peak_repeats), tuple(opts),
                         bool(getattr(args, "profile", False)))
