"""Session API over a fake backend: frame inputs (each bad-input case), results, reset, run() sources."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from human3r_edge.runtime import preprocess as pp
from human3r_edge.errors import Human3RError
from human3r_edge.runtime.session import FrameResult, Session, SessionOptions
from human3r_edge.runtime.video import open_source
from support.doubles import FakeBackend
from support.fake_gpu import fake_gpu  # noqa: F401  (fixture)
from support.session_inputs import FakeSkinner, frame, people


def session(**opts):
    return Session(FakeBackend(people=people), FakeSkinner(), SessionOptions(**opts))


def test_step_result_contents():
    with session(dense=True, human_mask=True) as s:
        r = s.step(frame())
        r2 = s.step(frame(seed=1))
    assert isinstance(r, FrameResult) and r.index == 0 and r2.index == 1
    assert r.image.shape == (96, 128, 3) and r.image.dtype == np.uint8
    np.testing.assert_array_equal(pp.u8_to_unit(r.image), pp.preprocess_rgb(frame(), 128))
    assert r.c2w.shape == (4, 4) and r.intrinsics.shape == (3, 3)
    assert abs(r.focal - 100.0) < 1e-3 and r.intrinsics[0, 2] == 64 and r.intrinsics[1, 2] == 48
    assert len(r.people) == 2 and r.track_ids == [0, 1] and r2.track_ids == [0, 1]
    p = r.people[0]
    assert p.rotmat.shape == (53, 3, 3) and p.betas.shape == (10,) and p.transl.shape == (3,)
    assert p.vertices_cam.shape == (20, 3) and p.joints_world.shape == (5, 3)
    assert 0 <= p.head_uv[0] <= 127 and 0 <= p.head_uv[1] <= 95
    np.testing.assert_allclose(r2.people[0].vertices_world, r2.people[0].vertices_cam @ r2.c2w[:3, :3].T
                               + r2.c2w[:3, 3], atol=1e-6)
    assert r.depth.shape == (96, 128) and r.points_world.shape == (96, 128, 3) and r.confidence.min() >= 1
    np.testing.assert_array_equal(r.depth, r.points_cam[..., 2])
    assert r.human_mask.shape == (96, 128)
    assert {"preprocess", "encoder", "decoder", "smpl_head", "skinning"} <= set(r.timings)


def test_results_are_owned_by_the_caller():
    with session(dense=True) as s:
        r1 = s.step(frame())
        keep = r1.points_cam.copy(), r1.c2w.copy(), r1.people[0].rotmat.copy()
        s.step(frame(seed=3))
    np.testing.assert_array_equal(r1.points_cam, keep[0])
    np.testing.assert_array_equal(r1.c2w, keep[1])
    np.testing.assert_array_equal(r1.people[0].rotmat, keep[2])


def test_smplx_params_names_and_formats():
    with session() as s:
        p = s.step(frame()).people[0]
    rm = p.smplx_params()
    assert set(rm) == {"global_orient", "body_pose", "left_hand_pose", "right_hand_pose", "jaw_pose", "betas",
                       "expression", "transl_head_cam"}  # no smplx `transl` without a real SMPL-X model
    assert rm["body_pose"].shape == (21, 3, 3) and rm["jaw_pose"].shape == (1, 3, 3)
    aa = p.smplx_params("axis_angle")
    assert aa["body_pose"].shape == (63,) and aa["left_hand_pose"].shape == (45,) and aa["global_orient"].shape == (3,)
    np.testing.assert_allclose(aa["body_pose"], 0, atol=1e-7)  # the fake predicts identity rotations
    with pytest.raises(Human3RError, match="rotation format"):
        p.smplx_params("euler")


def reference_result(img):
    with session() as s:
        return s.step(img)


def test_grayscale_rgba_16bit_float_are_converted():
    base = frame()
    gray = base[..., 0].copy()
    ref_gray = reference_result(np.repeat(gray[..., None], 3, 2)).image
    with session() as s:
        np.testing.assert_array_equal(s.step(gray).image, ref_gray)
        np.testing.assert_array_equal(s.step(gray[..., None]).image, ref_gray)
        rgba = np.concatenate([base, np.full(base.shape[:2] + (1,), 17, np.uint8)], 2)
        np.testing.assert_array_equal(s.step(rgba).image, reference_result(base).image)
        u16 = base.astype(np.uint16) * 256 + 100  # high byte = the 8-bit value
        np.testing.assert_array_equal(s.step(u16).image, reference_result(base).image)
        f = base.astype(np.float32) / 255.0
        np.testing.assert_array_equal(s.step(f).image, reference_result(base).image)


def test_bgr_channel_order():
    base = frame()
    with session(channel_order="BGR") as s:
        r = s.step(np.ascontiguousarray(base[..., ::-1]))
    np.testing.assert_array_equal(r.image, reference_result(base).image)


def test_nan_and_out_of_range_float_frames_refused():
    f = frame().astype(np.float32) / 255.0
    f[3, 4, 1] = np.nan
    with session() as s:
        with pytest.raises(Human3RError, match="non-finite values"):
            s.step(f)
        with pytest.raises(Human3RError, match=r"outside \[0, 1\]"):
            s.step(frame().astype(np.float32))
        with pytest.raises(Human3RError, match="unsupported dtype"):
            s.step(frame().astype(np.int32))


def test_portrait_frames_refused_or_cropped():
    portrait = frame(150, 200)
    with session() as s:
        with pytest.raises(Human3RError, match="does not preprocess to the export resolution.*96x128"):
            s.step(portrait)
    with session(fit="crop") as s:
        r = s.step(portrait)
    assert r.image.shape == (96, 128, 3)


def test_frames_smaller_than_a_patch_refused():
    with session() as s:
        with pytest.raises(Human3RError, match="smaller than one 16-px patch"):
            s.step(frame(12, 9))


def test_8k_frame():
    big = np.zeros((4320, 7680, 3), np.uint8)  # 16:9 8K UHD
    big[:, :3840] = 200
    with Session(FakeBackend(people=people, width=128, height=64)) as s:  # a 16:9 export (128x72 -> 128x64)
        r = s.step(big)
    assert r.image.shape == (64, 128, 3)
    assert r.image[:, :60].mean() > 190 and r.image[:, 68:].mean() < 10
    with session(fit="crop") as s:  # into a 4:3 export by cropping
        assert s.step(big).image.shape == (96, 128, 3)


def test_non_contiguous_arrays():
    base = frame(300, 400)  # (400, 300, 3): transposed it is 300x400 landscape
    views = [base.transpose(1, 0, 2), frame(400, 300)[::1, ::-1], frame(800, 600)[::2, ::2]]
    for v in views:
        assert not v.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(reference_result(v).image, reference_result(np.ascontiguousarray(v)).image)


def test_frame_size_change_mid_stream_warns_once():
    with session() as s:
        s.step(frame(200, 150))
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            r = s.step(frame(400, 300))
            s.step(frame(640, 480))
        assert r.image.shape == (96, 128, 3)
        assert len([w for w in rec if "size changed" in str(w.message)]) == 1
        with pytest.raises(Human3RError, match="export resolution"):
            s.step(frame(200, 100))  # 2:1 gives 128x64, not the export's 128x96


def test_channels_first_and_bad_shapes():
    with session() as s:
        with pytest.raises(Human3RError, match="channels-first"):
            s.step(frame().transpose(2, 0, 1))
        with pytest.raises(Human3RError, match="unsupported shape"):
            s.step(np.zeros((20, 20, 2), np.uint8))
        with pytest.raises(Human3RError, match="unsupported frame type"):
            s.step("frame.png")


def test_dlpack_cpu_tensor():
    import torch

    base = frame()
    with session() as s:
        r = s.step(torch.from_numpy(base))
    np.testing.assert_array_equal(r.image, reference_result(base).image)


def test_cuda_array_without_pycuda_is_a_clear_error(monkeypatch):
    import sys

    class DeviceFrame:
        __cuda_array_interface__ = {"shape": (150, 200, 3), "typestr": "|u1", "data": (1234, False), "version": 3}

    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with session() as s, pytest.raises(Human3RError, match="pycuda is not installed"):
        s.step(DeviceFrame())


def test_reset_restarts_the_world_frame():
    with session() as s:
        a = [s.step(frame(seed=i)) for i in range(3)]
        s.reset()
        b = s.step(frame())
    assert not np.allclose(a[2].c2w, np.eye(4))
    np.testing.assert_array_equal(b.c2w, np.eye(4, dtype=np.float32))
    assert b.segment == 1 and min(b.track_ids) >= 2


def test_not_started_and_options():
    s = session()
    with pytest.raises(Human3RError, match="not started"):
        s.step(frame())
    with pytest.raises(Human3RError, match="channel_order"):
        SessionOptions(channel_order="RGBA")
    with pytest.raises(Human3RError, match="fit"):
        SessionOptions(fit="stretch")


def test_no_skinner_means_no_vertices():
    with Session(FakeBackend(people=people)) as s:
        p = s.step(frame()).people[0]
    assert p.vertices_cam is None and p.rotmat.shape == (53, 3, 3)


def test_run_over_iterables_sources_and_paths(tmp_path):
    frames = [frame(seed=i) for i in range(4)]
    with session() as s:
        assert [r.index for r in s.run(frames)] == [0, 1, 2, 3]
        assert [r.index for r in s.run(np.stack(frames), max_frames=2)] == [4, 5]
    path = tmp_path / "v.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (200, 150))
    for f in frames:
        vw.write(f)
    vw.release()
    with session() as s:
        res = list(s.run(path))
        assert [r.timestamp for r in res] == [0.0, 0.2, 0.4, 0.6]
        with open_source(path) as src:
            assert len(list(s.run(src))) == 4
        it = s.run(str(path))
        next(it)
        it.close()  # early exit stops the reader thread
    with session() as s, pytest.raises(Human3RError, match="not found"):
        list(s.run(tmp_path / "missing.mp4"))


def test_cuda_array_interface_frame_is_copied_through_pycuda(fake_gpu):
    """A device frame (__cuda_array_interface__) on this CPU machine, through the strict pycuda stand-in: the
    session makes the primary context current for the copy (the frame's producer allocated it there) and reads
    the frame exactly."""
    base = frame()
    ctx = fake_gpu.push_primary()  # the producer (torch, CuPy) works in the primary context
    dev = fake_gpu.cuda.mem_alloc(base.nbytes)
    fake_gpu.cuda.memcpy_htod(dev, base)
    ctx.pop()

    class DeviceFrame:
        __cuda_array_interface__ = {"shape": base.shape, "typestr": "|u1", "data": (int(dev), False),
                                    "strides": None, "version": 3}

    with session() as s:
        r = s.step(DeviceFrame())
    np.testing.assert_array_equal(r.image, reference_result(base).image)

    class Strided:
        __cuda_array_interface__ = {"shape": (150, 100, 3), "typestr": "|u1", "data": (int(dev), False),
                                    "strides": (600, 6, 1), "version": 3}

    with session() as s, pytest.raises(Human3RError, match="non-contiguous device frame"):
        s.step(Strided())
