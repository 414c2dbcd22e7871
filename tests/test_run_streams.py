"""`human3r-edge run A B C ...` (issue 16): several sources batched through one `--streams 3` export of tiny_a.

Each stream's folder holds exactly the files a single-source run of that source writes, with the same results
(trajectory within 3e-5 max|ref|, identical track ids); OUT/summary.json aggregates; the bad inputs of the issue
(more sources than N, duplicates, one unreadable source, a frame size change mid-run) are each a clear error;
SIGINT stops every stream cleanly; `bench --streams` runs (a smoke run of its tiny mode, no timing asserted).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support.run_cli import run, write_video

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")  # the fixture exports the golden's checkpoint

FRAMES = "frames"


@pytest.fixture(scope="module")
def exports(tmp_path_factory, goldens):
    """tiny_a's checkpoint exported twice at the golden's resolution: --streams 1 and --streams 3."""
    from support.ci import require
    from support.exports import golden_export

    g = goldens / "tiny_a"
    require((g / "golden.npz").is_file(), f"golden tiny_a not found under {goldens}", "CI=true: goldens are required")
    out = {1: golden_export(tmp_path_factory, g), 3: golden_export(tmp_path_factory, g, streams=3)}
    assert json.loads((out[3] / "export.json").read_text())["streams"] == 3
    assert json.loads((out[1] / "export.json").read_text()).get("streams", 1) == 1
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory, goldens):
    """Three different sources of tiny_a's 200x150 frames: the 6-frame folder, 5 frames reversed, a 3-frame
    video (different lengths: two end before the first)."""
    d = tmp_path_factory.mktemp("streams_sources")
    frames = sorted((goldens / "tiny_a" / FRAMES).glob("*.png"))
    rev = d / "reversed"
    rev.mkdir()
    for i, f in enumerate(reversed(frames[:5])):
        (rev / f"f{i}.png").write_bytes(f.read_bytes())
    video = write_video(d / "short.mp4", n=3)
    return [goldens / "tiny_a" / FRAMES, rev, video]


def _args(srcs, export, smplx, out, *extra):
    return [*srcs, "--engines", export, "--smplx-model", smplx, "--backend", "ort-cpu", "--out", out,
            "--no-progress", "--threads", "1", *extra]


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def _summary(d: Path) -> dict:
    return json.loads((d / "summary.json").read_text())


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory, exports, sources, synthetic_smplx):
    """The three sources as streams (reset interval 2), and each alone through the --streams 1 export."""
    d = tmp_path_factory.mktemp("streams_run")
    rc = run(*_args(sources, exports[3], synthetic_smplx, d / "multi", "--reset-interval", "2"))
    singles = []
    for i, s in enumerate(sources):
        singles.append(d / f"single{i}")
        assert run(*_args([s], exports[1], synthetic_smplx, singles[-1], "--reset-interval", "2")) == 0
    return rc, d / "multi", singles


def test_streams_write_what_single_runs_write_with_the_same_results(multi_run, sources):
    rc, out, singles = multi_run
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["stream_00", "stream_01", "stream_02", "summary.json"]
    for k, single in enumerate(singles):
        mine = out / f"stream_{k:02d}"
        assert _files(mine) == _files(single), k  # exactly the files a single-source run writes
        ref, got = np.loadtxt(single / "trajectory.tum", ndmin=2), np.loadtxt(mine / "trajectory.tum", ndmin=2)
        assert got.shape == ref.shape == ({0: 6, 1: 5, 2: 3}[k], 8)
        np.testing.assert_allclose(got, ref, rtol=0, atol=3e-5 * np.abs(ref).max())
        for f in (single / "people").glob("*.npz"):  # same track ids, in the same frames
            with np.load(f) as a, np.load(mine / "people" / f.name) as b:
                np.testing.assert_array_equal(a["frame_index"], b["frame_index"])
                np.testing.assert_allclose(b["transl_head_cam"], a["transl_head_cam"], rtol=0,
                                           atol=3e-5 * max(np.abs(a["transl_head_cam"]).max(), 1e-6))
        s = _summary(mine)
        assert s["status"] == "complete" and s["exit_code"] == 0 and s["stream"] == k
        assert s["source"] == str(sources[k]) and s["frames"] == ref.shape[0]
        assert s["settings"]["reset_interval"] == 2 and s["latency_ms"]["p50"] > 0
        assert json.loads((single / "cameras.json").read_text())["frames"][-1]["segment"] == \
            json.loads((mine / "cameras.json").read_text())["frames"][-1]["segment"] >= 1  # resets per stream


def test_aggregate_summary(multi_run, sources):
    _, out, _ = multi_run
    s = _summary(out)
    assert s["status"] == "complete" and s["exit_code"] == 0 and s["streams"] == 3
    assert s["sources"] == [str(x) for x in sources] and s["frames"] == 6 + 5 + 3
    assert s["aggregate_fps"] > 0 and s["batch_timeout_ms"] == 70.0
    assert [p["stream"] for p in s["per_stream"]] == ["stream_00", "stream_01", "stream_02"]
    for p, n in zip(s["per_stream"], (6, 5, 3)):
        assert p["status"] == "complete" and p["exit_code"] == 0 and p["frames"] == n and p["fps"] > 0
        lat = p["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"]


def test_more_sources_than_the_export_batches(tmp_path, exports, sources, synthetic_smplx, capsys):
    extra = tmp_path / "extra"
    extra.mkdir()
    Image.new("RGB", (200, 150)).save(extra / "a.png")
    out = tmp_path / "o"
    assert run(*_args([*sources, extra], exports[3], synthetic_smplx, out)) == 2
    err = capsys.readouterr().err
    assert "more sources than the export batches: 4 sources, export made with --streams 3" in err
    assert "--streams 4" in err and "Traceback" not in err
    assert not out.exists()  # before any work
    assert run(*_args(sources[:2], exports[1], synthetic_smplx, out)) == 2  # a single-stream export: N = 1
    assert "export made with --streams 1" in capsys.readouterr().err and not out.exists()


def test_duplicate_sources(tmp_path, exports, sources, synthetic_smplx, capsys):
    link = tmp_path / "link"
    link.symlink_to(sources[1], target_is_directory=True)
    out = tmp_path / "o"
    for dup in (sources[1], link, Path(str(sources[1]) + "/../" + sources[1].name)):
        assert run(*_args([sources[0], sources[1], dup], exports[3], synthetic_smplx, out)) == 2
        err = capsys.readouterr().err
        assert "the same source is given twice" in err and "(source 2)" in err and "(source 3)" in err
        assert not out.exists()


def test_an_unreadable_source_and_a_frame_size_change_fail_alone(tmp_path, exports, sources, synthetic_smplx,
                                                                  capsys):
    """One run, three streams: a good source, a corrupt video (cannot be opened), and a folder whose 4th frame
    is 400x300 instead of 200x150 (same aspect: a single-source run would accept it). The two bad streams fail
    alone with their message; the good one finishes; exit 2."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    d = tmp_path / "resized"
    d.mkdir()
    frames = sorted(sources[0].glob("*.png"))
    for i in range(3):
        (d / f"f{i}.png").write_bytes(frames[i].read_bytes())
    Image.open(frames[3]).resize((400, 300)).save(d / "f3.png")
    (d / "f4.png").write_bytes(frames[4].read_bytes())
    out = tmp_path / "o"
    assert run(*_args([sources[1], bad, d], exports[3], synthetic_smplx, out)) == 2
    err = capsys.readouterr().err
    assert "stream_01 failed" in err and "cannot be opened" in err and "Traceback" not in err
    assert "stream_02 failed" in err and "frame size changed mid-run: 200x150 -> 400x300 at frame 3" in err
    s = _summary(out)
    assert s["status"] == "failed" and s["exit_code"] == 2
    assert [p["status"] for p in s["per_stream"]] == ["complete", "failed", "failed"]
    assert "cannot be opened" in s["per_stream"][1]["error"]["message"]
    assert "size changed mid-run" in s["per_stream"][2]["error"]["message"]
    unreadable = _summary(out / "stream_01")
    assert unreadable["status"] == "failed" and unreadable["exit_code"] == 2 and unreadable["frames"] == 0
    assert unreadable["error"]["type"] == "Human3RError" and _files(out / "stream_01") == ["summary.json"]
    resized = _summary(out / "stream_02")
    assert resized["status"] == "failed" and resized["exit_code"] == 2 and resized["frames"] == 3
    assert np.loadtxt(out / "stream_02" / "trajectory.tum", ndmin=2).shape == (3, 8)  # the frames before: kept
    assert np.loadtxt(out / "stream_00" / "trajectory.tum", ndmin=2).shape == (5, 8)  # the good one finished
    assert _summary(out / "stream_00")["status"] == "complete"


