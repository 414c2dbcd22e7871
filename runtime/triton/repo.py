"""Write a Triton model repository of the `python` flavour: one Python-backend model `human3r` that wraps the runtime.

    REPO/human3r/config.pbtxt       sequence_batching (Oldest), CORRID/START/END, idle timeout, instances
    REPO/human3r/1/model.py         a shim: `TritonPythonModel` delegating to runtime/triton/model.py
    REPO/human3r/1/export/          a copy of the ONNX (or engine) folder
    REPO/human3r/1/SMPLX_*.npz      the SMPL-X model when one is given (vertices and joints are then served)
    REPO/human3r/1/repo.json        how the repository was made (read by the client for the model image size)
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.triton.model import CONTROLS, DENSE_OUTPUTS, INPUTS, OUTPUTS, SMPLX_OUTPUTS

MODEL_NAME = "human3r"
_TRITON_TYPES = {"uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "float32": "TYPE_FP32",
                 "uint64": "TYPE_UINT64", "bool": "TYPE_BOOL"}

SHIM = '''"""Triton Python-backend entry of the human3r model (written by `human3r-edge triton-repo`): the logic
lives in human3r_edge/runtime/triton/model.py, which must be importable by the backend stub (the server launcher,
`human3r-edge triton-server`, names the package and the model's own environment in HUMAN3R_TRITON_PYTHONPATH:
the stub's embedded interpreter ignores PYTHONPATH)."""
import os
import sys

for _p in reversed(os.environ.get("HUMAN3R_TRITON_PYTHONPATH", os.environ.get("PYTHONPATH", "")).split(os.pathsep)):
    if _p and _p not in sys.path:
        sys.path.insert(0, _p)

import triton_python_backend_utils as pb_utils  # noqa: E402

from human3r_edge.runtime.triton.model import SequenceModel  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.impl = SequenceModel(pb_utils, args)

    def execute(self, requests):
        return self.impl.execute(requests)

    def finalize(self):
        self.impl.finalize()
'''


@dataclass(frozen=True)
class PythonRepoOptions:
    max_sequences: int = 8  # live sequences the server holds at once (= Oldest's max_candidate_sequences)
    max_batch_size: int = 8  # requests (of different sequences) one execute() gets
    instances: int = 1  # model instances (processes); each holds its own sequences
    idle_seconds: float = 60.0  # a sequence without a request for this long is freed
    max_queue_delay_us: int = 0  # how long Oldest waits to fill a batch
    dense: bool = False  # serve DEPTH / CONFIDENCE / POINTS_CAM
    backend: str = "ort-cpu"  # the runtime backend inside the model (ort-cpu, ort-cuda, trt, ...)

    def __post_init__(self) -> None:
        for name in ("max_sequences", "max_batch_size", "instances"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise Human3RError(msg(name, "must be a positive int", repr(v)))
        if not self.idle_seconds > 0:
            raise Human3RError(msg("idle_seconds", "must be > 0", self.idle_seconds))


def _dims(d: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(x) for x in d) + " ]"


def config_pbtxt(o: PythonRepoOptions, smplx: bool, width: int, height: int, name: str = MODEL_NAME) -> str:
    outputs = dict(OUTPUTS)
    if smplx:
        outputs.update(SMPLX_OUTPUTS)
    if o.dense:
        outputs.update(DENSE_OUTPUTS)
    lines = [f'name: "{name}"', 'backend: "python"', f"max_batch_size: {o.max_batch_size}", ""]
    for name, (dtype, dims) in INPUTS.items():
        lines += ["input {", f'  name: "{name}"', f"  data_type: {_TRITON_TYPES[dtype]}", f"  dims: {_dims(dims)}",
                  "  optional: true", "}"]
    for name, (dtype, dims) in outputs.items():
        lines += ["output {", f'  name: "{name}"', f"  data_type: {_TRITON_TYPES[dtype]}", f"  dims: {_dims(dims)}",
                  "}"]
    idle_us = int(round(o.idle_seconds * 1e6))
    kinds = {"CORRID": "CONTROL_SEQUENCE_CORRID", "START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END"}
    lines += ["", "sequence_batching {", f"  max_sequence_idle_microseconds: {idle_us}", "  oldest {",
              f"    max_candidate_sequences: {o.max_sequences}",
              f"    preferred_batch_size: [ {o.max_batch_size} ]",
              f"    max_queue_delay_microseconds: {o.max_queue_delay_us}", "  }"]
    for name, dtype in CONTROLS.items():
        field = "bool_false_true: [ false, true ]" if dtype == "bool" else f"data_type: {_TRITON_TYPES[dtype]}"
        if dtype == "bool":
            lines += ["  control_input {", f'    name: "{name}"', "    control {", f"      kind: {kinds[name]}",
                      "      " + field, "    }", "  }"]
        else:
            lines += ["  control_input {", f'    name: "{name}"', "    control {", f"      kind: {kinds[name]}",
                      "      " + field, "    }", "  }"]
    lines += ["}", "", f"instance_group [ {{ count: {o.instances} kind: KIND_CPU }} ]", ""]
    params = {"export_dir": "export", "backend": o.backend, "dense": "1" if o.dense else "0",
              "idle_seconds": f"{o.idle_seconds:g}", "max_sequences": str(o.max_sequences),
              "smplx_model": "SMPLX_MODEL.npz" if smplx else "", "width": str(width), "height": str(height)}
    for k, v in params.items():
        lines += ["parameters {", f'  key: "{k}"', f'  value: {{ string_value: "{v}" }}', "}"]
    return "\n".join(lines) + "\n"


def write_python_repo(source_dir: str | Path, out: str | Path, options: PythonRepoOptions = PythonRepoOptions(),
                      smplx_model: str | Path | None = None, model_name: str = MODEL_NAME) -> Path:
    """Write the repository; `source_dir` is an ONNX export (ort-* backends) or an engine folder (trt). Another
    `model_name` adds a second model to an existing repository (e.g. with other options)."""
    from human3r_edge.runtime.iospec import ExportSpec

    source, out = Path(source_dir), Path(out)
    spec = ExportSpec.load(source)  # a clear error when the folder is not an export
    model_dir = out / model_name
    version = model_dir / "1"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    version.mkdir(parents=True)
    shutil.copytree(source, version / "export")
    if smplx_model is not None:
        if not Path(smplx_model).is_file():
            raise Human3RError(msg("--smplx-model", "not a file", str(smplx_model)))
        shutil.copy2(smplx_model, version / "SMPLX_MODEL.npz")
    (version / "model.py").write_text(SHIM)
    w, h = (int(v) for v in spec.resolution)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(options, smplx_model is not None, w, h, model_name))
    (version / "repo.json").write_text(json.dumps({"flavor": "python", "model": model_name, "width": w, "height": h,
                                                   "options": asdict(options), "smplx": smplx_model is not None},
                                                  indent=1))
    return out
