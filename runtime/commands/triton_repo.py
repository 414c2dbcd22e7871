"""`human3r-edge triton-repo (--engines DIR | --onnx-dir DIR) --out REPO --flavor {python,tensorrt}`: write a Triton
model repository (docs/serving.md).

    python    one Python-backend model wrapping the runtime (sequence batching, Oldest strategy, one state per
              sequence id); runs on the CPU (--onnx-dir, ort-cpu) or a GPU (--engines: trt, or --backend)
    tensorrt  TensorRT-backend models with Triton implicit state for GPU servers (runtime/triton/tensorrt_flavor.py,
              docs/triton-tensorrt.md)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--engines", type=Path, metavar="DIR", help="TensorRT engine folder (human3r-edge build)")
    src.add_argument("--onnx-dir", type=Path, metavar="DIR", help="ONNX export folder (human3r-edge export)")
    p.add_argument("--out", type=Path, required=True, metavar="REPO", help="model repository to write")
    p.add_argument("--flavor", choices=("python", "tensorrt"), default="python", help="repository flavour")
    p.add_argument("--max-sequences", type=int, default=8, metavar="S",
                   help="live sequences (streams) the server holds at once")
    p.add_argument("--max-batch-size", type=int, default=None, metavar="B",
                   help="python: requests per execute (default: --max-sequences)")
    p.add_argument("--instances", type=int, default=1, help="model instances (python: processes)")
    p.add_argument("--idle-seconds", type=float, default=60.0,
                   help="a sequence without a request for this long is freed (its next request needs START)")
    p.add_argument("--smplx-model", type=Path, default=None, metavar="FILE",
                   help="SMPL-X model copied into the repository; the server then returns vertices and joints")
    p.add_argument("--dense", action="store_true", help="python: also serve DEPTH, CONFIDENCE and POINTS_CAM")
    p.add_argument("--backend", default=None,
                   help="python: runtime backend inside the model (default: ort-cpu for --onnx-dir, trt for --engines)")


def main(args: argparse.Namespace) -> int:
    source = args.engines if args.engines is not None else args.onnx_dir
    if args.flavor == "tensorrt":
        from human3r_edge.runtime.triton import tensorrt_flavor  # written by the tensorrt flavour's owner

        repo = tensorrt_flavor.write_tensorrt_repo(source, args.out, args.max_sequences, instances=args.instances,
                                                   idle_seconds=args.idle_seconds, smplx_model=args.smplx_model)
    else:
        from human3r_edge.runtime.triton.repo import PythonRepoOptions, write_python_repo

        backend = args.backend or ("trt" if args.engines is not None else "ort-cpu")
        opts = PythonRepoOptions(max_sequences=args.max_sequences,
                                 max_batch_size=args.max_batch_size or args.max_sequences,
                                 instances=args.instances, idle_seconds=args.idle_seconds, dense=args.dense,
                                 backend=backend)
        repo = write_python_repo(source, args.out, opts, args.smplx_model)
    how = (f"serve it with `human3r-edge triton-server --repo {repo}`" if args.flavor == "python" else
           "serve it with a tritonserver that has the TensorRT backend (NVIDIA's container; the bundled server has "
           "the Python backend only): docs/triton-tensorrt.md")
    print(f"human3r-edge triton-repo | {args.flavor} repository written to {repo}; {how}", file=sys.stderr)
    return 0
