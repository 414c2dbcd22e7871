"""Triton serving (docs/serving.md), against the tritonserver bundled by `make setup`, started ONCE for the module on
127.0.0.1 with free ports and stopped cleanly at the end: the python-flavour repository over tiny_a's ONNX export
serves interleaved sequences exactly as local Sessions; faults give clear errors or recorded recoveries."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from human3r_edge.errors import Human3RError
from support.exports import golden_export
from support.goldens import REPO, golden_dirs
from support.triton import (SHORT_IDLE_MODEL, SHORT_IDLE_S, assert_same_results, close, interleaved_frames,
                            multi_stream_export, require_triton, write_repo)


@pytest.fixture(scope="module")
def tiny_a(goldens):
    dirs = [d for d in golden_dirs() if d.name == "tiny_a"]
    if not dirs:
        pytest.fail("tiny_a golden missing")
    return dirs[0]


@pytest.fixture(scope="module")
def export(tmp_path_factory, tiny_a):
    return golden_export(tmp_path_factory, tiny_a)


@pytest.fixture(scope="module")
def frames(tiny_a):
    with np.load(tiny_a / "golden.npz") as z:
        return np.array(z["input/raw_frames_uint8"])


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_a, export, synthetic_smplx):
    require_triton()
    from human3r_edge.runtime.triton.server import TritonServer

    root = tmp_path_factory.mktemp("triton")
    repo = write_repo(root, multi_stream_export(tmp_path_factory, tiny_a), export, synthetic_smplx)
    srv = TritonServer(repo, log_file=root / "tritonserver.log")
    srv.start(timeout=180)
    try:
        yield srv
    finally:
        code = srv.stop()
    assert code == 0, f"tritonserver did not stop cleanly (exit code {code}); log: {srv.log_file}"


@pytest.fixture(scope="module")
def local_refs(export, synthetic_smplx, frames):
    """Local Session results over the 4 frame orders of `interleaved_frames` (SMPL-X, dense), made once."""
    return [local_results(export, synthetic_smplx, seq) for seq in interleaved_frames(frames, 4)]


def local_results(export, smplx, frames, dense=True):
    from human3r_edge.runtime.session import Session, SessionOptions

    with Session.open(export, "ort-cpu", smplx, SessionOptions(dense=dense)) as s:
        return [s.step(f) for f in frames]


def metric(server, name, **labels) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[len(name) + 1:line.index("}")].split(",")))
            if got == want:
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name}{{{want}}} not found on {server.metrics_url}")


def test_three_interleaved_sequences_equal_local_sessions(server, local_refs, frames):
    from human3r_edge.runtime.triton.client import RemoteSession

    seqs = interleaved_frames(frames, 3)
    sessions = [RemoteSession(server.url, dense=True).start() for _ in seqs]
    assert len({s.sequence_id for s in sessions}) == 3
    got: list[list] = [[] for _ in seqs]
    try:
        for i in range(len(frames)):  # round robin: the server holds three states at once
            for k, s in enumerate(sessions):
                got[k].append(s.step(seqs[k][i]))
        assert metric(server, "human3r_live_sequences", model="human3r") == 3
    finally:
        for s in sessions:
            s.close()
    assert metric(server, "human3r_live_sequences", model="human3r") == 0  # END freed every state
    for k in range(3):
        assert sum(len(r.people) for r in local_refs[k]) > 0
        assert_same_results(got[k], local_refs[k])


def test_concurrent_sequences_from_threads(server, local_refs, frames):
    """Four threads at once: the Oldest batcher hands the model several sequences per execute (fewer model runs
    than requests), each batch ONE MultiSession step, and each thread's results are still its own."""
    from human3r_edge.runtime.triton.client import RemoteSession

    seqs = interleaved_frames(frames, 4)
    got: list[list] = [[] for _ in seqs]
    errors: list[BaseException] = []

    def work(k):
        try:
            with RemoteSession(server.url, vertices=False) as s:
                got[k] = [s.step(f) for f in seqs[k]]
        except BaseException as exc:  # reported below
            errors.append(exc)

    runs = metric(server, "nv_inference_exec_count", model="human3r", version="1")
    requests = metric(server, "nv_inference_count", model="human3r", version="1")
    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(seqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    runs = metric(server, "nv_inference_exec_count", model="human3r", version="1") - runs
    requests = metric(server, "nv_inference_count", model="human3r", version="1") - requests
    assert requests == len(seqs) * (len(frames) + 1)  # every frame, and each sequence's END
    assert runs < requests, "the Oldest batcher never gave the model two sequences at once"
    for k in range(len(seqs)):
        ref = local_refs[k]
        assert [r.track_ids for r in got[k]] == [r.track_ids for r in ref]
        close(np.stack([r.c2w for r in got[k]]), np.stack([r.c2w for r in ref]))


def test_unknown_sequence_without_start_is_a_clear_error(server, frames):
    from human3r_edge.runtime.triton.client import RemoteSession

    with pytest.raises(Human3RError, match=r"sequence 4242 \| unknown to the server.*START"):
        with RemoteSession(server.url, sequence_id=4242, resume=True) as s:
            s.step(frames[0])


def test_idle_sequence_is_freed(server, frames):
    from human3r_edge.runtime.triton.client import RemoteSession

    freed = metric(server, "human3r_sequences_freed_total", model=SHORT_IDLE_MODEL, reason="idle")
    s = RemoteSession(server.url, model=SHORT_IDLE_MODEL, vertices=False).start()
    s.step(frames[0])
    assert metric(server, "human3r_live_sequences", model=SHORT_IDLE_MODEL) == 1
    deadline = time.monotonic() + SHORT_IDLE_S + 10
    while metric(server, "human3r_live_sequences", model=SHORT_IDLE_MODEL) != 0:  # freed without any request
        assert time.monotonic() < deadline, "idle sequence not freed"
        time.sleep(0.25)
    assert metric(server, "human3r_sequences_freed_total", model=SHORT_IDLE_MODEL, reason="idle") == freed + 1
    with pytest.raises(Human3RError, match="unknown to the server"):
        s.step(frames[1])  # no START: Triton itself refuses it
    s._started = False
    s.close()


def test_malformed_frames_are_clear_errors_and_the_sequence_goes_on(server, export, frames):
    """Refused by the client before sending (a frame under one patch), by Triton (a wrong dtype) or by the model
    (too small, a corrupt JPEG, both inputs): each a clear Human3RError, and the sequence goes on after them."""
    from human3r_edge.runtime.triton.client import RemoteSession

    with RemoteSession(server.url, model=SHORT_IDLE_MODEL, vertices=False) as s:  # the one-Session-per-sequence model
        first = s.step(frames[0])
        with pytest.raises(Human3RError, match="16-px patch"):
            s.step(np.zeros((8, 8, 3), np.uint8))  # checked by the client (the same check as a local Session)
        bad = [([("FRAME", np.zeros((1, 8, 8, 3), np.float32), "FP32")], "request refused.*(datatype|FP32)"),
               ([("FRAME", np.zeros((1, 8, 8, 3), np.uint8), "UINT8")], "request refused.*16-px patch"),
               ([("FRAME_JPEG", np.frombuffer(b"\xff\xd8\xff\xe0 not a jpeg", np.uint8)[None], "UINT8")],
                "request refused.*FRAME_JPEG.*not a decodable image"),
               ([("FRAME", frames[1][None], "UINT8"), ("FRAME_JPEG", np.zeros((1, 4), np.uint8), "UINT8")],
                "both FRAME and FRAME_JPEG")]
        for tensors, pattern in bad:
            s._inputs = lambda frame, t=tensors: _raw(t)  # type: ignore[method-assign]
            with pytest.raises(Human3RError, match=pattern):
                s.step(frames[1])
        del s._inputs
        second = s.step(frames[1])  # the state survived the refused requests
    ref = local_results(export, None, frames[:2], dense=False)
    assert [first.track_ids, second.track_ids] == [r.track_ids for r in ref]
    close(second.c2w, ref[1].c2w)


def _raw(tensors):
    import tritonclient.http as http

    out = []
    for name, data, dtype in tensors:
        t = http.InferInput(name, list(data.shape), dtype)
        t.set_data_from_numpy(data)
        out.append(t)
    return out


def test_jpeg_frames(server, export, frames):
    import io

    from PIL import Image

    from human3r_edge.runtime.triton.client import RemoteSession

    with RemoteSession(server.url, model=SHORT_IDLE_MODEL, vertices=False, jpeg=True) as s:
        got = [s.step(f) for f in frames[:3]]
    decoded = []
    for f in frames[:3]:  # what the server decoded
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=95)
        decoded.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    ref = local_results(export, None, decoded, dense=False)
    assert [g.track_ids for g in got] == [r.track_ids for r in ref]
    close(np.stack([g.c2w for g in got]), np.stack([r.c2w for r in ref]))


