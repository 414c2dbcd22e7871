"""`human3r-edge check` compares what is deployed, and refuses cleanly when a tool is missing (issue 13)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

from human3r_edge.runtime.iospec import ExportSpec
from support.fake_gpu import fake_gpu  # noqa: F401  (fixture)
from support.toy_export import write_toy_export


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy_check_gpu")
    write_toy_export(d)
    return d


@pytest.mark.parametrize("backend", ["ort-cuda", "ort-trt"])
def test_check_and_run_build_identical_provider_options(toy, backend, monkeypatch):
    """Bug 2: polygraphy's ONNX Runtime session in `check` gets exactly the (name, options) list `run` uses,
    not bare names (CUDA EP defaults to TF32; TensorRT EP to FP32 with no engine cache)."""
    import polygraphy.backend.onnxrt as pg

    from human3r_edge.runtime.commands import check, run

    seen: dict = {}

    class RecordingSessionFromOnnx:  # polygraphy's loader, recording what it would hand ONNX Runtime
        def __init__(self, model, providers=None, **kw):
            seen["providers"] = providers

    monkeypatch.setattr(pg, "SessionFromOnnx", RecordingSessionFromOnnx)
    monkeypatch.setattr(pg, "OnnxrtRunner", lambda loader, name=None: loader)
    check._candidate_runner(backend, toy, "decoder", ExportSpec.load(toy), toy)
    deployed = run._open_backend(argparse.Namespace(backend=backend, threads=None), toy).providers()
    assert seen["providers"] == deployed
    opts = dict(p for p in deployed if isinstance(p, tuple))
    assert opts["CUDAExecutionProvider"]["use_tf32"] == "0"
    if backend == "ort-trt":
        trt = opts["TensorrtExecutionProvider"]
        assert trt["trt_fp16_enable"] == "1" and trt["trt_engine_cache_enable"] == "1"


def test_check_without_polygraphy_is_unavailable_exit_3(toy, monkeypatch, capsys, tmp_path):
    """Bug 6: a Jetson without polygraphy gets exit 3 and the install line, not a ModuleNotFoundError."""
    from human3r_edge.cli import main

    monkeypatch.setitem(sys.modules, "polygraphy", None)
    code = main(["check", "--backend", "ort-cuda", "--golden", str(tmp_path), "--engines", str(toy)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "polygraphy" in err and "pip install polygraphy" in err and "Traceback" not in err


@pytest.mark.parametrize("torch_installed", [True, False])
def test_check_without_golden_runs_the_kernels_against_a_self_made_reference(fake_gpu, tmp_path_factory, tmp_path,
                                                                            monkeypatch, capsys, torch_installed):
    """Risks 14 and 16: with no --golden, `check --backend trt` replays seeded frames through the engines the way
    `run` does (GPU preprocessing into the engine inputs, CUDA skinning) and through the PyTorch reference on the
    same export where torch is installed, else ort-cpu (torch hidden here), saying which in the report and the
    JSON summary; the recorded encoder inputs are the images the kernels wrote (read back from the device)."""
    import json

    if torch_installed:
        pytest.importorskip("torch")
    else:
        monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, find_spec("torch") is None
    from human3r_edge.cli import main
    from human3r_edge.export.trt_build import BuildOptions, build_engines
    from human3r_edge.runtime.commands import check
    from support.exports import random_tiny_export

    export = random_tiny_export(tmp_path_factory)
    engines = tmp_path / "engines"
    build_engines(export, engines, BuildOptions(precision="fp32", progress=False))
    # polygraphy's TrtRunner drives CUDA through libcudart itself (not the stand-in): the candidate of the
    # per-engine comparison is ONNX Runtime CPU here; the replay above it is what this test is about
    monkeypatch.setattr(check, "_candidate_runner",
                        lambda backend, directory, graph, spec, onnx_dir, **kw:
                        check._reference_runner(onnx_dir / spec.graph(graph).file, graph))
    seen = {}
    real = check.polygraphy_compare

    def spy(graph, ref, cand, feeds, atol, rtol):
        seen[graph] = feeds
        return real(graph, ref, cand, feeds, atol, rtol)

    monkeypatch.setattr(check, "polygraphy_compare", spy)
    code = main(["check", "--backend", "trt", "--engines", str(engines), "--onnx-dir", str(export),
                 "--json", str(tmp_path / "check.json")])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    ref = "torch" if torch_installed else "ort-cpu"
    assert f"reference {ref} on" in out.out and "preprocessing on the GPU" in out.out
    assert f"PASSED: check trt on a self-made reference ({ref})" in out.out
    summary = json.loads((tmp_path / "check.json").read_text())
    assert summary["reference"] == ref and summary["passed"] is True and summary["backend"] == "trt"
    assert ("PyTorch reference" in summary["reference_reason"]) if torch_installed else \
        ("torch is not installed" in summary["reference_reason"])
    kernels = {op.split()[1] for op in fake_gpu.dev.log if op.startswith("kernel ")}
    assert {"pil_resize_h_kernel", "bilinear_pad_kernel"} <= kernels
    assert any("skin" in k for k in kernels)
    enc = seen["encoder"]
    assert enc and all(np.isfinite(f["img"]).all() and np.abs(f["img"]).max() <= 1.0 for f in enc)
    assert fake_gpu.dev.bytes_in_use == 0 and not fake_gpu.dev.live_pinned
