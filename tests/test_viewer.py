"""`human3r-edge view`: the replay viewer in a real headless Chromium, its scene state, and its errors.

Servers bind 127.0.0.1 on free ports and are stopped by the tests. The run folder comes from the fake export
backend (tests/support/run_folder.py): the geometry is not real, the files and conventions are.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from human3r_edge.cli import main
from support.browser import chromium_page, free_port, need_browser, not_blank
from support.run_folder import make_run_folder

pytest.importorskip("viser", reason="viser (pip install -e '.[viewer]')")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synthetic_smplx):
    # a coarse voxel keeps the cloud to a few thousand points: the browser renders in software (SwiftShader)
    return make_run_folder(tmp_path_factory.mktemp("view"), synthetic_smplx,
                           extra=("--save-meshes", "--voxel-size", "0.1"))


def _tracks_at(run_dir, index: int) -> set[int]:
    out = set()
    for f in sorted((run_dir / "people").glob("track_*.npz")):
        with np.load(f) as z:
            if index in z["frame_index"]:
                out.add(int(f.stem.split("_")[1]))
    return out


@pytest.mark.slow
def test_view_cli_serves_a_page_that_connects_and_draws(run_dir, tmp_path):
    need_browser()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "human3r_edge", "view", str(run_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        end = time.monotonic() + 60
        while "at http://" not in line and time.monotonic() < end and proc.poll() is None:
            line = proc.stdout.readline()
        assert f"at http://127.0.0.1:{port}" in line, (line, proc.poll())
        assert "12 frames, 3 tracks" in line
        with chromium_page() as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("canvas", timeout=30_000)
            page.get_by_text("Connected").first.wait_for(timeout=30_000)  # viser's status: the websocket is up
            page.get_by_text("track 2").first.wait_for(timeout=30_000)  # the GUI the server sent
            time.sleep(3)  # let three.js draw the streamed scene
            png = page.screenshot(timeout=90_000)
            (tmp_path / "view.png").write_bytes(png)
            frac = not_blank(png, (0, 160, 900, 800))  # left of the control panel, below the WebGL notice
            print(f"viewer screenshot: {frac:.1%} of the scene area is not background")
            assert frac > 0.005
            assert any("Connected!" in m for m in page.logs), page.logs[:10]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_view_scene_state_in_a_browser(run_dir, synthetic_smplx):
    """The server-side scene (what viser streams to the page): point cloud, camera, path, one mesh per track."""
    from human3r_edge.runtime.convert.run_folder import RunFolder
    from human3r_edge.runtime.viewer.replay import ReplayViewer, wait_for_clients
    from human3r_edge.runtime.viewer.scene import SceneView

    need_browser()
    view = SceneView("127.0.0.1", free_port())
    stop = threading.Event()
    try:
        assert view.server.get_host() == "127.0.0.1"
        viewer = ReplayViewer(RunFolder.read(run_dir), view)  # meshes from the run's meshes/ folder
        player = threading.Thread(target=viewer.run, args=(stop,), daemon=True)
        player.start()
        with chromium_page() as page:
            page.goto(view.url)
            page.wait_for_selector("canvas", timeout=30_000)
            assert wait_for_clients(view, 1, timeout=30), "the page did not connect"
            present0 = _tracks_at(run_dir, 0)
            names = view.node_names()
            assert {"/points", "/camera", "/trajectory"} <= set(names)
            meshes = [n for n in names if n.startswith("/people/")]
            assert len(meshes) == len(present0) and view.points.points.shape[0] > 100
            # a frame where a track is absent hides it; toggling a track hides it
            gap = next((i for i in range(12) if _tracks_at(run_dir, i) != _tracks_at(run_dir, 0)), None)
            if gap is not None:
                viewer.slider.value = gap
                for tid, h in view.people.items():
                    assert h.visible == (tid in _tracks_at(run_dir, gap))
            viewer.slider.value = 0
            tid = sorted(present0)[0]
            viewer.toggles[tid].value = False
            viewer.show(0)
            assert view.people[tid].visible is False
            viewer.toggles[tid].value = True
            viewer.playing.value = True  # play advances the timeline
            time.sleep(0.5)
            assert viewer.frame != 0 or int(viewer.slider.value) != 0
            viewer.playing.value = False
            viewer.size.value = 0.05
            time.sleep(0.2)
            assert abs(view.points.point_size - 0.05) < 1e-6
            png = page.screenshot(timeout=90_000)
            assert not_blank(png, (0, 160, 900, 800)) > 0.005
    finally:
        stop.set()
        view.stop()


def test_port_in_use_is_a_clear_error(run_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["view", str(run_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port {port} | already in use" in err and "Hint: pass another --port" in err
    assert main(["view", str(run_dir / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_view_defaults_to_loopback():
    from human3r_edge.cli import build_parser

    args = build_parser("view").parse_args(["view", "x"])
    assert args.host == "127.0.0.1" and args.port == 8080


RUN_FAKE = ("import sys; sys.path.insert(0, {tests!r}); "
            "from human3r_edge.runtime.backends import BACKENDS; "
            "BACKENDS['ort-cpu'] = 'support.doubles:FakeExportBackend'; "
            "from human3r_edge.cli import main; sys.exit(main({argv!r}))")


@pytest.mark.slow
def test_run_viewer_streams_to_a_browser(tmp_path, synthetic_smplx):
    """`run --viewer` (fake backend): the page connects and draws; summary.json reports the viewer's scene."""
    from pathlib import Path

    from support.doubles import write_fake_export
    from support.run_cli import write_video

    need_browser()
    port = free_port()
    src = write_video(tmp_path / "v.mp4", n=40, w=200, h=150)
    argv = ["run", str(src), "--engines", str(write_fake_export(tmp_path / "export")), "--smplx-model",
            str(synthetic_smplx), "--backend", "ort-cpu", "--out", str(tmp_path / "out"), "--no-progress",
            "--voxel-size", "0.1", "--viewer", "--viewer-port", str(port), "--viewer-linger", "-1"]
    code = RUN_FAKE.format(tests=str(Path(__file__).parent), argv=argv)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        end = time.monotonic() + 90
        while "live viewer at" not in line and time.monotonic() < end and proc.poll() is None:
            line = proc.stderr.readline()
        assert f"live viewer at http://127.0.0.1:{port}" in line, (line, proc.poll())
        with chromium_page() as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("canvas", timeout=30_000)
            page.get_by_text("Connected").first.wait_for(timeout=30_000)
            time.sleep(3)
            png = page.screenshot(timeout=90_000)
            frac = not_blank(png, (0, 160, 900, 800))
            print(f"live viewer screenshot: {frac:.1%} of the scene area is not background")
            assert frac > 0.005
        proc.terminate()  # ends the linger; the run then writes its summary
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    import json

    rep = json.loads((tmp_path / "out" / "summary.json").read_text())["viewer"]
    print("live viewer report:", {k: rep[k] for k in ("frames_offered", "frames_drawn", "frames_dropped",
                                                      "max_clients")})
    assert rep["frames_offered"] == 40 and rep["frames_drawn"] + rep["frames_dropped"] == 40
    assert rep["max_clients"] >= 1 and rep["error"] is None
    assert {"/camera", "/trajectory"} <= set(rep["scene_nodes"])
    assert any(n.startswith("/points/") for n in rep["scene_nodes"])
    assert any(n.startswith("/people/track_") for n in rep["scene_nodes"])
    assert "dropped so as not to slow the pipeline" in err


