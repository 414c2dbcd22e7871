"""benchmarks/gpu_kernels.py on this CPU machine: it stops with the reason without pycuda, and its committed H200
result is well formed (the report regenerates from the JSON, every error within the kernels' tolerances)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from human3r_edge.benchmarks import gpu_kernels

RESULT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gpu_kernels_nvidia-h200.json"


def test_without_pycuda_it_says_so(capsys):
    try:
        import pycuda  # noqa: F401
    except ImportError:
        assert gpu_kernels.main(["--iters", "1"]) == 2
        assert "pycuda is not installed" in capsys.readouterr().err
    else:
        pytest.skip("pycuda is installed here; benchmarks/gpu_check.sh covers the real run")


def test_bad_iters_is_an_error():
    with pytest.raises(Exception, match="--iters must be >= 1"):
        gpu_kernels.main(["--iters", "0"])


def test_committed_h200_result_is_consistent():
    r = json.loads(RESULT.read_text())
    assert r["machine"]["gpu"] == "NVIDIA H200" and r["machine"]["compute_capability"] == [9, 0]
    assert {(s["storage"], s["people"]) for s in r["skinning"]} == {(d, p) for d in ("float32", "float16")
                                                                     for p in (1, 4, 16)}
    assert all(s["max_abs_err_m"] <= 1e-5 for s in r["skinning"])  # issue 3: kernels within 1e-5 m of numpy
    assert all(p["max_err_uint8_steps"] <= 1.0 for p in r["preprocess"])  # issue 6: within one uint8 step
    assert "FAIL" not in r["standalone"] and r["standalone"].count(" OK ") == 9
    md = gpu_kernels.markdown(r)
    assert md == (RESULT.with_suffix(".md")).read_text()
