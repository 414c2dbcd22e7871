"""`human3r-edge replay` and `compare` as commands: the README flow end to end, backend dispatch, no torch
import in the runtime modules."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from human3r_edge.cli import main as cli
from human3r_edge.runtime.commands import replay as R
from human3r_edge.errors import Human3RError


def test_replay_then_compare_passes(golden_dir, require_golden, tmp_path, capsys):
    out = tmp_path / "out.npz"
    rc = cli(["replay", "--golden", str(golden_dir), "--backend", "torch", "--out", str(out), "--preprocessed"])
    assert rc == 0 and out.is_file()
    assert "steps" in capsys.readouterr().out
    with np.load(out) as z:
        assert "step/camera_pose" in z.files and "smplx/v3d_world" in z.files
    rc = cli(["compare", str(out), str(golden_dir / "golden.npz")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1].startswith("PASSED"), "\n".join(lines[-5:])
    # a reference that differs by more than the tolerance in one key: compare must notice
    with np.load(golden_dir / "golden.npz") as z:
        other = {k: z[k] for k in z.files}
    other["step/camera_pose"] = other["step/camera_pose"] * np.float32(1.001)
    np.savez(tmp_path / "other.npz", **other)
    rc = cli(["compare", str(out), str(tmp_path / "other.npz")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 1 and lines[-1].startswith("FAILED") and "step/camera_pose" in "\n".join(lines)


def test_backend_dispatch(tmp_path, golden_dir, require_golden, monkeypatch):
    monkeypatch.delitem(R.REPLAYERS, "trt", raising=False)  # a known backend without a registered replayer
    with pytest.raises(Human3RError, match="backend trt not wired yet"):
        R.replay(golden_dir, backend="trt")
    with pytest.raises(Human3RError, match="unknown backend"):
        R.replay(golden_dir, backend="tensorflow")
    with pytest.raises(Human3RError, match="unknown reference"):
        R.replay(golden_dir, reference="other.npz")
    with pytest.raises(Human3RError, match="not a folder"):
        R.replay(tmp_path / "absent")
    assert R.replayer("torch").__name__ == "replay_golden"


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    rc = cli(["replay", "--golden", str(tmp_path / "absent"), "--out", str(tmp_path / "o.npz")])
    assert rc == 2 and "not a folder" in capsys.readouterr().err


def test_runtime_modules_do_not_import_torch():
    code = ("import sys; import human3r_edge.runtime.commands.replay, human3r_edge.runtime.commands.compare; "
            "human3r_edge.runtime.commands.replay.replayer('torch') if False else None; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
