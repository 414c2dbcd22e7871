"""Helpers of the `human3r-edge run` tests: a fake export backend (fixtures), a synthetic video, the CLI call."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from human3r_edge.cli import main
from human3r_edge.runtime.backends import BACKENDS
from support.doubles import write_fake_export


@pytest.fixture
def fake_backend(monkeypatch):
    monkeypatch.setitem(BACKENDS, "ort-cpu", "support.doubles:FakeExportBackend")


@pytest.fixture
def export_dir(tmp_path):
    return write_fake_export(tmp_path / "export")


def write_video(path, n=6, w=200, h=150, fps=10.0):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    rng = np.random.default_rng(0)
    for _ in range(n):
        vw.write(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    vw.release()
    return path


def run(*argv):
    return main(["run", *map(str, argv)])


def base_args(src, export_dir, smplx, out):
    return [src, "--engines", export_dir, "--smplx-model", smplx, "--backend", "ort-cpu", "--out", out,
            "--no-progress"]
