"""`human3r-edge replay`: run a golden folder through a backend and write its outputs under the golden's keys.

    human3r-edge replay --golden DIR [--reference golden.npz|golden_nottt3r.npz] [--smplx-model FILE]
                        --backend torch|ort-cpu|ort-cuda|ort-trt|trt [--engines DIR] --out OUT.npz [--preprocessed]

The torch backend is the reference streamer in `human3r_edge.export.reference` (imported only when asked
for; the runtime itself never imports torch). Every other backend runs the torch-free runtime pipeline
(`runtime.run.replay_golden`) over `--engines DIR`: a NON-lean export (ONNX for ort-*, engines for trt) of the
golden's checkpoint at the golden's resolution; without it the golden's checkpoint is exported on the fly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .backends import BACKENDS
from .errors import BackendUnavailable, Human3RError, msg

# backend -> "module:function" with the signature of `replay` below (minus `backend`), imported lazily.
REPLAYERS: dict[str, str] = {
    "torch": "human3r_edge.export.reference:replay_golden",
    # the torch-free runtime pipeline (exports the golden's checkpoint on the fly, non-lean, cached)
    **{name: "human3r_edge.runtime.run:replay_golden" for name in ("ort-cpu", "ort-cuda", "ort-trt", "trt")},
}
REFERENCES = ("golden.npz", "golden_nottt3r.npz")


def replayer(backend: str) -> Callable[..., dict[str, np.ndarray]]:
    """The replay function of `backend`; a clear error for unknown or not-yet-wired backends."""
    if backend not in BACKENDS and backend not in REPLAYERS:
        raise Human3RError(msg("replay", "unknown backend", repr(backend), "one of " + ", ".join(BACKENDS)))
    if backend not in REPLAYERS:
        raise Human3RError(msg("replay", f"backend {backend} not wired yet", None,
                               "a REPLAYERS entry in human3r_edge/runtime/replay.py",
                               "use --backend torch, or register the runtime pipeline's replay function"))
    module, func = REPLAYERS[backend].split(":")
    return getattr(importlib.import_module(module), func)


def replay(golden: str | os.PathLike, backend: str = "torch", reference: str = "golden.npz",
           smplx_model: str | os.PathLike | None = None, preprocessed: bool = False,
           engines: str | os.PathLike | None = None, **options: Any) -> dict[str, np.ndarray]:
    """Replay golden folder `golden` with `backend` -> {golden key: array} (arrays owned by the caller).

    reference: which npz's meta/* settings to use (use_ttt3r, reset_interval, size, R).
    smplx_model: SMPL-X model file (default: the synthetic model next to the goldens).
    preprocessed: feed the golden's own preprocessed tensors instead of preprocessing the raw frames.
    engines: export / engine directory for the non-torch backends (default: export the golden's checkpoint).
    """
    gdir = Path(golden)
    if not gdir.is_dir():
        raise Human3RError(msg(f"golden {gdir}", "not a folder", hint="pass --golden path/to/goldens/tiny_a"))
    if reference not in REFERENCES:
        raise Human3RError(msg("replay", "unknown reference npz", repr(reference), " or ".join(REFERENCES)))
    if engines is not None:
        if backend == "torch":
            raise Human3RError(msg("replay --engines", "not used by the torch backend", str(engines),
                                   hint="the torch backend loads the golden's checkpoint.pth; drop --engines"))
        if not (Path(engines) / "export.json").is_file():
            raise Human3RError(msg(f"--engines {engines}", "not an export directory (no export.json)", None,
                                   "a folder written by `human3r-edge export` (without --lean) or `build`"))
        options["engines"] = Path(engines)
    return replayer(backend)(gdir, backend=backend, preprocessed=preprocessed, reference_npz=reference,
                             smplx_model=smplx_model, **options)


def save_outputs(path: str | os.PathLike, outputs: dict[str, np.ndarray]) -> Path:
    """Write `outputs` to an .npz atomically (temporary file, then rename)."""
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp.npz")
    savez: Any = np.savez  # numpy's stub types **kwds against allow_pickle
    savez(tmp, **outputs)
    os.replace(tmp, p)
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--golden", required=True, help="golden folder (holds checkpoint.pth, frames/, golden.npz)")
    parser.add_argument("--reference", default="golden.npz", choices=REFERENCES,
                        help="npz whose meta/* settings to replay (default golden.npz: TTT3R on)")
    parser.add_argument("--smplx-model", default=None,
                        help="SMPL-X model file (default: ../smplx_synthetic/SMPLX_NEUTRAL.npz next to the golden)")
    parser.add_argument("--backend", default="torch", choices=sorted(BACKENDS), help="backend (default torch)")
    parser.add_argument("--engines", default=None, metavar="DIR",
                        help="non-torch backends: a non-lean export (ONNX) or engine folder of the golden's "
                             "checkpoint at its resolution (default: exported on the fly, cached)")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--preprocessed", action="store_true",
                        help="feed the golden's preprocessed input/img and input/img_mhmr instead of raw frames")


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        outputs = replay(args.golden, args.backend, args.reference, args.smplx_model, args.preprocessed,
                         getattr(args, "engines", None))
        path = save_outputs(args.out, outputs)
    except Human3RError as exc:
        print(f"human3r-edge replay: error: {exc}", file=sys.stderr)
        return 2
    except BackendUnavailable as exc:
        print(f"human3r-edge replay: backend unavailable: {exc}", file=sys.stderr)
        return 3
    n_steps = int(outputs.get("meta/num_model_steps", -1))
    n_humans = int(np.asarray(outputs.get("step/n_humans", np.zeros(0))).sum())
    print(f"replay {args.golden} ({args.reference}, backend {args.backend}): {n_steps} steps, {n_humans} humans, "
          f"{len(outputs)} keys -> {path} in {time.perf_counter() - t0:.1f} s")
    return 0
