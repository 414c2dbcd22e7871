"""Streaming frame sources: a video file, an image folder (natural order) or a camera, decoded in a background
thread into a bounded queue, so memory stays constant whatever the length of the stream.

    with open_source("clip.mp4", queue_size=4) as src:
        for f in src:          # Frame(index, timestamp, image (H, W, 3) uint8 RGB, payload)
            ...

* The first frame is read while opening, so a missing, unreadable, corrupt or empty source fails at once with a
  clear Human3RError instead of inside the thread.
* An optional `transform(image) -> payload` runs in the reader thread (e.g. the session's preprocessing), so
  decoding and preprocessing overlap inference; with a transform the raw image is dropped after it (memory).
* Errors raised in the thread are re-raised in the consumer; leaving the loop early, an exception in the
  consumer or Ctrl-C (KeyboardInterrupt) closes the source: the thread is told to stop, the queue is drained and
  the decoder released. At most `queue_size` decoded frames exist at a time (plus one in each thread's hands).
"""
from __future__ import annotations

import os
import queue
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.errors import Human3RError, msg

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
Transform = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class Frame:
    """One decoded frame; owned by the consumer once yielded."""

    index: int  # 0-based position in the stream (after stride)
    timestamp: float | None  # seconds: video position, or time since the camera opened; None for images
    image: np.ndarray | None  # (H, W, 3) uint8 RGB for video/camera; as decoded for images (see ImageFolder)
    payload: Any = None  # transform(image) when a transform was given (then image is None)


class _End:
    pass


@dataclass
class _Failure:
    error: BaseException