def test_run_viewer_port_in_use_is_exit_2(tmp_path, synthetic_smplx, capsys, monkeypatch):
    from human3r_edge.runtime.backends import BACKENDS
    from support.doubles import write_fake_export
    from support.run_cli import write_video

    monkeypatch.setitem(BACKENDS, "ort-cpu", "support.doubles:FakeExportBackend")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        rc = main(["run", str(write_video(tmp_path / "v.mp4", n=2)), "--engines",
                   str(write_fake_export(tmp_path / "export")), "--smplx-model", str(synthetic_smplx),
                   "--out", str(tmp_path / "out"), "--no-progress", "--viewer", "--viewer-port", str(port)])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"--viewer-port {port} | already in use" in err and "Hint: pass another --viewer-port" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_view_on_a_multi_stream_folder_names_the_streams(run_dir, tmp_path, capsys):
    import shutil

    multi = tmp_path / "multi"
    for name in ("cam0", "cam1"):
        shutil.copytree(run_dir, multi / name)
    assert main(["view", str(multi), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "holds one run folder per stream: cam0, cam1" in err and f"human3r-edge view {multi / 'cam0'}" in err


def test_view_without_viser_is_exit_3_naming_the_extra(run_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "viser", None)  # `import viser` raises ImportError
    assert main(["view", str(run_dir), "--port", str(free_port())]) == 3
    err = capsys.readouterr().err
    assert "viser is not installed" in err and "human3r-edge[viewer]" in err