def test_server_killed_and_restarted_mid_sequence(server, export, synthetic_smplx, frames):
    """The client waits for the restarted server, restarts its sequence with the frame that failed (none is lost),
    records the reset, keeps ids unique and chains poses; results after the restart equal a fresh local run."""
    from human3r_edge.runtime.triton.client import RemoteSession

    cut = 3
    s = RemoteSession(server.url, dense=True, reconnect_timeout=120).start()
    before = [s.step(f) for f in frames[:cut]]
    server.kill()
    assert not server.running
    restarter = threading.Timer(1.0, lambda: server.start(timeout=180))
    restarter.start()
    try:
        after = [s.step(f) for f in frames[cut:]]
    finally:
        restarter.join()
        s.close()
    assert [r.index for r in before + after] == list(range(len(frames)))
    assert len(s.resets) == 1 and s.resets[0]["frame"] == cut and "unreachable" in s.resets[0]["reason"]
    assert s.summary()["resets"] == s.resets
    offset = max(i for r in before for i in r.track_ids) + 1
    ref = local_results(export, synthetic_smplx, frames[cut:])
    assert all(g.segment == r.segment + before[-1].segment + 1 for g, r in zip(after, ref))
    chain = before[-1].c2w.astype(np.float64) @ np.linalg.inv(ref[0].c2w.astype(np.float64))
    close(after[0].c2w, before[-1].c2w)
    close(np.stack([g.c2w for g in after]), np.stack([chain @ r.c2w for r in ref]))
    after = [g.__class__(**{**g.__dict__, "c2w": r.c2w, "segment": r.segment, "points_world": r.points_world})
             for g, r in zip(after, ref)]  # the chained world frame is checked above
    assert_same_results(after, ref, id_offset=offset)