def test_all_sources_unreadable_is_an_error_before_any_work(tmp_path, exports, synthetic_smplx, capsys):
    out = tmp_path / "o"
    assert run(*_args([tmp_path / "nope1", tmp_path / "nope2"], exports[3], synthetic_smplx, out)) == 2
    assert "none can be read" in capsys.readouterr().err and not out.exists()


def test_checkpoint_exports_with_streams_equal_to_the_sources(tmp_path, sources, synthetic_smplx, monkeypatch,
                                                             capsys):
    from human3r_edge.runtime.commands import run as run_mod

    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"x")
    calls = []

    def fake_export(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "no exporter in this test")

    monkeypatch.setattr(run_mod.subprocess, "run", fake_export)
    out = tmp_path / "o"
    rc = run(*sources, "--checkpoint", ckpt, "--smplx-model", synthetic_smplx, "--out", out, "--no-progress",
             "--cache-dir", tmp_path / "cache", "--size", "128")
    assert rc == 2 and len(calls) == 1
    cmd = calls[0]
    assert cmd[cmd.index("--streams") + 1] == "3" and cmd[cmd.index("--resolution") + 1] == "128x96"
    assert "--streams 3" in capsys.readouterr().err  # the hint repeats the export command
    assert not out.exists()


def test_sigint_stops_every_stream_cleanly(tmp_path, exports, synthetic_smplx):
    srcs = [write_video(tmp_path / f"long{i}.mp4", n=150 + 20 * i) for i in range(2)]
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "human3r_edge", "run", *map(str, _args(srcs, exports[3], synthetic_smplx, out))]

    def default_signals() -> None:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"}, preexec_fn=default_signals)
    traj = [out / f"stream_{k:02d}" / "trajectory.tum" for k in range(2)]
    t0 = time.monotonic()
    while not all(t.is_file() and t.stat().st_size > 0 for t in traj):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 120, "no frame committed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    s = _summary(out)
    assert s["status"] == "interrupted" and s["exit_code"] == 130 and s["signals"] == ["SIGINT"]
    for k in range(2):
        st = _summary(out / f"stream_{k:02d}")
        assert st["status"] == "interrupted" and st["exit_code"] == 130
        n = np.loadtxt(traj[k], ndmin=2).shape[0]
        assert st["frames"] == n >= 1 and n < 150
        cams = json.loads((out / f"stream_{k:02d}" / "cameras.json").read_text())
        assert len(cams["frames"]) == n  # finalised: consistent with the trajectory


