"""Multi-stream runtime (runtime/multistream.py, pipeline.MultiStreamPipeline) on real ONNX Runtime CPU exports of
the tiny_a golden's checkpoint: a streams=3 export against single-stream Sessions on the streams=1 export (parity),
exact skipping, per-stream reset/close, the slot limit, frame-size changes, failing sources and the batcher."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.multistream import MultiSession, StreamBatcher, StreamEnd
from human3r_edge.runtime.pipeline import PipelineOptions
from human3r_edge.runtime.session import FrameResult, Session, SessionOptions
from support.ci import require
from support.streams_check import close
from support.exports import golden_export
from support.goldens import golden, goldens_root

N = 3
DENSE = SessionOptions(dense=True)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{1: streams=1 export, 3: streams=3 export} of tiny_a's checkpoint at its resolution, K = golden slots."""
    gdir = goldens_root() / "tiny_a"
    require((gdir / "golden.npz").is_file(), f"golden tiny_a not found under {goldens_root()}",
            "CI=true: goldens are required")
    with np.load(gdir / "golden.npz") as z:
        frames = z["input/raw_frames_uint8"].copy()
    # both exports are the ones the other export and multi-stream tests share (made once per pytest run)
    return {1: golden_export(tmp_path_factory, gdir), N: golden_export(tmp_path_factory, gdir, streams=N),
            "frames": frames}


def multi(exports, **kw):
    kw.setdefault("options", DENSE)
    return MultiSession.open(exports[N], "ort-cpu", intra_op_threads=1, **kw)


def assert_same_stream(got: list[FrameResult], ref: list[FrameResult], what: str) -> None:
    assert len(got) == len(ref), (what, len(got), len(ref))
    assert [r.index for r in got] == [r.index for r in ref]
    assert [r.segment for r in got] == [r.segment for r in ref]
    assert [r.track_ids for r in got] == [r.track_ids for r in ref], what  # identical detections and track ids
    close([r.c2w for r in got], [r.c2w for r in ref], f"{what} c2w")
    close([r.intrinsics for r in got], [r.intrinsics for r in ref], f"{what} intrinsics")
    close([r.points_cam for r in got], [r.points_cam for r in ref], f"{what} points_cam")
    close([r.confidence for r in got], [r.confidence for r in ref], f"{what} confidence")
    people = [(p, q) for a, b in zip(got, ref) for p, q in zip(a.people, b.people)]
    assert people, f"{what}: no people to compare"
    for attr in ("head_uv", "score", "rotmat", "betas", "expression", "transl"):
        close([getattr(p, attr) for p, _ in people], [getattr(q, attr) for _, q in people], f"{what} {attr}")


def test_parity_three_sources_against_single_sessions(exports):
    """Three different sources (the golden's frames, the same reversed, a prefix at twice the size that ends
    early; one with a reset interval) run together through `run` equal a single-stream Session run of each on the
    streams=1 export."""
    fr = exports["frames"]
    big = [np.repeat(np.repeat(f, 2, axis=0), 2, axis=1) for f in fr[:3]]  # another frame size, same export size
    folder = str(goldens_root() / "tiny_a" / "frames")  # the same frames as PNG files (video.py's reader)
    sources = {"fwd": folder, "rev": list(fr[::-1]), "short": big}
    frame_lists = {"fwd": list(fr), "rev": list(fr[::-1]), "short": big}
    opts = {"fwd": SessionOptions(dense=True, pipeline=PipelineOptions(reset_interval=2)), "rev": DENSE,
            "short": DENSE}
    ref = {}
    for sid, frames in frame_lists.items():
        with Session.open(exports[1], "ort-cpu", options=opts[sid], intra_op_threads=1) as s:
            ref[sid] = [s.step(f) for f in frames]
    got: dict = {sid: [] for sid in sources}
    ends = {}
    with multi(exports, stream_options=opts) as ms:
        for sid, item in ms.run(sources, with_ends=True):
            if isinstance(item, StreamEnd):
                assert sid not in ends and item.stream_id == sid
                ends[sid] = item
            else:
                assert sid not in ends, "a result after the stream's end"
                got[sid].append(item)
        assert ms.status == {"fwd": "finished", "rev": "finished", "short": "finished"}
        assert ms.stream_ids == []  # finished streams free their slots
    assert {sid: e.frames for sid, e in ends.items()} == {sid: len(f) for sid, f in frame_lists.items()}
    assert [r.segment for r in got["fwd"]] == [0, 0, 1, 1, 2, 2]  # reset_interval=2 in that stream only
    for sid in sources:
        assert_same_stream(got[sid], ref[sid], sid)
    assert got["fwd"][0].timestamp is None and got["fwd"][0].image.shape == ref["fwd"][0].image.shape