def test_run_command_with_the_triton_backend_writes_a_local_runs_outputs(server, export, synthetic_smplx, tiny_a,
                                                                         tmp_path):
    """`run SOURCE --backend triton --url` writes what `run SOURCE --engines` writes (trajectory, cameras,
    tracks), and records the sequence (no reset) in summary.json."""
    from human3r_edge.cli import main

    base = ["run", str(tiny_a / "frames"), "--smplx-model", str(synthetic_smplx), "--no-progress", "--no-scene"]
    assert main(base + ["--backend", "triton", "--url", server.url, "--out", str(tmp_path / "remote")]) == 0
    assert main(base + ["--engines", str(export), "--out", str(tmp_path / "local")]) == 0
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["resets"] == [] and summary["frames"] == 6
    tum_r = np.loadtxt(tmp_path / "remote" / "trajectory.tum")
    tum_l = np.loadtxt(tmp_path / "local" / "trajectory.tum")
    close(tum_r, tum_l)
    tracks_l = sorted(p.name for p in (tmp_path / "local" / "people").iterdir())
    assert sorted(p.name for p in (tmp_path / "remote" / "people").iterdir()) == tracks_l and tracks_l
    for name in tracks_l:
        with np.load(tmp_path / "remote" / "people" / name) as a, np.load(tmp_path / "local" / "people" / name) as b:
            np.testing.assert_array_equal(a["frame_index"], b["frame_index"])
            for k in ("rotmat", "betas", "transl", "transl_head_cam"):
                close(a[k], b[k])


