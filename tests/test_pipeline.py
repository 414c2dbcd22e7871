"""The per-frame pipeline against golden outputs (replayed through a backend double) and a scripted fake."""
from __future__ import annotations

import numpy as np
import pytest

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.geometry import chain_poses, pose_to_c2w
from human3r_edge.runtime.pipeline import FramePipeline, PipelineOptions
from support.goldens import golden
from support.doubles import FakeBackend, GoldenReplayBackend

TOL = 3e-5


def close(got, ref, tol=TOL):
    ref = np.asarray(ref, np.float64)
    err = float(np.max(np.abs(np.asarray(got, np.float64) - ref))) if ref.size else 0.0
    assert err <= tol * float(np.max(np.abs(ref))), f"max abs err {err:.3g}"


def run_golden(golden_dir, **opts):
    """The golden's kept frames through FramePipeline with the golden's settings; every model step recorded."""
    g = golden(golden_dir)
    gb = GoldenReplayBackend(golden_dir)
    z = gb.z
    settings = dict(human_mask=True, ttt3r=g.use_ttt3r, reset_interval=g.reset_interval, record=True)
    settings.update(opts)
    with gb:
        pipe = FramePipeline(gb, PipelineOptions(**settings))
        frames = [pipe.step(z["input/img"][s], z["input/img_mhmr"][s]) for s in g.kept_step_index]
    return gb, z, frames, pipe.steps


