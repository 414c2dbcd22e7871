"""`human3r-edge run` tells the truth (issue 14): summary.json `status`, distinct exit codes, incomplete input,
failures that leave nothing complete-looking, --out ownership, and the small fixes (help defaults, export
without torch, early --out checks, any SMPL-X file name)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from support.mp4_faststart import faststart
from support.run_cli import base_args, export_dir, fake_backend, run, write_video  # noqa: F401  (fixtures)


def summary(out):
    return json.loads((out / "summary.json").read_text())


def test_truncated_faststart_video_is_incomplete_input(tmp_path, fake_backend, export_dir, synthetic_smplx,
                                                       capsys):
    src = write_video(tmp_path / "v.mp4", n=48)
    data = faststart(src.read_bytes())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the container still announces 48 frames
    out = tmp_path / "o"
    assert run(*base_args(cut, export_dir, synthetic_smplx, out), "--no-scene") == 0
    s = summary(out)
    assert s["status"] == "incomplete_input" and s["exit_code"] == 0 and not s["interrupted"]
    assert s["input"]["frames_expected"] == 48 and s["input"]["frames_decoded"] == s["frames"] < 48
    assert "(incomplete input: video decoding stopped after" in capsys.readouterr().out
    assert run(*base_args(cut, export_dir, synthetic_smplx, tmp_path / "strict"), "--no-scene", "--strict") == 4
    assert summary(tmp_path / "strict")["status"] == "incomplete_input"


def test_corrupt_image_in_a_folder_is_skipped_and_recorded(tmp_path, fake_backend, export_dir, synthetic_smplx):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(6):
        Image.fromarray(np.full((150, 200, 3), 30 * i, np.uint8)).save(d / f"f{i}.jpg")
    (d / "f3.jpg").write_bytes((d / "f3.jpg").read_bytes()[:200])  # a truncated JPEG
    out = tmp_path / "o"
    assert run(*base_args(d, export_dir, synthetic_smplx, out), "--no-scene") == 0
    s = summary(out)
    assert s["status"] == "incomplete_input" and s["frames"] == 5
    assert s["input"]["frames_expected"] == 6 and s["input"]["frames_decoded"] == 5
    assert [x["file"] for x in s["input"]["skipped"]] == ["f3.jpg"] and s["input"]["skipped"][0]["position"] == 3
    assert np.loadtxt(out / "trajectory.tum").shape == (5, 8)


def test_failure_mid_run_is_recorded_and_nothing_looks_complete(tmp_path, fake_backend, export_dir,
                                                                synthetic_smplx, capsys):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(4):
        Image.fromarray(np.full((150, 200, 3), 50 * i, np.uint8)).save(d / f"f{i}.png")
    Image.fromarray(np.zeros((200, 150, 3), np.uint8)).save(d / "f4.png")  # portrait: refused mid-stream
    out = tmp_path / "o"
    assert run(*base_args(d, export_dir, synthetic_smplx, out)) == 2
    assert "does not preprocess to the export resolution" in capsys.readouterr().err
    s = summary(out)
    assert s["status"] == "failed" and s["exit_code"] == 2 and s["error"]["type"] == "Human3RError"
    assert s["frames"] == np.loadtxt(out / "trajectory.tum", ndmin=2).shape[0] == 4


def test_internal_error_is_exit_1_with_status_failed(tmp_path, fake_backend, export_dir, synthetic_smplx,
                                                     monkeypatch):
    from human3r_edge.runtime.outputs import writer as outputs

    def boom(self, r):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(outputs.OutputWriter, "add", boom)
    out = tmp_path / "o"
    with pytest.raises(RuntimeError, match="disk on fire"):  # the console script prints it and exits 1
        run(*base_args(write_video(tmp_path / "v.mp4"), export_dir, synthetic_smplx, out))
    s = summary(out)
    assert s["status"] == "failed" and s["exit_code"] == 1 and s["frames"] == 0
    assert not (out / "trajectory.tum").exists() and not (out / "scene.ply").exists()


def test_a_previous_run_is_refused_unless_overwrite(tmp_path, fake_backend, export_dir, synthetic_smplx, capsys):
    src = write_video(tmp_path / "v.mp4", n=6)
    out = tmp_path / "o"
    assert run(*base_args(src, export_dir, synthetic_smplx, out), "--save-depth") == 0
    (out / "notes.txt").write_text("mine")
    assert run(*base_args(src, export_dir, synthetic_smplx, out), "--max-frames", "2") == 2
    err = capsys.readouterr().err
    assert "holds the outputs of a previous run" in err and "--overwrite" in err
    assert run(*base_args(src, export_dir, synthetic_smplx, out), "--max-frames", "2", "--overwrite") == 0
    assert not (out / "depth").exists()  # the first run's depth maps are gone, with no trace of them
    assert (out / "notes.txt").read_text() == "mine" and summary(out)["frames"] == 2


def test_run_help_shows_defaults():
    proc = subprocess.run([sys.executable, "-m", "human3r_edge", "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "(default: ort-cpu)" in text and "(default: 256)" in text and "--overwrite" in text


def test_export_without_torch_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from human3r_edge.cli import main\n"
            "sys.exit(main(['export', '--config', 'tiny', '--random-weights', '--resolution', '64x48', '--out', "
            f"{str(tmp_path / 'e')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert "[export]" in proc.stderr and "torch" in proc.stderr and not (tmp_path / "e").exists()


def test_export_bad_out_fails_before_loading(tmp_path, goldens):
    (tmp_path / "file").write_text("x")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "human3r_edge", "export", "--checkpoint",
                           str(goldens / "tiny_a" / "checkpoint.pth"), "--resolution", "64x48", "--out",
                           str(tmp_path / "file")], capture_output=True, text=True)
    assert proc.returncode == 2 and "exists and is not a folder" in proc.stderr, proc.stderr
    assert time.perf_counter() - t0 < 30  # no checkpoint load (imports only)
    proc = subprocess.run([sys.executable, "-m", "human3r_edge", "export", "--checkpoint", str(tmp_path / "nope.pth"),
                           "--resolution", "64x48", "--out", str(tmp_path / "new")], capture_output=True, text=True)
    assert proc.returncode == 2 and not (tmp_path / "new").exists()  # nothing empty left behind


def test_ctrl_c_during_export_is_one_line(tmp_path):
    out = tmp_path / "e"
    proc = subprocess.Popen([sys.executable, "-m", "human3r_edge", "export", "--config", "tiny", "--random-weights",
                             "--resolution", "64x48", "--max-people", "4", "--no-trt-check", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as at a terminal
    t0 = time.monotonic()
    while not out.exists() and time.monotonic() - t0 < 120:  # the export has started writing
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("human3r-edge export | interrupted")
    assert not out.exists()


def test_replay_accepts_any_smplx_file_name(tmp_path, goldens):
    pytest.importorskip("smplx")
    import shutil

    from human3r_edge.export.model.smplx_layer import SmplxLayer

    p = tmp_path / "neutral_model.npz"
    shutil.copyfile(goldens / "smplx_synthetic" / "SMPLX_NEUTRAL.npz", p)
    assert SmplxLayer(p).model.get_num_verts() == 10475
