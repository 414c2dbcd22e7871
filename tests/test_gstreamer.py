"""The `human3r` GStreamer element (runtime/gst/): gst-inspect, parity with `human3r-edge run` on the same decoded
frames, the C program that embeds it, and its errors on the bus. Needs GStreamer, the Python plugin loader and
libgstreamer1.0-dev (`make setup` installs them as root through .ci/apt-install.sh): skipped without them,
except on CI (CI=true), where a missing GStreamer fails.

Assets: a toy ONNX export (ort-cpu, 64x48), the synthetic SMPL-X model and the demo's synthetic video (48 frames
at 320x240), all made here in a few seconds.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from support.ci import require
from support.goldens import REPO

TOOLS = ("gst-launch-1.0", "gst-inspect-1.0", "pkg-config")
PROPERTIES = ("engines", "checkpoint", "backend", "smplx-model", "out", "reset-interval", "max-people", "overlay",
              "preprocessing", "skinning")
ERROR_LINE = re.compile(r"ERROR: from element /GstPipeline:pipeline\d+/GstHuman3R:human3r\d+: (.+)")
REL_TOL = 3e-5  # of max|ref| per array: the element and `run` run the same code on the same frames


def _missing(what: str) -> None:
    require(False, f"GStreamer: {what}. Hint: run `make setup` as root (.ci/apt-install.sh installs it)",
            "CI=true: the GStreamer tests must run, not skip")


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def gst(tmp_path_factory):
    """Environment for gst-launch/gst-inspect with the element on GST_PLUGIN_PATH and a private registry, plus
    the assets: {'env', 'export', 'smplx', 'video', 'frames' (the video decoded by `run`'s reader, PNG)}."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            _missing(f"{tool} not found")
    if subprocess.run(["pkg-config", "--exists", "gstreamer-1.0"]).returncode != 0:
        _missing("pkg-config gstreamer-1.0 not found (libgstreamer1.0-dev)")
    import cv2

    from human3r_edge.runtime import video
    from human3r_edge.runtime.commands.demo import make_sample_video
    from human3r_edge.runtime.gst import environment
    from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx
    from support.toy_export import write_toy_export

    d = tmp_path_factory.mktemp("gst")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GST_")}
    env.update(environment(env), GST_REGISTRY=str(d / "registry.bin"))
    probe = subprocess.run(["gst-inspect-1.0", "python"], env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        _missing("the Python plugin loader (gstreamer1.0-python3-plugin-loader, python3-gst-1.0) is not installed")
    write_toy_export(d / "export", lean=True, fp16=False)
    smplx = write_synthetic_smplx(d / "SMPLX_NEUTRAL.npz")
    video_path = make_sample_video(d / "sample.mp4")
    frames = d / "frames"
    frames.mkdir()
    with video.open_source(str(video_path)) as src:
        for f in src:
            cv2.imwrite(str(frames / f"{f.index:06d}.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    return {"env": env, "export": d / "export", "smplx": Path(smplx), "video": video_path, "frames": frames,
            "dir": d}


def _launch(gst, *pipeline: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """gst-launch-1.0 on the pipeline. One gst-launch once hung past the timeout on a heavily loaded machine
    (EOS-before-any-frame; not reproduced in later runs): a timed-out launch is retried once, with a warning that
    carries what it printed, and a second hang fails the test."""
    import warnings

    cmd = ["gst-launch-1.0", *[tok for part in pipeline for tok in part.split()]]
    try:
        return subprocess.run(cmd, env=gst["env"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-2000:] + (exc.stderr or b"")[-2000:]
        warnings.warn(f"gst-launch-1.0 timed out after {timeout} s, retrying once; it printed: {out!r}")
    return subprocess.run(cmd, env=gst["env"], capture_output=True, text=True, timeout=timeout)


def _element(gst, **props: object) -> str:
    base = {"engines": gst["export"], "smplx-model": gst["smplx"]}
    base.update(props)
    return "human3r " + " ".join(f"{k}={v}" for k, v in base.items())


def _pngs(folder: Path, rate: int = 30) -> str:
    return f"multifilesrc location={folder}/%06d.png index=0 caps=image/png,framerate={rate}/1 ! pngdec"


def _run_cli(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "human3r_edge", "run", *map(str, argv)], capture_output=True,
                          text=True, timeout=300)


def _track_ids_per_frame(out: Path) -> dict[int, list[int]]:
    per: dict[int, list[int]] = {}
    for f in sorted((out / "people").glob("track_*.npz")):
        tid = int(f.stem.split("_")[1])
        with np.load(f) as z:
            for i in z["frame_index"]:
                per.setdefault(int(i), []).append(tid)
    return {k: sorted(v) for k, v in sorted(per.items())}


def _relative_error(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    assert ref.shape == got.shape
    return float(np.abs(ref - got).max() / max(np.abs(ref).max(), 1e-12)) if ref.size else 0.0


# ------------------------------------------------------------------------------------------------ tests
def test_gst_env_makes_gst_inspect_list_the_properties(gst):
    out = subprocess.run([sys.executable, "-m", "human3r_edge", "gst-env"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [ln.split("=")[0] for ln in lines] == ["export GST_PLUGIN_PATH", "export PYTHONPATH"]
    env = dict(gst["env"])
    script = f'eval "$({sys.executable} -m human3r_edge gst-env)" && gst-inspect-1.0 human3r'
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in PROPERTIES:
        assert re.search(rf"^\s+{re.escape(name)}\s+:", proc.stdout, flags=re.M), name
    assert "video/x-raw(memory:CUDAMemory)" in proc.stdout and "NV12" in proc.stdout


@pytest.mark.slow
def test_gst_launch_writes_the_files_run_writes(gst, tmp_path):
    """Same decoded frames (a PNG folder) through `human3r-edge run` and through gst-launch with out=."""
    ref, got = tmp_path / "run", tmp_path / "gst"
    proc = _run_cli(gst["frames"], "--engines", gst["export"], "--smplx-model", gst["smplx"], "--out", ref,
                    "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    launch = _launch(gst, "-m", _pngs(gst["frames"]), "! videoconvert !", _element(gst, out=got), "! fakesink")
    assert launch.returncode == 0, (launch.stdout + launch.stderr)[-3000:]
    n = len(list(gst["frames"].glob("*.png")))
    assert launch.stdout.count("human3r-frame,") == n  # one element message per frame

    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    assert files(ref) == files(got)
    a, b = np.loadtxt(ref / "trajectory.tum"), np.loadtxt(got / "trajectory.tum")
    ts_err = float(np.abs(a[:, 0] - b[:, 0]).max())  # PTS are whole nanoseconds; run uses index / fps
    pose_err = _relative_error(a[:, 1:], b[:, 1:])
    print(f"trajectory: {len(a)} poses, timestamp max err {ts_err:.2e} s, pose max rel err {pose_err:.2e}")
    assert len(a) == len(b) == n and ts_err < 1e-6 and pose_err <= REL_TOL
    worst = 0.0
    for f in sorted((ref / "people").glob("*.npz")):
        with np.load(f) as x, np.load(got / "people" / f.name) as y:
            assert sorted(x.files) == sorted(y.files)
            for k in x.files:
                if k == "timestamp":
                    assert np.abs(x[k] - y[k]).max() < 1e-6
                elif k == "frame_index":
                    assert np.array_equal(x[k], y[k])
                else:
                    worst = max(worst, _relative_error(x[k], y[k]))
    print(f"people: {len(list((ref / 'people').glob('*.npz')))} tracks, max rel err {worst:.2e}")
    assert worst <= REL_TOL
    cams_a, cams_b = (json.loads((d / "cameras.json").read_text()) for d in (ref, got))
    assert [c["index"] for c in cams_a["frames"]] == [c["index"] for c in cams_b["frames"]]
    assert _relative_error([c["K"] for c in cams_a["frames"]], [c["K"] for c in cams_b["frames"]]) <= REL_TOL
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (ref, got))
    assert sb["status"] == "complete" and sb["frames"] == sa["frames"] == n and sb["tracks"] == sa["tracks"]
    assert set(sa) <= set(sb) and sb["scene_points"] == sa["scene_points"]


@pytest.mark.slow
def test_c_program_prints_one_line_per_frame_with_runs_track_ids(gst, tmp_path):
    exe = tmp_path / "human3r_pipeline"
    make = subprocess.run(["make", "-s", "-C", str(REPO), "c-example", f"C_EXAMPLE={exe}"], capture_output=True,
                          text=True)
    assert make.returncode == 0 and exe.is_file(), make.stderr
    proc = subprocess.run([str(exe), str(gst["video"]), str(gst["export"]), str(gst["smplx"])], env=gst["env"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("frame ")]
    printed = {int(ln.split()[1]): sorted(int(t) for t in ln.split("tracks")[1].strip().split(",") if t)
               for ln in lines}
    # The frames GStreamer decodes (decodebin ! videoconvert ! RGB, as the program does), through `run`.
    frames = tmp_path / "decoded"
    frames.mkdir()
    dump = _launch(gst, f"filesrc location={gst['video']} ! decodebin ! videoconvert ! video/x-raw,format=RGB !",
                   f"pngenc ! multifilesink location={frames}/%06d.png")
    assert dump.returncode == 0, dump.stderr[-2000:]
    n = len(list(frames.glob("*.png")))
    assert n == 48 and len(lines) == n and sorted(printed) == list(range(n))
    proc = _run_cli(frames, "--engines", gst["export"], "--smplx-model", gst["smplx"], "--out", tmp_path / "run",
                    "--no-progress", "--no-scene")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = {i: [] for i in range(n)} | _track_ids_per_frame(tmp_path / "run")
    assert printed == expected
    assert sum(len(v) for v in printed.values()) > 0  # the toy export finds people: ids are really compared


def _frames_of(gst, folder: Path, count: int, w: int, h: int, gray: bool = False) -> Path:
    import cv2

    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(count):
        img = rng.integers(0, 256, size=(h, w) if gray else (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:06d}.png"), img)
    return folder


TESTSRC = "videotestsrc num-buffers={n} ! video/x-raw,format=RGB,width=320,height=240 !"
ERRORS = {
    "missing engines folder": (lambda g, t: (TESTSRC.format(n=2), _element(g, engines=t / "nowhere"), "! fakesink"),
                               r"human3r engines=\S+ \| folder not found\. Expected a directory written by"),
    "unsupported caps": (lambda g, t: (_pngs(_frames_of(g, t / "gray", 2, 320, 240, gray=True)), "!",
                                       _element(g), "! fakesink"),
                         r"human3r caps \| unsupported video format: GRAY8 \(320x240\)\. Expected RGB / BGR / RGBA"),
    "frame size change": (lambda g, t: ("concat name=c !", _element(g, out=t / "out"), "! fakesink",
                                        "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=320,height=240,"
                                        "framerate=10/1 ! c.",
                                        "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=240,height=320,"
                                        "framerate=10/1 ! c."),
                          r"frame \| does not preprocess to the export resolution: 240x320 -> 48x64\. Expected 64x48"),
    "EOS before any frame": (lambda g, t: (TESTSRC.format(n=0), _element(g), "! fakesink"),
                             r"human3r \(human3r0\) \| end of stream before any frame\."),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_are_gstreamer_errors_with_our_message(gst, tmp_path, case):
    build, pattern = ERRORS[case]
    proc = _launch(gst, *build(gst, tmp_path))
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-2000:]
    first = ERROR_LINE.search(text)
    assert first is not None, text[-2000:]  # the first error on the bus is ours, not `not-negotiated`
    print(f"{case}: {first.group(1)[:160]}")
    assert re.match(pattern, first.group(1)), first.group(1)
    assert "Traceback" not in first.group(1)
    if case == "frame size change":  # as `run`: the frames before are in the outputs, the summary says failed
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["status"] == "failed" and summary["frames"] == 2 and "error" in summary


def test_size_change_that_fits_warns_and_continues(gst):
    proc = _launch(gst, "-m concat name=c !", _element(gst), "! fakesink",
                   "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=320,height=240,framerate=10/1 ! c.",
                   "videotestsrc num-buffers=2 ! video/x-raw,format=BGRA,width=640,height=480,framerate=10/1 ! c.")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    assert "frame | size changed mid-stream: 320x240 -> 640x480" in proc.stdout + proc.stderr
    assert proc.stdout.count("human3r-frame,") == 4


def test_nv12_with_overlay_draws_into_the_passing_frames(gst, tmp_path):
    """NV12 (converted on the CPU here) and overlay=true: the frames leaving the element differ from those of the
    same pipeline without the overlay (12 frames)."""
    plain, drawn = tmp_path / "plain", tmp_path / "drawn"
    for folder, overlay in ((plain, "false"), (drawn, "true")):
        folder.mkdir()
        proc = _launch(gst, _pngs(gst["frames"]).replace("index=0", "index=0 stop-index=11"),
                       "! videoconvert ! video/x-raw,format=NV12 !",
                       _element(gst, overlay=overlay), "! videoconvert ! video/x-raw,format=RGB ! pngenc !",
                       f"multifilesink location={folder}/%06d.png")
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    import cv2

    changed = [int(np.count_nonzero(cv2.imread(str(p)) != cv2.imread(str(drawn / p.name))))
               for p in sorted(plain.glob("*.png"))]
    assert len(changed) == 12 and sum(changed) > 0