def test_single_stream_export_through_multisession_is_session(exports):
    """A streams=1 export serves one stream of a MultiSession: bit-identical to Session (same graphs, batch 1)."""
    fr = exports["frames"]
    with Session.open(exports[1], "ort-cpu", options=DENSE, intra_op_threads=1) as s:
        ref = [s.step(f) for f in fr]
    with MultiSession.open(exports[1], "ort-cpu", options=DENSE, intra_op_threads=1) as ms:
        assert ms.n == 1
        got = [ms.step({"cam": f})["cam"] for f in fr]
        with pytest.raises(Human3RError, match="no free stream slot"):
            ms.step({"other": fr[0]})
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.points_cam, b.points_cam)
        np.testing.assert_array_equal(a.c2w, b.c2w)
        assert a.track_ids == b.track_ids


def test_skipping_is_exact(exports):
    """Stream b absent from k batches gives identical outputs (array_equal) to a b never delayed, and its state
    rows are bit-identical across the batches it skipped. (b runs in batches of 2 in both runs: results are
    bit-exact per batch size; a batch of another size differs by float rounding, ~1e-6 relative.)"""
    fr = exports["frames"]
    k = 2
    a_frames = list(fr) + list(fr[::-1])

    def run(delay):
        out = []
        with multi(exports) as ms:
            ms.add("a")
            slot = ms.add("b")
            for i in range(len(fr) + delay):
                frames = {"a": a_frames[i]}
                if 0 <= i - delay < len(fr):
                    frames["b"] = fr[i - delay]
                before = {n: ms.backend.read_state(n)[slot].copy() for n in ("state", "mem")}
                res = ms.step(frames)
                if "b" in res:
                    out.append(res["b"])
                else:
                    for n, v in before.items():
                        assert np.array_equal(ms.backend.read_state(n)[slot], v), f"{n} row of a skipped stream"
        return out

    ref, got = run(0), run(k)
    assert len(ref) == len(got) == len(fr)
    for a, b in zip(got, ref):
        assert a.index == b.index and a.track_ids == b.track_ids
        for attr in ("c2w", "intrinsics", "points_cam", "confidence"):
            assert np.array_equal(getattr(a, attr), getattr(b, attr)), attr
        for p, q in zip(a.people, b.people):
            for attr in ("rotmat", "betas", "expression", "transl", "head_uv"):
                assert np.array_equal(getattr(p, attr), getattr(q, attr)), attr


def test_reset_and_close_one_stream(exports):
    fr = exports["frames"]
    with multi(exports) as ms:
        first = ms.step({"a": fr[0], "b": fr[0]})
        ms.step({"a": fr[1], "b": fr[1]})
        sb = ms.slot_of("b")
        rows_b = ms.backend.read_state("state")[sb].copy()
        ms.reset("a")
        assert np.array_equal(ms.backend.read_state("state")[sb], rows_b)  # b's rows untouched by a's reset
        again = ms.step({"a": fr[0], "b": fr[2]})
        a0, a1 = first["a"], again["a"]
        assert a1.segment == 1 and a1.index == 2
        np.testing.assert_array_equal(a1.points_cam, a0.points_cam)  # initial state again, same batch size
        np.testing.assert_array_equal(a1.c2w, a0.c2w)
        assert set(a1.track_ids).isdisjoint(a0.track_ids)  # people forgotten, ids never reused
        assert again["b"].index == 2 and again["b"].segment == 0
        # close frees the slot; a new id takes it with a fresh state
        ms.close("b")
        assert ms.status["b"] == "closed" and ms.stream_ids == ["a"]
        with pytest.raises(Human3RError, match="not open"):
            ms.slot_of("b")
        with pytest.raises(Human3RError, match="not open"):
            ms.reset("b")
        assert ms.add("c") == sb
        c0 = ms.step({"a": fr[0], "c": fr[0]})["c"]
        assert c0.index == 0 and c0.segment == 0
        np.testing.assert_array_equal(c0.points_cam, a0.points_cam)


def test_more_streams_than_n_is_a_clear_error(exports):
    fr = exports["frames"]
    with pytest.raises(Human3RError, match="more than the export batches"):
        MultiSession.open(exports[N], "ort-cpu", streams=N + 1)
    with multi(exports) as ms:
        with pytest.raises(Human3RError, match="no free stream slot"):
            ms.step({i: fr[0] for i in range(N + 1)})
        assert ms.status == {}  # prepared nothing, ran nothing: no stream took a slot
        with pytest.raises(Human3RError, match="more sources than stream slots"):
            ms.run([list(fr)] * (N + 1))
        ms.step({"x": fr[0]})
        with pytest.raises(Human3RError, match="more sources than stream slots"):
            ms.run([list(fr)] * N)  # one slot is taken by "x"
        with pytest.raises(Human3RError, match="dict or a list"):
            ms.run("video.mp4")
    with multi(exports, streams=2) as ms:
        ms.step({"a": fr[0], "b": fr[0]})
        with pytest.raises(Human3RError, match="no free stream slot"):
            ms.add("c")