def test_bench_streams_tiny_smoke(tmp_path, exports):
    """`bench --streams` end to end on tiny exports (a benchmark: only its files and fields are checked)."""
    from human3r_edge.cli import main

    j = tmp_path / "b.json"
    rc = main(["bench", "--streams", "2", "--config", "tiny", "--resolution", "128x96", "--frames", "1",
               "--warmup", "0", "--engines", str(exports[1]), "--streams-engines", str(exports[3]), "--json",
               str(j), "--cache", str(tmp_path / "cache"), "--threads", "1"])
    assert rc == 0
    r = json.loads(j.read_text())
    assert r["batch_sizes"] == [1, 2] and r["backend"] == "ort-cpu" and "RANDOM" in r["what"]
    got = {(x["mode"], x["streams"]) for x in r["runs"] if "aggregate_fps" in x}
    assert got == {("batched", 1), ("sequential", 1), ("batched", 2), ("sequential", 2)}, r["runs"]
    assert [row["streams"] for row in r["comparison"]["rows"]] == [1, 2]
    assert "memory_per_added_stream" in r["comparison"] and "quiet" in r["machine"]
    assert "PROJECTION" in j.with_suffix(".md").read_text()


def test_a_used_output_folder_and_a_bad_timeout_are_refused_before_any_work(multi_run, exports, sources,
                                                                            synthetic_smplx, capsys):
    _, out, _ = multi_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert run(*_args(sources, exports[3], synthetic_smplx, out)) == 2
    assert "holds the outputs of a previous run" in capsys.readouterr().err
    (out / "summary.json").rename(out / "kept.json")  # a stream folder alone also marks a previous run
    try:
        assert run(*_args(sources[:2], exports[3], synthetic_smplx, out)) == 2
        err = capsys.readouterr().err
        assert "stream_0" in err and "holds the outputs of a previous run" in err
    finally:
        (out / "kept.json").rename(out / "summary.json")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert run(*_args(sources, exports[3], synthetic_smplx, out.parent / "new", "--batch-timeout-ms", "-5")) == 2
    assert "--batch-timeout-ms | must be >= 0" in capsys.readouterr().err
    assert not (out.parent / "new").exists()