def test_golden_replay_host_logic(golden_dir, require_golden):
    g = golden(golden_dir)
    gb, z, frames, steps = run_golden(golden_dir)
    assert len(steps) == g.steps and [i for i, s in enumerate(steps) if not s.duplicate] == g.kept_step_index.tolist()
    np.testing.assert_array_equal([s.detections.count for s in steps], z["step/n_humans"])
    np.testing.assert_array_equal(np.concatenate([s.track_ids for s in steps]), z["step/smpl_id"])
    close(np.concatenate([s.detections.loc_square for s in steps]), z["step/smpl_loc"])
    np.testing.assert_array_equal(np.concatenate([s.detections.patch_yx for s in steps]), z["inter/smpl_pos"])
    close(np.concatenate([s.smpl["smpl_transl"] for s in steps]), z["step/smpl_transl"])
    close(np.concatenate([s.smpl["smpl_rotmat"] for s in steps]), z["step/smpl_rotmat"])
    close(np.stack([f.c2w for f in frames]), z["demo/cam2world"])
    close(np.array([f.focal for f in frames]), z["demo/focal"])
    close(np.stack([f.K for f in frames]), z["demo/intrinsics"])
    np.testing.assert_array_equal(np.concatenate([f.track_ids for f in frames]), z["demo/smpl_id"])
    # what the decoder was fed: K padded slots, first=1 at the start of every state segment, the golden's TTT3R
    dec = gb.graph_calls("decoder")
    firsts = [float(f["first"][0]) for f in dec]
    want_first = [1.0] + [1.0 if g.reset_flags[i - 1] else 0.0 for i in range(1, g.steps)]
    assert firsts == want_first
    assert all(float(f["ttt3r"][0]) == float(g.use_ttt3r) for f in dec)
    w = z["input/img"].shape[-1]
    patches = np.concatenate([f["human_patch"][f["human_valid"] > 0] for f in dec])
    np.testing.assert_array_equal(patches, z["inter/smpl_pos"][:, 0] * (w // 16) + z["inter/smpl_pos"][:, 1])
    # the smpl head runs only on steps with people (recording runs it on the duplicate views too)
    assert len(gb.graph_calls("smpl_head")) == int(np.count_nonzero(z["step/n_humans"]))
    assert frames[0].human_mask.shape == (g.mhmr_res, g.mhmr_res)


def test_golden_replay_ttt3r_off_flag(golden_dir, require_golden):
    gb, _, _, _ = run_golden(golden_dir, ttt3r=False)
    assert all(float(f["ttt3r"][0]) == 0.0 for f in gb.graph_calls("decoder"))


def walker(i):
    """One person walking right one cell per frame, a second standing still from frame 2."""
    people = [(2, min(i, 7), 0.9)]
    if i >= 2:
        people.append((6, 1, 0.8))
    return people


def run_fake(n, **opts):
    fb = FakeBackend(people=walker, k=4)
    img = np.zeros((3, 96, 128), np.float32)
    mh = np.zeros((3, 112, 112), np.float32)
    with fb:
        pipe = FramePipeline(fb, PipelineOptions(**opts))
        outs = [pipe.step(img, mh) for _ in range(n)]
    return fb, pipe, outs


def test_reset_interval_duplicate_view_and_chaining():
    fb, pipe, outs = run_fake(7, reset_interval=3)
    # reset frames are 2 and 5 ((i+1) % 3 == 0); each is followed by the duplicate view on a fresh state
    assert [o.reset_after for o in outs] == [False, False, True, False, False, True, False]
    dec = fb.graph_calls("decoder")
    assert len(dec) == 9 and len(fb.graph_calls("encoder")) == 9
    assert fb.resets == 1 + 2  # activation + two segment resets
    # the smpl head is skipped for the duplicates
    assert len(fb.graph_calls("smpl_head")) == 7
    # segment poses restart after a reset (the duplicate was step 0 of the new segment)
    seg_x = [float(o.pose[0]) for o in outs]
    np.testing.assert_allclose(seg_x, [0.0, 0.1, 0.2, 0.1, 0.2, 0.3, 0.1], atol=1e-6)
    flags = np.array([o.reset_after for o in outs])
    ref = chain_poses(np.stack([pose_to_c2w(o.pose) for o in outs]), flags)
    np.testing.assert_allclose(np.stack([o.c2w for o in outs]), ref, atol=1e-6)
    np.testing.assert_allclose([o.c2w[0, 3] for o in outs], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], atol=1e-6)
    assert [o.segment for o in outs] == [0, 0, 0, 1, 1, 1, 2]


def test_first_flags_with_resets():
    fb, _, _ = run_fake(7, reset_interval=3)
    firsts = [int(f["first"][0]) for f in fb.graph_calls("decoder")]
    # frames 0,1,2 | dup,3,4,5 | dup,6
    assert firsts == [1, 0, 0, 1, 0, 0, 0, 1, 0]


def test_tracking_and_focal_on_fake():
    _, _, outs = run_fake(5)
    ids = [o.track_ids.tolist() for o in outs]
    # the walker moves one cell per frame: its token changes, so it gets a new id each frame in this fake;
    # the standing person keeps one id from frame 2 on
    standing = [o.track_ids[o.detections.cells_hw[:, 0] == 6].tolist() for o in outs[2:]]
    assert standing[0] == standing[1] == standing[2] and len(standing[0]) == 1
    assert len(set(sum(ids, []))) >= 2
    for o in outs:
        assert abs(o.focal - 100.0) < 1e-3


def test_user_reset_restarts_sequence():
    fb = FakeBackend(people=walker)
    img = np.zeros((3, 96, 128), np.float32)
    mh = np.zeros((3, 112, 112), np.float32)
    with fb:
        pipe = FramePipeline(fb, PipelineOptions())
        a = [pipe.step(img, mh) for _ in range(3)]
        pipe.reset()
        b = pipe.step(img, mh)
    assert b.index == 3 and b.segment == 1
    np.testing.assert_array_equal(b.c2w, np.eye(4, dtype=np.float32))
    assert int(fb.graph_calls("decoder")[-1]["first"][0]) == 1
    assert set(b.track_ids.tolist()).isdisjoint(set(np.concatenate([o.track_ids for o in a]).tolist()))


def test_options_validation():
    with pytest.raises(Human3RError, match="reset_interval"):
        PipelineOptions(reset_interval=0)
    fb = FakeBackend()
    with fb, pytest.raises(Human3RError, match="max_people"):
        FramePipeline(fb, PipelineOptions(max_people=9))


def test_wrong_input_shape_is_a_clear_error():
    fb = FakeBackend()
    with fb:
        pipe = FramePipeline(fb)
        with pytest.raises(Human3RError, match="incompatible shape"):
            pipe.step(np.zeros((3, 90, 128), np.float32), np.zeros((3, 112, 112), np.float32))


def test_runtime_golden_replay_keys_match_the_golden(golden_dir, require_golden, synthetic_smplx):
    """runtime.commands.replay.replay_golden assembles every step/demo/smplx key of the golden from the runtime pipeline
    (model outputs replayed, so this checks the host logic and the key assembly, not a model)."""
    from human3r_edge.runtime.commands.compare import compare_dicts, format_report
    from human3r_edge.runtime.commands.replay import replay_golden

    gb = GoldenReplayBackend(golden_dir, lean=False)
    out = replay_golden(golden_dir, gb, preprocessed=False, smplx_model=synthetic_smplx)
    golden = dict(np.load(golden_dir / "golden.npz"))
    report = compare_dicts(out, golden)
    lines = format_report(report)
    assert report.passed, "\n".join(lines)
    assert len(report.results) >= 40
    for key, ref in golden.items():
        if key.startswith(("step/", "demo/", "smplx/")):
            assert out[key].dtype == ref.dtype and out[key].shape == ref.shape, key