class FrameSource:
    """Base class: subclasses implement `_read_next() -> (image, timestamp) | None` and `_release()`."""

    description = "source"

    def __init__(self, queue_size: int = 4, transform: Transform | None = None, max_frames: int | None = None,
                 stride: int = 1, skip_corrupt: bool = False) -> None:
        if not isinstance(queue_size, int) or queue_size < 1:
            raise Human3RError(msg("queue_size", "must be an int >= 1", queue_size))
        if not isinstance(stride, int) or stride < 1:
            raise Human3RError(msg("stride", "must be an int >= 1", stride))
        self.transform = transform
        # skip_corrupt: an unreadable image of a folder is skipped and recorded in `skipped` instead of ending the
        # stream, and a video that stops early is recorded in `stopped_early` instead of warned about: the caller
        # reports incomplete input (`run` writes both into summary.json).
        self.skip_corrupt = skip_corrupt
        self.skipped: list[dict] = []  # {"position": source position, "file": name, "error": message}
        self.stopped_early: tuple[int, int] | None = None  # (frames decoded, frames the container announced)
        self.max_frames = max_frames
        self.stride = stride
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first: tuple[np.ndarray, float | None] | None = None
        self._closed = False
        self._done = False

    # ------------------------------------------------------------------------------------ subclass hooks
    def _read_next(self) -> tuple[np.ndarray, float | None] | None:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    # ------------------------------------------------------------------------------------ lifecycle
    def _probe(self) -> None:
        """Read the first frame synchronously (called by subclasses at the end of __init__)."""
        try:
            first = self._read_next()
        except BaseException:
            self._release()
            raise
        if first is None:
            self._release()
            raise Human3RError(msg(self.description, "contains no frames", None,
                                   "at least one decodable frame", "the file is empty, truncated or corrupt"))
        self._first = first

    @property
    def first_frame(self) -> np.ndarray:
        """The first decoded frame (for probing its size before streaming); None once streaming started."""
        if self._first is None:
            raise Human3RError(msg(self.description, "first frame no longer held", hint="probe before iterating"))
        return self._first[0]

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        """Stop the reader thread, drop queued frames and release the decoder. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                self._drain()
                self._thread.join(timeout=0.05)
            self._drain()
        else:
            self._release()
        self._first = None

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    # ------------------------------------------------------------------------------------ the reader thread
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._produce, name=f"human3r-{self.description}", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            index = 0
            raw = 0
            while not self._stop.is_set():
                if self.max_frames is not None and index >= self.max_frames:
                    break
                got: tuple[np.ndarray, float | None] | None
                if self._first is not None:
                    got, self._first = self._first, None
                else:
                    got = self._read_next()
                if got is None:
                    break
                if raw % self.stride:
                    raw += 1
                    continue
                raw += 1
                image, ts = got
                if self.transform is not None:
                    item = Frame(index, ts, None, self.transform(image))
                else:
                    item = Frame(index, ts, image)
                if not self._put(item):
                    return
                index += 1
            self._put(_End())
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(_Failure(exc))
        finally:
            self._release()

    # ------------------------------------------------------------------------------------ consumer side
    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise Human3RError(msg(self.description, "already closed"))
        if self._thread is None:
            self._start()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.1)  # a timeout keeps Ctrl-C responsive
                except queue.Empty:
                    if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
                        raise Human3RError(msg(self.description, "reader thread ended without a result"))
                    continue
                if isinstance(item, _End):
                    self._done = True
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            self.close()


# ------------------------------------------------------------------------------------------------ video / camera
def _cv2() -> Any:
    import cv2  # lazy: OpenCV is only needed for video and cameras

    return cv2


class VideoFile(FrameSource):
    """A video file decoded by OpenCV (FFmpeg). Frames are converted to RGB in the reader thread."""

    def __init__(self, path: str | os.PathLike, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = Path(path)
        self.description = f"video {self.path}"
        if not self.path.is_file():
            raise Human3RError(msg(self.description, "file not found", None, "an existing video file"))
        cv2 = _cv2()
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise Human3RError(msg(self.description, "cannot be opened", None, "a video OpenCV/FFmpeg can decode",
                                   "the file is corrupt, empty or not a video"))
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._read = 0
        self._probe()

    def _read_next(self) -> tuple[np.ndarray, float | None] | None:
        cv2 = _cv2()
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self.frame_count and self._read and self._read < self.frame_count - 1:
                self.stopped_early = (self._read, self.frame_count)
                if self.skip_corrupt:
                    return None
                warnings.warn(msg(self.description, "decoding stopped early", f"{self._read} of "
                                  f"{self.frame_count} frames", hint="the file may be truncated"), stacklevel=1)
            return None
        ts = self._read / self.fps if self.fps > 0 else float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) / 1e3
        self._read += 1
        if bgr.ndim == 2:
            return np.ascontiguousarray(np.repeat(bgr[:, :, None], 3, axis=2)), ts
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ts

    def _release(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            cap.release()


class Camera(VideoFile):
    """A live camera (OpenCV device index); endless until closed. Timestamps: seconds since it opened."""

    def __init__(self, index: int, **kw: Any) -> None:
        FrameSource.__init__(self, **kw)
        self.description = f"camera {index}"
        cv2 = _cv2()
        self._cap = cv2.VideoCapture(int(index))
        if not self._cap.isOpened():
            self._cap.release()
            raise Human3RError(msg(self.description, "cannot be opened", None, "a connected camera",
                                   "check the index (0 is the first camera) and permissions"))
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.frame_count = 0
        self._read = 0
        self._t0 = time.monotonic()
        self._probe()

    def _read_next(self) -> tuple[np.ndarray, float | None] | None:
        cv2 = _cv2()
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            return None
        self._read += 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic() - self._t0


# ------------------------------------------------------------------------------------------------ image folder
def natural_key(name: str) -> list:
    """Sort key where digit runs compare as numbers: frame2 < frame10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_image(path: Path) -> np.ndarray:
    """An image file as the reference opens it (PIL, EXIF transpose) -> (H, W) / (H, W, 3|4) uint8 or 16-bit
    (H, W) uint16 (which the session scales to 8 bits). 32-bit and float images are refused."""
    from PIL import Image
    from PIL.ImageOps import exif_transpose

    try:
        with Image.open(path) as im:
            im.load()
            img = exif_transpose(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise Human3RError(msg(f"image {path}", "cannot be read", repr(exc), "a readable image file")) from exc
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16)
    if img.mode in ("I", "F"):
        raise Human3RError(msg(f"image {path}", "32-bit integer or float image", img.mode,
                               "an 8- or 16-bit image", "convert it to 8 bits first"))
    if img.mode not in ("L", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    return np.asarray(img)


class ImageFolder(FrameSource):
    """Every image file in a folder (not recursive), in natural sort order."""

    def __init__(self, path: str | os.PathLike, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = Path(path)
        self.description = f"image folder {self.path}"
        if not self.path.is_dir():
            raise Human3RError(msg(self.description, "not a folder"))
        self.files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                             and p.is_file()), key=lambda p: natural_key(p.name))
        if not self.files:
            raise Human3RError(msg(self.description, "contains no images", None,
                                   "files ending in " + ", ".join(IMAGE_EXTENSIONS)))
        self._next = 0
        self._probe()

    def _read_next(self) -> tuple[np.ndarray, float | None] | None:
        while self._next < len(self.files):
            path = self.files[self._next]
            self._next += 1
            try:
                return read_image(path), None
            except Human3RError as exc:
                if not self.skip_corrupt:
                    raise
                self.skipped.append({"position": self._next - 1, "file": path.name, "error": str(exc)})
        return None


def open_source(source: str | os.PathLike | int, **kw: Any) -> FrameSource:
    """A video file, an image folder, or a camera index (int or a string of digits) -> an opened FrameSource.

    Keyword options: queue_size (4), transform (None), max_frames (None), stride (1).
    """
    if isinstance(source, bool):
        raise Human3RError(msg("source", "not a path or camera index", repr(source)))
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit() and not Path(source).exists()):
        return Camera(int(source), **kw)
    path = Path(source)
    if path.is_dir():
        return ImageFolder(path, **kw)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            raise Human3RError(msg(f"source {path}", "is a single image", None, "a video, a folder or a camera",
                                   "put the image in a folder, or call Session.step on it"))
        return VideoFile(path, **kw)
    raise Human3RError(msg(f"source {path}", "not found", None, "an existing video file, image folder or camera "
                           "index", "check the path"))