def test_frame_size_change_fails_that_stream_alone(exports):
    fr = exports["frames"]
    big = [np.repeat(np.repeat(f, 2, axis=0), 2, axis=1) for f in fr]  # same aspect: a valid frame on its own
    with multi(exports) as ms:
        ms.step({"a": fr[0], "b": fr[0]})
        with pytest.raises(Human3RError, match=r"stream 'b' frame \| size changed mid-run: 200x150 -> 400x300"):
            ms.step({"a": fr[1], "b": big[1]})
        assert ms.status["b"].startswith("failed: ") and ms.status["a"] == "running"
        with pytest.raises(Human3RError, match="has failed"):
            ms.step({"b": fr[1]})
        assert ms.step({"a": fr[1]})["a"].index == 1  # nothing advanced by the refused batch
        ms.close("b")
        assert ms.step({"b": big[0]})["b"].index == 0  # reopened: a new stream at the new size
        # through run(): the stream that changes size fails alone, after the frames before the change
        ms.close("a")
        ms.close("b")
        got: dict = {"ok": [], "mixed": []}
        for sid, r in ms.run({"ok": list(fr), "mixed": list(fr[:2]) + big[2:]}, with_ends=True):
            if isinstance(r, FrameResult):
                got[sid].append(r)
        assert len(got["ok"]) == len(fr) and len(got["mixed"]) == 2
        assert ms.status["ok"] == "finished"
        assert ms.status["mixed"].startswith("failed: ") and "size changed mid-run" in ms.status["mixed"]


def test_bad_sources_fail_alone_and_duplicates_are_refused(exports, tmp_path):
    fr = exports["frames"]
    with multi(exports) as ms:
        got: dict = {}
        ends = {}
        for sid, r in ms.run({"ok": list(fr[:3]), "missing": str(tmp_path / "nope.mp4"),
                              "broken": _broken(fr)}, with_ends=True):
            if isinstance(r, StreamEnd):
                ends[sid] = r
            else:
                got.setdefault(sid, []).append(r)
        assert len(got["ok"]) == 3 and "missing" not in got and len(got["broken"]) == 2
        assert ms.status["ok"] == "finished"
        assert ms.status["missing"].startswith("failed: ") and "not found" in ms.status["missing"]
        assert ms.status["broken"] == "failed: camera unplugged"
        assert isinstance(ends["broken"].error, OSError) and ends["broken"].frames == 2
        (tmp_path / "frames").mkdir()
        with pytest.raises(Human3RError, match="duplicate source"):
            ms.run([str(tmp_path / "frames"), str(tmp_path / "frames" / ".." / "frames")])


def _broken(frames):
    yield frames[0]
    yield frames[1]
    raise OSError("camera unplugged")


# ------------------------------------------------------------------------------------------------ the batcher
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_batcher_forms_full_batches_or_waits_for_the_timeout():
    clock = FakeClock()
    b = StreamBatcher(timeout_ms=50, queue_size=2, clock=clock)
    for s in ("a", "b", "c"):
        b.add(s)
    assert b.poll() is None
    b.put("a", "a0")
    clock.t += 0.030
    b.put("b", "b0")
    assert b.poll() is None  # c has nothing yet, 30 ms < 50 ms since the oldest frame
    b.put("c", "c0")
    assert b.poll().frames == {"a": "a0", "b": "b0", "c": "c0"}  # complete: at once
    b.put("a", "a1")
    clock.t += 0.049
    b.put("b", "b1")
    assert b.poll() is None
    clock.t += 0.001  # 50 ms after a1 arrived: the batch goes without c
    assert b.poll().frames == {"a": "a1", "b": "b1"}
    b.put("c", "c1")  # late: joins the next batch
    b.put("a", "a2")
    b.put("b", "b2")
    assert b.poll().frames == {"a": "a2", "b": "b2", "c": "c1"}
    # an ended stream stops counting once its queue is empty; it is reported once
    b.put("c", "c2")
    b.end("c")
    b.put("a", "a3")
    b.put("b", "b3")
    got = b.poll()
    assert got.frames == {"a": "a3", "b": "b3", "c": "c2"} and got.ended == {}
    got = b.poll()
    assert got.frames == {} and got.ended == {"c": None}
    b.put("a", "a4")
    b.put("b", "b4")
    assert b.poll().frames == {"a": "a4", "b": "b4"}  # no wait for c any more
    assert b.streams == ["a", "b"]
    # bounded queues
    b.put("a", "x")
    b.put("a", "y")
    with pytest.raises(Human3RError, match="queue full"):
        b.put("a", "z", block=False)
    with pytest.raises(Human3RError, match="queue full"):
        b.put("a", "z", timeout=0.01)


