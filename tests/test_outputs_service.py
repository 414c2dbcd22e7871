"""Outputs as a service needs them (issue 14): file modes honour the umask, the trajectory is the commit record
(written before any per-frame file), scene.ply's lag is bounded in frames, and --out ownership rules."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.outputs.atomic import FILE_MODE, atomic_write
from human3r_edge.runtime.outputs.folder import check_output_dir, claim_output_dir, own_files
from human3r_edge.runtime.outputs.writer import OutputOptions, OutputWriter
from support.session_inputs import FACES, read_ply, results


def test_files_honour_the_umask(tmp_path):
    code = ("import os, sys; os.umask(int(sys.argv[2], 8)); from pathlib import Path\n"
            "from human3r_edge.runtime.outputs.atomic import atomic_write\n"
            "atomic_write(Path(sys.argv[1]), 'x')\n")
    for umask, mode in (("022", 0o644), ("077", 0o600), ("002", 0o664)):
        p = tmp_path / f"f{umask}"
        subprocess.run([sys.executable, "-c", code, str(p), umask], check=True)
        assert stat.S_IMODE(p.stat().st_mode) == mode, (umask, oct(p.stat().st_mode))
    atomic_write(tmp_path / "here", "x")
    assert stat.S_IMODE((tmp_path / "here").stat().st_mode) == FILE_MODE


def test_trajectory_is_written_before_the_frame_files(tmp_path, monkeypatch):
    """Each frame's trajectory line is on disk before its depth, mesh or people entry: a kill at any point
    leaves no per-frame file beyond the trajectory."""
    from human3r_edge.runtime.outputs import writer as outputs

    seen = []
    real = outputs.atomic_file

    def spy(path):
        traj = tmp_path / "o" / "trajectory.tum"
        n = len(traj.read_text().splitlines()) if traj.is_file() else 0
        name = os.path.basename(path)
        if name[:6].isdigit():
            seen.append((int(name[:6]), n))
        return real(path)

    monkeypatch.setattr(outputs, "atomic_file", spy)
    opts = OutputOptions(save_depth=True, save_meshes=True, flush_seconds=0.0)
    with OutputWriter(tmp_path / "o", opts, faces=FACES) as w:
        for r in results(4):
            w.add(r)
    assert seen and all(index < committed for index, committed in seen), seen


def test_scene_lag_is_bounded_in_frames(tmp_path):
    opts = OutputOptions(scene_flush_frames=3, scene_flush_seconds=1e9, flush_seconds=1e9, conf_threshold=0.0,
                         mask_threshold=1.0)
    w = OutputWriter(tmp_path / "o", opts, faces=FACES)
    fused = []
    for r in results(8):
        w.add(r)
        ply = tmp_path / "o" / "scene.ply"
        if ply.is_file():
            header, _ = read_ply(ply)
            fused.append(int(next(x for x in header if x.startswith("comment frames")).split()[-1]))
        else:
            fused.append(0)
        assert w.frames - fused[-1] < 3
    w.close()
    header, _ = read_ply(tmp_path / "o" / "scene.ply")
    assert "comment frames 8" in header and fused == [0, 0, 3, 3, 3, 6, 6, 6]


def test_nothing_written_without_frames(tmp_path):
    """A run that fails before its first frame leaves no empty trajectory or 0-point scene."""
    w = OutputWriter(tmp_path / "o", OutputOptions())
    w.close({"status": "failed"})
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["people", "summary.json"]


def test_output_folder_ownership(tmp_path):
    out = tmp_path / "out"
    assert check_output_dir(out) == out and not out.exists()  # checked, not created
    claim_output_dir(out)
    for name in ("summary.json", "trajectory.tum", "scene.ply", "people/track_0001.npz", "depth/000003.npy",
                 "meshes/000003_track_0001.ply", ".preview.partial.mp4", ".cameras.json.abc123.tmp", "mine.txt",
                 "depth/notes.txt"):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text("x")
    assert {p.name for p in own_files(out)} == {"summary.json", "trajectory.tum", "scene.ply", "track_0001.npz",
                                                "000003.npy", "000003_track_0001.ply", ".preview.partial.mp4",
                                                ".cameras.json.abc123.tmp"}
    with pytest.raises(Human3RError, match="holds the outputs of a previous run.*Hint: pass --overwrite"):
        check_output_dir(out)
    _, removed = claim_output_dir(out, overwrite=True)
    assert removed == 8
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert left == ["depth", "depth/notes.txt", "mine.txt"]  # never anything else; people/, meshes/ removed
    check_output_dir(out)  # a folder of foreign files only is not a previous run
    (tmp_path / "file").write_text("x")
    with pytest.raises(Human3RError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(Human3RError, match="not writable"):
        check_output_dir(tmp_path / "file" / "sub")


def test_second_stop_drops_the_queue_but_keeps_what_was_written(tmp_path):
    from human3r_edge.runtime.outputs.writer import BackgroundWriter

    w = BackgroundWriter(OutputWriter(tmp_path / "o", OutputOptions(scene=False), faces=FACES), queue_size=64)
    rs = results(12)
    for r in rs:
        w.add(r)
    w.hurry()
    w.close()
    traj = tmp_path / "o" / "trajectory.tum"
    n = len(traj.read_text().splitlines()) if traj.is_file() else 0  # the worker may not have started one
    assert n == w.writer.frames and n + w.dropped == 12 and w.dropped > 0
    if n:
        with np.load(next((tmp_path / "o" / "people").glob("*.npz"))) as z:
            assert z["frame_index"].max() < n
