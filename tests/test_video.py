"""Streaming sources: decoding, order, colour, bounded memory, errors re-raised, clean shutdown."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from human3r_edge.errors import Human3RError
from human3r_edge.runtime.video import FrameSource, ImageFolder, VideoFile, natural_key, open_source


def write_video(path, n, w=64, h=48, fps=10.0):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, :, 2] = 200  # red in BGR
        f[:, :, 1] = i * 20 % 256
        vw.write(f)
    vw.release()
    return path


def test_video_frames_are_rgb_in_order(tmp_path):
    p = write_video(tmp_path / "a.mp4", 5)
    with open_source(p) as src:
        assert isinstance(src, VideoFile) and src.fps == pytest.approx(10.0)
        frames = list(src)
    assert [f.index for f in frames] == list(range(5))
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert abs(int(frames[0].image[..., 0].mean()) - 200) < 12 and frames[0].image[..., 2].mean() < 12
    assert [round(f.timestamp, 3) for f in frames] == [0.0, 0.1, 0.2, 0.3, 0.4]
    greens = [float(f.image[..., 1].mean()) for f in frames]
    assert greens == sorted(greens)


def test_max_frames_stride_and_transform(tmp_path):
    p = write_video(tmp_path / "a.mp4", 9)
    with open_source(p, stride=2, max_frames=3, transform=lambda im: im.shape) as src:
        frames = list(src)
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.image is None and f.payload == (48, 64, 3) for f in frames)


def test_folder_natural_order_and_image_kinds(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.full((20, 30), 7, np.uint8), "L").save(d / "frame10.png")
    Image.fromarray(np.full((20, 30, 4), 9, np.uint8), "RGBA").save(d / "frame2.png")
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(d / "frame1.png")
    (d / "notes.txt").write_text("ignored")
    with open_source(d) as src:
        assert isinstance(src, ImageFolder)
        assert [p.name for p in src.files] == ["frame1.png", "frame2.png", "frame10.png"]
        frames = list(src)
    assert frames[0].image.dtype == np.uint16 and frames[0].image[0, 0] == 40000
    assert frames[1].image.shape == (20, 30, 4)
    assert frames[2].image.shape == (20, 30)


def test_natural_key():
    assert sorted(["f10", "f2", "F1"], key=natural_key) == ["F1", "f2", "f10"]


def test_missing_corrupt_empty_sources(tmp_path):
    with pytest.raises(Human3RError, match="not found"):
        open_source(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(Human3RError, match="cannot be opened|no frames"):
        open_source(bad)
    empty = tmp_path / "empty.mp4"
    vw = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    vw.release()  # a container with zero frames (or an empty file, depending on the OpenCV build)
    with pytest.raises(Human3RError, match="cannot be opened|no frames"):
        open_source(empty)
    empty_avi = tmp_path / "empty.avi"
    vw = cv2.VideoWriter(str(empty_avi), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    vw.release()  # a valid AVI container holding zero frames
    with pytest.raises(Human3RError, match="contains no frames"):
        open_source(empty_avi)
    (tmp_path / "e").mkdir()
    with pytest.raises(Human3RError, match="no images"):
        open_source(tmp_path / "e")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one.png")
    with pytest.raises(Human3RError, match="single image"):
        open_source(tmp_path / "one.png")
    with pytest.raises(Human3RError, match="camera 97 \\| cannot be opened"):
        open_source(97)


def test_corrupt_image_in_folder_reraised_in_consumer(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "a1.png")
    (d / "a2.png").write_bytes(b"not a png")
    with open_source(d) as src:
        it = iter(src)
        assert next(it).index == 0
        with pytest.raises(Human3RError, match="a2.png \\| cannot be read"):
            next(it)


class Endless(FrameSource):
    description = "endless"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.produced = 0
        self.released = threading.Event()
        self._probe()

    def _read_next(self):
        self.produced += 1
        return np.full((4, 4, 3), self.produced % 256, np.uint8), None

    def _release(self):
        self.released.set()


def test_bounded_queue_constant_memory():
    src = Endless(queue_size=3)
    it = iter(src)
    next(it)
    time.sleep(0.3)  # the reader fills the queue and then must block
    assert src._queue.qsize() <= 3
    assert src.produced <= 1 + 3 + 2
    for _ in range(50):
        next(it)
    time.sleep(0.2)
    assert src.produced <= 51 + 3 + 2
    it.close()
    assert src.released.wait(2) and not src._thread.is_alive()


def test_early_break_and_keyboard_interrupt_stop_the_thread():
    src = Endless(queue_size=2)
    with pytest.raises(KeyboardInterrupt):
        with src:
            for f in src:
                if f.index == 3:
                    raise KeyboardInterrupt
    assert src.released.is_set() and not src._thread.is_alive()
    src2 = Endless(queue_size=2)
    for f in src2:
        if f.index == 2:
            break
    assert src2.released.wait(2) and not src2._thread.is_alive()


def test_transform_error_reraised():
    def boom(im):
        if im[0, 0, 0] == 4:
            raise ValueError("bad frame 4")
        return im

    src = Endless(transform=boom)
    got = []
    with pytest.raises(ValueError, match="bad frame 4"):
        for f in src:
            got.append(f.index)
    assert got == [0, 1, 2]
    assert src.released.is_set()


def test_closed_source_refuses_iteration():
    src = Endless()
    src.close()
    with pytest.raises(Human3RError, match="closed"):
        iter(src).__next__()
