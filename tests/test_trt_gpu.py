"""GPU path on real hardware: build -> load -> run / golden replay -> polygraphy compare. Skipped without a GPU."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from human3r_edge.runtime.backends import open_backend
from human3r_edge.errors import BackendUnavailable
from human3r_edge.runtime.iospec import ExportSpec
from support.toy_export import run_frames, write_toy_export

pytestmark = pytest.mark.gpu


def _real_gpu_or_skip() -> None:
    from human3r_edge.runtime.cuda_util import require_pycuda, require_tensorrt

    try:
        require_tensorrt()
        require_pycuda()
    except BackendUnavailable as exc:
        pytest.skip(f"needs an NVIDIA GPU with TensorRT and pycuda ({exc})")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy_gpu")
    write_toy_export(d)
    return d


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(b).max()) or 1.0
    return float(np.abs(a.astype(np.float64) - b).max()) / scale


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 5e-2)])
def test_build_load_run_against_ort_cpu(toy, tmp_path, precision, tol):
    _real_gpu_or_skip()
    from human3r_edge.export.trt_build import BuildOptions, build_engines

    out = tmp_path / f"engines_{precision}"
    build_engines(toy, out, BuildOptions(precision=precision, workspace_mb=1024, progress=False))
    spec = ExportSpec.load(out)
    with open_backend("ort-cpu", toy) as ref_be:
        ref = run_frames(ref_be, spec, 8)
    for cuda_graph in (False, True):
        with open_backend("trt", out, cuda_graph=cuda_graph, onnx_dir=str(toy)) as be:
            got = run_frames(be, spec, 8)
        worst = max(_max_rel(got[f][k], ref[f][k]) for f in range(8) for k in ref[f]
                    if ref[f][k].dtype.kind == "f")
        assert worst <= tol, f"{precision} cuda_graph={cuda_graph}: worst rel {worst:.3e} > {tol}"


def test_check_command_on_golden(golden_dir, require_golden, tmp_path):
    """`human3r-edge check --backend trt` end to end on a golden: needs the exporter and a GPU."""
    _real_gpu_or_skip()
    import subprocess
    import sys

    from human3r_edge.runtime.commands.run import export_cached

    engines = tmp_path / "engines"
    with np.load(golden_dir / "golden.npz") as z:
        h, w = z["input/img"].shape[-2:]
    onnx_dir = export_cached(golden_dir / "checkpoint.pth", int(w), int(h), 16, tmp_path / "cache", lean=False)
    cmd = [sys.executable, "-m", "human3r_edge"]
    assert subprocess.run(cmd + ["build", "--onnx-dir", str(onnx_dir), "--out", str(engines), "--precision", "fp32",
                                 "--no-progress"]).returncode == 0
    proc = subprocess.run(cmd + ["check", "--backend", "trt", "--golden", str(golden_dir), "--engines", str(engines),
                                 "--onnx-dir", str(onnx_dir), "--preprocessed"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
