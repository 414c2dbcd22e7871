"""Corrupt files are clear errors (issue 14): truncations and byte flips of an export folder's files, a checkpoint
and an SMPL-X file each end in exit 2 with a Human3RError naming the file, no traceback, no hang, nothing
written outside --out. A small budget here; benchmarks/fuzz_files.py runs 500+ cases (results committed)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def fuzz_inputs(tmp_path_factory, goldens):
    from support.toy_export import write_toy_export

    from human3r_edge.benchmarks import fuzz_files
    from human3r_edge.runtime.integrity import write_checksums
    from human3r_edge.runtime.iospec import SPEC_FILE

    d = tmp_path_factory.mktemp("fuzz")
    spec = write_toy_export(d / "toy", width=64, height=48, lean=True, fp16=False)
    write_checksums(d / "toy", [SPEC_FILE, "initial_state.npz", *(g.file for g in spec.graphs)])
    return fuzz_files.make_inputs(d / "inputs", goldens / "smplx_synthetic" / "SMPLX_NEUTRAL.npz",
                                  goldens / "tiny_a" / "checkpoint.pth", export=d / "toy")


def test_fuzz_small_budget(fuzz_inputs, tmp_path):
    from human3r_edge.benchmarks import fuzz_files

    fuzz_files.warm_imports()
    cases = fuzz_files.plan(24, fuzz_inputs, seed=int(os.environ.get("H3R_FUZZ_SEED", "3")))
    assert {c.file for c in cases} >= set(fuzz_files.EXPORT_FILES) | {"checkpoint.pth", "SMPLX_NEUTRAL.npz"}
    results = fuzz_files.run_all(cases, fuzz_inputs, timeout=60.0, jobs=2, scratch=tmp_path)
    bad = [(r.case, r.reason, r.message) for r in results if r.outcome == "FAIL"]
    assert not bad, bad
    assert sum(r.outcome == "pass" for r in results) >= 20  # benign: zip bytes no reader uses (rare)


@pytest.mark.parametrize("name", ["encoder.onnx", "initial_state.npz", "export.json"])
def test_damaged_export_without_checksums_is_exit_2(fuzz_inputs, tmp_path, name):
    """An export without checksums.sha256 (older exports): the parsers' errors become one Human3RError line
    naming the file, through the console script (the issue's InvalidProtobuf / BadZipFile tracebacks)."""
    import shutil

    exp = tmp_path / "export"
    shutil.copytree(fuzz_inputs["export"], exp)
    (exp / "checksums.sha256").unlink()
    data = (exp / name).read_bytes()
    (exp / name).write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "human3r_edge", "run", str(fuzz_inputs["video"]), "--engines",
                           str(exp), "--smplx-model", str(fuzz_inputs["smplx"]), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and name in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()  # damaged model files are found before --out is created


def test_verify_export_names_the_file(fuzz_inputs, tmp_path):
    import shutil

    from human3r_edge.errors import Human3RError
    from human3r_edge.runtime.integrity import verify_export

    exp = tmp_path / "export"
    shutil.copytree(fuzz_inputs["export"], exp)
    assert verify_export(exp) is True
    p = exp / "decoder.onnx"
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0x10
    p.write_bytes(bytes(b))
    with pytest.raises(Human3RError, match=r"decoder\.onnx \| corrupt or truncated"):
        verify_export(exp)
    (exp / "checksums.sha256").write_text("zz  decoder.onnx\n")
    with pytest.raises(Human3RError, match=r"checksums\.sha256 \| line 1 is corrupt"):
        verify_export(exp)


def test_exporter_writes_checksums(tmp_path_factory):
    """The exporter's last step lists every file it wrote in checksums.sha256, and the export verifies."""
    from support.exports import random_tiny_export

    from human3r_edge.runtime.integrity import read_checksums, verify_export

    exp = random_tiny_export(tmp_path_factory)  # shared with the exporter's tests (made once per session)
    listed = set(read_checksums(exp / "checksums.sha256"))
    on_disk = {p.name for p in exp.iterdir() if p.is_file() and not p.name.startswith(".")} - {"checksums.sha256"}
    assert listed == on_disk and verify_export(exp) is True
