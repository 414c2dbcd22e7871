"""One CLI, `human3r-edge <subcommand>`; each subcommand lives next to the code it drives.

A subcommand module defines `add_arguments(parser)` and `main(args) -> int`. Modules are imported only when
their subcommand runs (or for `--help`), and must not import torch at module level.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from human3r_edge.errors import BackendUnavailable, Human3RError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("human3r_edge.runtime.commands.replay", "replay a golden folder through a backend and write its outputs"),
    "compare": ("human3r_edge.runtime.commands.compare", "compare an output .npz with a golden .npz (per-key tolerances)"),
    "export": ("human3r_edge.export.onnx_export", "export ONNX graphs (encoder, decoder step, SMPL-X head)"),
    "build": ("human3r_edge.export.trt_build", "build TensorRT engines from exported ONNX"),
    "run": ("human3r_edge.runtime.commands.run", "stream a video / folder / camera through the runtime"),
    "check": ("human3r_edge.runtime.commands.check", "validate GPU backends against a golden (needs a GPU)"),
    "doctor": ("human3r_edge.runtime.commands.doctor", "which backends work here, and why the others do not (exit 0 / 3)"),
    "bench": ("human3r_edge.benchmarks.bench", "per-stage latency, memory and efficiency benchmark"),
    "demo": ("human3r_edge.runtime.commands.demo", "end-to-end demo on synthetic assets (what `make demo` runs)"),
    "make-assets": ("human3r_edge.export.assets", "write random-weight checkpoints and a synthetic SMPL-X model"),
    "gst-env": ("human3r_edge.runtime.commands.gst_env", "the exports that let GStreamer load the human3r element"),
    "convert": ("human3r_edge.runtime.commands.convert", "export a run folder to glTF (glb), COLMAP text or BVH"),
    "view": ("human3r_edge.runtime.commands.view", "replay a run folder in a web viewer (viser)"),
    "triton-repo": ("human3r_edge.runtime.commands.triton_repo", "write a Triton model repository"),
    "triton-server": ("human3r_edge.runtime.commands.triton_server", "serve a Triton model repository"),
}


def _load(name: str):
    module_name, _ = COMMANDS[name]
    return importlib.import_module(module_name)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="human3r-edge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if only is None or only == name:
            try:
                _load(name).add_arguments(p)
            except ModuleNotFoundError as exc:  # a subcommand whose optional dependency is not installed
                if only == name:
                    raise SystemExit(f"human3r-edge {name} | not available: {exc}") from exc
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    only = first if first in COMMANDS else None
    try:
        parser = build_parser(only)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(_load(args.command).main(args) or 0)
    except BackendUnavailable as exc:  # the one mapping of our errors to exit codes (commands may refine it)
        print(f"human3r-edge {only or ''} | {exc}".replace("  ", " "), file=sys.stderr)
        return 3
    except Human3RError as exc:
        print(f"human3r-edge {only or ''} | {exc}".replace("  ", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while a command starts (imports) or where it does not handle it itself
        print(f"human3r-edge {only or ''} | interrupted".replace("  ", " "), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