def test_batcher_timeout_with_threads_and_a_late_stream(exports):
    """Real clock, 40 ms timeout: a batch goes without the late stream, which joins the next one; a producer
    blocked on a full queue is released when its stream closes."""
    fr = exports["frames"]
    with multi(exports, batch_timeout_ms=40, queue_size=1) as ms:
        ms.submit("a", fr[0])
        ms.submit("b", fr[0])
        assert sorted(sid for sid, _ in ms.process_next()) == ["a", "b"]  # complete: no wait
        ms.submit("a", fr[1])
        tic = time.monotonic()
        first = ms.process_next()
        waited = time.monotonic() - tic
        assert [sid for sid, _ in first] == ["a"] and 0.035 <= waited < 2.0
        ms.submit("b", fr[1])
        ms.submit("a", fr[2])
        assert sorted((sid, r.index) for sid, r in ms.process_next()) == [("a", 2), ("b", 1)]
        assert ms.process_next(wait=False) == []
        # a producer blocked on the full queue of b (queue_size=1) gets an error once b closes
        ms.submit("b", fr[2])
        errors = []

        def producer():
            try:
                ms.submit("b", fr[3])
            except Human3RError as exc:
                errors.append(exc)

        t = threading.Thread(target=producer)
        t.start()
        time.sleep(0.05)
        assert t.is_alive()
        ms.close("b")
        t.join(2.0)
        assert not t.is_alive() and errors and "closed" in str(errors[0])
        ms.end("a")
        assert ms.process_next() == [("a", StreamEnd("a", "finished", 3))]
        assert ms.process_next() is None  # nothing active any more


def test_close_during_run_stops_that_stream_only(exports):
    fr = exports["frames"]
    got: dict = {"a": [], "b": []}
    with multi(exports, queue_size=1) as ms:
        for sid, r in ms.run({"a": list(fr), "b": list(fr) * 3}):
            got[sid].append(r)
            if sid == "b":
                ms.close("b")  # its producer is released and the stream is not reopened by it
        assert ms.status == {"a": "finished", "b": "closed"}
        assert ms.stream_ids == []
    assert len(got["a"]) == len(fr) and len(got["b"]) == 1


def test_pipeline_records_per_stream_like_frame_pipeline(exports):
    """MultiStreamPipeline directly: slot 0 records (reset_interval 2, human mask), slot 2 does not; slot 0's
    model steps (duplicate views included) match FramePipeline's on the streams=1 export."""
    from human3r_edge.runtime.backends import open_backend
    from human3r_edge.runtime.pipeline import FramePipeline, MultiStreamPipeline

    with np.load(goldens_root() / "tiny_a" / "golden.npz") as z:
        imgs, mhmrs = z["input/img"][:4], z["input/img_mhmr"][:4]
    rec = PipelineOptions(reset_interval=2, human_mask=True, record=True)
    with open_backend("ort-cpu", exports[1], intra_op_threads=1) as be:
        single = FramePipeline(be, rec)
        ref = [single.step(i, m) for i, m in zip(imgs, mhmrs)]
    with open_backend("ort-cpu", exports[N], intra_op_threads=1) as be:
        pipe = MultiStreamPipeline(be, {0: rec, 2: PipelineOptions()})
        with pytest.raises(Human3RError, match="not open"):
            pipe.step({1: (imgs[0], mhmrs[0])})
        with pytest.raises(Human3RError, match="out of range"):
            pipe.step({N: (imgs[0], mhmrs[0])})
        outs = [pipe.step({0: (i, m), 2: (i, m)}) for i, m in zip(imgs, mhmrs)]
        assert pipe.streams[2].steps == [] and all(o[2].human_mask is None for o in outs)
        got = [o[0] for o in outs]
        steps, ref_steps = pipe.streams[0].steps, single.steps
    assert [o.reset_after for o in got] == [o.reset_after for o in ref] == [False, True, False, True]
    assert [s.duplicate for s in steps] == [s.duplicate for s in ref_steps] == [False, False, True, False, False, True]
    assert [s.first for s in steps] == [s.first for s in ref_steps]
    for a, b in zip(steps, ref_steps):
        np.testing.assert_array_equal(a.detections.cells_hw, b.detections.cells_hw)
        np.testing.assert_array_equal(a.track_ids, b.track_ids)
        assert sorted(a.decoder) == sorted(b.decoder)
        for k in a.decoder:
            close(a.decoder[k], b.decoder[k], k)
        close(a.human_mask, b.human_mask, "human_mask")
        for k in b.smpl:
            close(a.smpl[k], b.smpl[k], k)
    for a, b in zip(got, ref):
        close(a.c2w, b.c2w, "c2w")
        close(a.human_mask, b.human_mask, "mask")
