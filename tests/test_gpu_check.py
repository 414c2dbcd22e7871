"""benchmarks/gpu_check.sh's CPU dry run: every step runs (on the CPU, tiny config) within the budget and the log
names each step; the real run needs a GPU (issue 13)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "PYTHON": sys.executable, "GPU_CHECK_BUDGET_S": "420"}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    log = (tmp_path / "gpu_check.log").read_text()
    for step in ("1. GPU and standalone kernels", "2. gpu-marked tests", "3. kernels", "4. PyTorch reference",
                 "5. ort-cuda end to end"):
        assert f"== {step}" in log, log[-2000:]
    assert "gpu_torch | tiny fp32" in log
    assert "human3r-edge doctor" in log
    assert res.returncode == 0, log[-3000:]
    assert (tmp_path / "gpu_torch_cpu-dry-run.md").is_file()
