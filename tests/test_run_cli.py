"""`human3r-edge run` end to end over a fake export backend: outputs, summary line, exit codes, bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from human3r_edge.runtime.backends import BACKENDS
from support.run_cli import base_args, export_dir, fake_backend, run, write_video  # noqa: F401  (fixtures)


def test_run_writes_every_output(tmp_path, fake_backend, export_dir, synthetic_smplx, capsys):
    src = write_video(tmp_path / "v.mp4")
    out = tmp_path / "out"
    rc = run(*base_args(src, export_dir, synthetic_smplx, out), "--save-depth", "--save-meshes", "--preview",
             "--reset-interval", "4", "--conf-threshold", "1.0")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    line = captured.out.strip().splitlines()[-1]
    assert line.startswith("human3r-edge run | 6 frames in ") and "FPS" in line and "tracks" in line
    assert np.loadtxt(out / "trajectory.tum").shape == (6, 8)
    assert len(json.loads((out / "cameras.json").read_text())["frames"]) == 6
    tracks = sorted((out / "people").glob("track_*.npz"))
    assert tracks
    with np.load(tracks[0]) as z:
        assert {"frame_index", "body_pose", "transl", "transl_head_cam", "betas"} <= set(z.files)
    assert (out / "scene.ply").read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    assert len(list((out / "depth").glob("*.npy"))) == 6
    assert len(list((out / "meshes").glob("*.ply"))) >= 6
    cap = cv2.VideoCapture(str(out / "preview.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 6 and summary["backend"] == "ort-cpu" and not summary["interrupted"]
    assert {"encoder", "decoder", "preprocess", "outputs_wait"} <= set(summary["stage_ms_mean"])
    assert summary["settings"]["reset_interval"] == 4 and "numpy" in summary["versions"]
    assert summary["settings"]["skinning_used"] in ("cpu-native", "cpu-numpy")


def test_image_folder_portrait_and_fit(tmp_path, fake_backend, export_dir, synthetic_smplx, capsys):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(3):
        Image.fromarray(np.full((200, 150, 3), 40 * i, np.uint8)).save(d / f"f{i}.png")
    assert run(*base_args(d, export_dir, synthetic_smplx, tmp_path / "a")) == 2
    assert "does not preprocess to the export resolution" in capsys.readouterr().err
    assert run(*base_args(d, export_dir, synthetic_smplx, tmp_path / "b"), "--fit", "crop", "--no-scene") == 0
    assert np.loadtxt(tmp_path / "b" / "trajectory.tum").shape == (3, 8)
    assert not (tmp_path / "b" / "scene.ply").exists()


def test_bad_inputs_exit_2_with_clear_errors(tmp_path, fake_backend, export_dir, synthetic_smplx, capsys):
    out = tmp_path / "o"
    src = write_video(tmp_path / "v.mp4", n=2)
    cases = [
        (base_args(tmp_path / "missing.mp4", export_dir, synthetic_smplx, out), "not found"),
        (base_args(src, export_dir, tmp_path / "nope.npz", out), "--smplx-model"),
        (base_args(src, tmp_path, synthetic_smplx, out), "no export.json"),
        (base_args(src, export_dir, synthetic_smplx, tmp_path / "v.mp4" / "sub"), "not writable"),
        (base_args(src, export_dir, synthetic_smplx, out) + ["--reset-interval", "0"], "--reset-interval"),
        (base_args(src, export_dir, synthetic_smplx, out) + ["--max-people", "9"], "max_people"),
    ]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 50)
    cases.append((base_args(bad, export_dir, synthetic_smplx, out), "cannot be opened"))
    empty = tmp_path / "empty.avi"
    vw = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    vw.release()
    cases.append((base_args(empty, export_dir, synthetic_smplx, out), "contains no frames"))
    for argv, text in cases:
        assert run(*argv) == 2, argv
        err = capsys.readouterr().err
        assert text in err, (argv, err)
        assert "Traceback" not in err


def test_backend_unavailable_exit_3(tmp_path, export_dir, synthetic_smplx, capsys, monkeypatch):
    monkeypatch.setitem(BACKENDS, "trt", "human3r_edge.runtime.backends.no_such_module:Nope")
    src = write_video(tmp_path / "v.mp4", n=1)
    argv = base_args(src, export_dir, synthetic_smplx, tmp_path / "o")
    argv[argv.index("ort-cpu")] = "trt"
    assert run(*argv) == 3
    assert "backend unavailable" in capsys.readouterr().err


def test_gpu_skinning_without_pycuda_exit_3(tmp_path, fake_backend, export_dir, synthetic_smplx, capsys,
                                           monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    src = write_video(tmp_path / "v.mp4", n=1)
    assert run(*base_args(src, export_dir, synthetic_smplx, tmp_path / "o"), "--skinning", "gpu") == 3
    assert "CUDA skinning unavailable" in capsys.readouterr().err


def test_checkpoint_export_failure_is_clear(tmp_path, fake_backend, synthetic_smplx, capsys):
    src = write_video(tmp_path / "v.mp4", n=1)
    ckpt = tmp_path / "broken.pth"
    ckpt.write_bytes(b"not a checkpoint")
    rc = run(src, "--checkpoint", ckpt, "--smplx-model", synthetic_smplx, "--out", tmp_path / "o", "--no-progress",
             "--cache-dir", tmp_path / "cache")
    assert rc == 2
    err = capsys.readouterr().err
    assert "on-the-fly export failed" in err and "--resolution 512x384" in err  # 200x150 at --size 512


def test_ctrl_c_leaves_valid_outputs(tmp_path, fake_backend, export_dir, synthetic_smplx, capsys, monkeypatch):
    from human3r_edge.runtime.outputs import writer as outputs

    real_add = outputs.BackgroundWriter.add
    calls = {"n": 0}

    def add(self, r):  # Ctrl-C arrives in the main thread while it hands over the 4th frame
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        real_add(self, r)

    monkeypatch.setattr(outputs.BackgroundWriter, "add", add)
    src = write_video(tmp_path / "v.mp4", n=8)
    out = tmp_path / "out"
    assert run(*base_args(src, export_dir, synthetic_smplx, out), "--preview") == 130
    assert "(interrupted by SIGINT)" in capsys.readouterr().out
    assert np.loadtxt(out / "trajectory.tum").shape == (3, 8)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["frames"] == 3
    assert summary["status"] == "interrupted" and summary["exit_code"] == 130
    cap = cv2.VideoCapture(str(out / "preview.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_help_lists_the_contract_flags():
    proc = subprocess.run([sys.executable, "-m", "human3r_edge", "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for flag in ("--engines", "--checkpoint", "--smplx-model", "--backend", "--out", "--reset-interval", "--no-ttt3r",
                 "--max-people", "--save-depth", "--save-meshes", "--preview"):
        assert flag in proc.stdout


def test_run_on_a_toy_onnx_export_with_the_real_ort_cpu_backend(tmp_path, synthetic_smplx, capsys):
    """The real OrtCpuBackend (state ping-pong, linked inputs) under the CLI, on the backend engineer's toy
    export (real tensor names/shapes, arbitrary math); two runs give identical files (deterministic)."""
    pytest.importorskip("onnxruntime")
    from support.toy_export import write_toy_export

    export = tmp_path / "toy"
    write_toy_export(export, lean=True, fp16=False)
    src = write_video(tmp_path / "v.mp4", n=5)  # 200x150 -> 64x48 at the toy's size
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        rc = run(src, "--engines", export, "--smplx-model", synthetic_smplx, "--backend", "ort-cpu", "--out", out,
                 "--no-progress", "--reset-interval", "3", "--threads", "1", "--conf-threshold", "0")
        assert rc == 0, capsys.readouterr().err
        outs.append(out)
    a, b = (np.loadtxt(o / "trajectory.tum") for o in outs)
    assert a.shape == (5, 8) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    summary = json.loads((outs[0] / "summary.json").read_text())
    assert summary["backend"] == "ort-cpu" and summary["frames"] == 5
    assert "reset_duplicate" in summary["stage_ms_mean"]


def test_demo_sample_video_preprocesses_to_the_tiny_resolution(tmp_path):
    from human3r_edge.runtime import preprocess as pp
    from human3r_edge.runtime.commands.demo import _model_resolution, make_sample_video

    path = make_sample_video(tmp_path / "s.mp4", frames=5)
    with open_source_frames(path) as frames:
        assert len(frames) == 5
        h, w = pp.output_shape(frames[0].shape[1], frames[0].shape[0], 128)
    assert (w, h) == _model_resolution() == (128, 96)


class open_source_frames:
    def __init__(self, path):
        from human3r_edge.runtime.video import open_source

        self.src = open_source(path)

    def __enter__(self):
        return [f.image for f in self.src]

    def __exit__(self, *exc):
        self.src.close()


@pytest.mark.slow
def test_demo_end_to_end_writes_every_output(tmp_path):
    """`human3r-edge demo` (what `make demo` runs) on a fresh folder; each output file is parsed."""
    import importlib.util

    for mod in ("human3r_edge.export.assets", "human3r_edge.export.onnx_export"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not written yet (make-assets / export belong to the exporter); the demo "
                        "needs both")
    out = tmp_path / "demo_out"
    proc = subprocess.run([sys.executable, "-m", "human3r_edge", "demo", "--out", str(out), "--frames", "24"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "untrained" in proc.stdout and "Preview:" in proc.stdout
    run_dir = out / "run"
    tum = np.loadtxt(run_dir / "trajectory.tum")
    assert tum.shape == (24, 8) and np.all(np.isfinite(tum))
    cams = json.loads((run_dir / "cameras.json").read_text())
    assert len(cams["frames"]) == 24
    data = (run_dir / "scene.ply").read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode()
    n = int(header.split("element vertex ")[1].split()[0])
    assert "binary_little_endian" in header and len(data) - end == 15 * n
    for t in (run_dir / "people").glob("track_*.npz"):
        with np.load(t) as z:
            assert {"frame_index", "global_orient", "body_pose", "betas", "expression", "transl"} <= set(z.files)
    cap = cv2.VideoCapture(str(run_dir / "preview.mp4"))
    ok, frame = cap.read()
    assert ok and frame.ndim == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["frames"] == 24 and summary["backend"] == "ort-cpu"


def test_soak_benchmark_smoke(tmp_path, synthetic_smplx):
    """benchmarks/soak.py end to end on a toy ONNX export (a few frames): it writes its JSON and markdown."""
    pytest.importorskip("onnxruntime")
    from human3r_edge.benchmarks import soak
    from support.toy_export import write_toy_export

    export = tmp_path / "toy"
    write_toy_export(export, lean=True, fp16=False)
    out = tmp_path / "soak.json"
    assert soak.main(["--engines", str(export), "--frames", "24", "--warmup", "8", "--window", "8",
                      "--check-every", "4", "--smplx-model", str(synthetic_smplx), "--threads", "1",
                      "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["frames"] == 24 and r["state_finite"] is True and len(r["latency_windows"]) == 2
    assert set(r["pass"]) == {"rss_drift_lt_2pct", "state_finite", "latency_stable_15pct", "latency_floor_stable_15pct"}
    assert out.with_suffix(".md").read_text().startswith("# Soak: tiny 64x48 on ort-cpu")
