"""One CLI, `human3r-edge <subcommand>`; each subcommand lives next to the code it drives.

A subcommand module defines `add_arguments(parser)` and `main(args) -> int`. Modules are imported only when
their subcommand runs (or for `--help`), and must not import torch at module level.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("human3r_edge.runtime.replay", "replay a golden folder through a backend and write its outputs"),
    "compare": ("human3r_edge.runtime.compare", "compare an output .npz with a golden .npz (per-key tolerances)"),
    "export": ("human3r_edge.export.onnx_export", "export ONNX graphs (encoder, decoder step, SMPL-X head)"),
    "build": ("human3r_edge.export.trt_build", "build TensorRT engines from exported ONNX"),
    "run": ("human3r_edge.runtime.run", "stream a video / folder / camera through the runtime"),
    "check": ("human3r_edge.runtime.check", "validate GPU backends against a golden (needs a GPU)"),
    "bench": ("human3r_edge.benchmarks.bench", "per-stage latency, memory and efficiency benchmark"),
    "demo": ("human3r_edge.runtime.demo", "end-to-end demo on synthetic assets (what `make demo` runs)"),
    "make-assets": ("human3r_edge.export.assets", "write random-weight checkpoints and a synthetic SMPL-X model"),
}


def _load(name: str):
    module_name, _ = COMMANDS[name]
    return importlib.import_module(module_name)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="human3r-edge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            try:
                _load(name).add_arguments(p)
            except ModuleNotFoundError as exc:  # a subcommand whose module is not written yet
                if only == name:
                    raise SystemExit(f"human3r-edge {name} | not available: {exc}") from exc
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    only = first if first in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(_load(args.command).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