def test_triton_server_command_prints_the_url_and_stops_on_sigterm(server, tmp_path):
    from human3r_edge.runtime.triton.server import free_port, is_ready

    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen([sys.executable, "-m", "human3r_edge", "triton-server", "--repo", str(server.repo),
                             "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert f"ready: http://127.0.0.1:{ports[0]}" in line, line
        assert is_ready(f"127.0.0.1:{ports[0]}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not is_ready(f"127.0.0.1:{ports[0]}", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_triton_repo_command(export, tmp_path):
    """`triton-repo --flavor python` writes a loadable repository (loaded by the fixture's server through the same
    writer); a folder that is not an export is a clear error (exit 2)."""
    from human3r_edge.cli import main

    repo = tmp_path / "repo"
    assert main(["triton-repo", "--onnx-dir", str(export), "--out", str(repo), "--flavor", "python",
                 "--max-sequences", "5", "--idle-seconds", "7"]) == 0
    config = (repo / "human3r" / "config.pbtxt").read_text()
    for needle in ("oldest {", "max_candidate_sequences: 5", "max_sequence_idle_microseconds: 7000000",
                   "CONTROL_SEQUENCE_CORRID", "CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_END", 'backend: "python"'):
        assert needle in config, needle
    assert (repo / "human3r" / "1" / "export" / "export.json").is_file()
    assert (repo / "human3r" / "1" / "model.py").is_file()
    assert main(["triton-repo", "--onnx-dir", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2


def test_python_api_backend_name(server, export, frames):
    """open_session('triton', url=...) streams like open_session('ort-cpu', export): the same FrameResults."""
    from human3r_edge.runtime.triton.client import RemoteSession, open_session

    with pytest.raises(Human3RError, match="HOST:PORT"):
        open_session("triton")
    from human3r_edge.runtime.session import Session

    with pytest.raises(Human3RError, match="open_session"):  # Session.open names the way to the remote session
        Session.open(export, backend="triton")
    with open_session("triton", url=server.url, vertices=False) as remote:
        assert isinstance(remote, RemoteSession)
        got = [remote.step(f) for f in frames[:2]]
    with open_session("ort-cpu", export) as local:
        ref = [local.step(f) for f in frames[:2]]
    assert [g.track_ids for g in got] == [r.track_ids for r in ref]
    close(np.stack([g.c2w for g in got]), np.stack([r.c2w for r in ref]))


# ------------------------------------------------------------------------------------------ the model, no server
class _PbTensor:
    def __init__(self, name, arr):
        self._name, self._arr = name, np.asarray(arr)

    def as_numpy(self):
        return self._arr


class _PbResponse:
    def __init__(self, output_tensors=(), error=None):
        self.tensors, self.error = {t._name: t._arr for t in output_tensors}, error

    def has_error(self):
        return self.error is not None


class _Pb:
    """The few `triton_python_backend_utils` names SequenceModel uses (no MetricFamily: metrics are skipped)."""

    Tensor = _PbTensor
    InferenceResponse = _PbResponse
    TritonError = str

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return request.get(name)


def _request(corrid, start, end, frame):
    return {"CORRID": _PbTensor("CORRID", np.array([[corrid]], np.uint64)),
            "START": _PbTensor("START", np.array([[start]])), "END": _PbTensor("END", np.array([[end]])),
            "FRAME": _PbTensor("FRAME", frame[None])}


@pytest.mark.parametrize("backend_kind", ["gpu", "cpu"])
def test_idle_reaper_never_touches_a_gpu_backend_from_its_thread(export, frames, tmp_path, backend_kind):
    """The reaper runs on its own thread; GPU backends are bound to the thread holding their CUDA context, so for
    them an idle sequence is retired there (id refused at once) and released by the next execute, on the model's
    thread. A thread-free backend (ort-cpu) is released at once. (The sessions here are ort-cpu; `backend_name`
    says which rule applies.)"""
    from human3r_edge.runtime.triton.model import SequenceModel

    cfg = {"parameters": {"export_dir": {"string_value": str(export)}, "idle_seconds": {"string_value": "1000"}}}
    m = SequenceModel(_Pb(), {"model_config": json.dumps(cfg), "model_repository": str(tmp_path),
                              "model_version": "1", "model_name": "t"})
    try:
        (r,) = m.execute([_request(7, True, False, frames[0])])
        assert not r.has_error(), r.error
        if backend_kind == "gpu":
            m.backend_name = "trt"  # after the session was opened (on ort-cpu): only the threading rule changes
        session = m.held[7].session
        closed: list[int] = []
        close = session.close
        session.close = lambda: (closed.append(threading.get_ident()), close())[1]
        reaper = threading.Thread(target=m.reap, kwargs={"now": time.monotonic() + 2000, "from_reaper": True})
        reaper.start()
        reaper.join()
        assert 7 not in m.held  # the id is refused from now on
        (r,) = m.execute([_request(7, False, False, frames[1])])
        assert r.has_error() and "no state on the server" in r.error
        if backend_kind == "gpu":
            assert closed == [threading.get_ident()]  # released by execute, on the model's thread
        else:
            assert closed == [reaper.ident]  # released at once, by the reaper
    finally:
        m.finalize()
