"""`human3r-edge doctor` and `run --backend trt` on this machine (no GPU; tensorrt-stubs only), and through the
stand-in (issue 13)."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from human3r_edge.cli import main
from human3r_edge.runtime.commands import doctor
from support.fake_gpu import fake_gpu  # noqa: F401  (fixture)


def _stubs_only() -> bool:
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin in (None, "namespace")  # tensorrt-stubs: a folder of .pyi files


def test_doctor_json_here(capsys):
    code = main(["doctor", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["backends"]["ort-cpu"]["ok"] is True
    trt = out["backends"]["trt"]
    assert trt["ok"] is False
    if _stubs_only():
        assert "only type stubs" in trt["reason"]
    else:
        assert "tensorrt" in trt["reason"]
    assert code == 0 and out["exit"] == 0  # no --backend: 0 while some backend works (ort-cpu does)
    assert "numpy/onnxruntime" in out["checks"] and "kernels ptx" in out["checks"]


def test_doctor_exit_3_when_a_requested_backend_does_not_work(capsys):
    assert main(["doctor", "--backend", "trt"]) == 3
    cap = capsys.readouterr()
    assert "unavailable: trt" in cap.out and "Traceback" not in cap.err
    assert main(["doctor", "--backend", "ort-cpu"]) == 0
    capsys.readouterr()
    assert main(["doctor", "--backend", "ort-cpu", "--backend", "trt", "--json"]) == 3


def test_doctor_bad_backend_is_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["doctor", "--backend", "fpga"])
    assert e.value.code == 2


def test_doctor_on_the_stand_in_reports_gpu_context_and_ptx(fake_gpu, capsys):
    """With (fake) TensorRT and pycuda: trt usable, the GPU identified, the PTX for sm_87 picked, nothing left
    allocated and no context left current."""
    code = main(["doctor", "--backend", "trt", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out["backends"]["trt"]
    gpu = out["checks"]["gpu"]["value"]
    assert gpu["compute_capability"] == "8.7" and gpu["free_mb"] > 0
    assert out["checks"]["kernels ptx"]["value"]["arch"] == "sm_87"
    assert out["checks"]["tensorrt"]["value"] == fake_gpu.trt.__version__
    assert fake_gpu.dev.context_depth == 0 and fake_gpu.dev.bytes_in_use == 0


def test_elf_reader_matches_readelf():
    import shutil
    import subprocess

    links = doctor.ort_provider_links()
    if not links:
        pytest.skip("onnxruntime-gpu provider libraries not installed")
    if shutil.which("readelf") is None:
        pytest.skip("readelf not installed (the pure-Python reader is still used by the pairing test)")
    import onnxruntime

    from pathlib import Path

    lib = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    text = subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout
    want = [line.split("[", 1)[1].rstrip("]") for line in text.splitlines() if "(NEEDED)" in line]
    assert doctor.elf_needed(lib) == want


def test_run_backend_trt_here_is_exit_3_with_the_real_reason(tmp_path, capsys, synthetic_smplx):
    """Risk 17: `run --backend trt` in a `make setup` venv: exit 3, "only type stubs", no traceback (the run
    summary's version collection must not mask it with AttributeError)."""
    import numpy as np
    from PIL import Image

    from support.doubles import write_fake_export

    if "tensorrt" in sys.modules and getattr(sys.modules["tensorrt"], "Runtime", None) is not None:
        pytest.skip("a real tensorrt is importable here")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(
            frames / f"{i}.png")
    export = write_fake_export(tmp_path / "export")
    code = main(["run", str(frames), "--engines", str(export), "--smplx-model", str(synthetic_smplx), "--backend",
                 "trt", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "Traceback" not in err and "AttributeError" not in err
    assert ("only type stubs" in err) if _stubs_only() else ("tensorrt" in err)


def test_versions_survive_a_stub_tensorrt_module(monkeypatch):
    import types

    from human3r_edge.runtime.commands import run

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # what tensorrt-stubs imports as
    assert "stubs" in run._versions("trt")["tensorrt"]
