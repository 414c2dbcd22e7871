"""Frames preprocessed on the GPU, straight into a GPU backend's input buffers (trt, ort-cuda, ort-trt).

`GpuFramePreparer` runs the preprocessing kernels of `kernels/preprocess.cu` (PIL-exact resize and centre crop,
then the human branch's resize and pad) on the backend's stream and writes their results into the device buffers
the encoder engine reads (`backend.device_buffer("img")`, `("img_mhmr")`); the encoder is then run with the
`ON_DEVICE` marker, so the model images never cross the bus.

* A `__cuda_array_interface__` frame (a CUDA torch tensor, a CuPy array, a row-pitched GPU image) in uint8 is
  read where it lies: **zero-copy**. Its layout may be (H, W), (H, W, 1|3|4), C-contiguous or with a row pitch
  (pixels contiguous within a row). It is read after its producer's work is done: the stream the caller passes
  (`Session.step(frame, stream=...)`), else the interface's "stream" entry; a frame naming none (torch exports no
  "stream" key) waits for the whole context.
* A host frame is copied once (uint8, after the same normalisation as the CPU path) and preprocessed on the GPU.
* A frame whose size does not preprocess to the export's resolution, or a device frame of another dtype or
  layout, takes the CPU path (`prepare` returns None and the Session handles it as on the CPU).

Only the small CUT3R image (3 x H x W float32, for the outputs' colours) is copied back to the host.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from human3r_edge.runtime import preprocess as pp
from human3r_edge.runtime.backends.capabilities import CudaContextProvider, adopted, takes_device_feeds
from human3r_edge.errors import BackendUnavailable, Human3RError, msg

IMG_INPUT, MHMR_INPUT = "img", "img_mhmr"


def device_frame_layout(cai: dict) -> tuple[int, int, int, int, int] | None:
    """(pointer, h0, w0, channels, row pitch in bytes) of a uint8 CUDA array the kernels can read in place,
    or None when it has another dtype or layout (the caller then copies it to the host)."""
    if np.dtype(cai.get("typestr", "")) != np.uint8:
        return None
    shape = tuple(int(s) for s in cai["shape"])
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or shape[2] not in (1, 3, 4):
        return None
    h0, w0, c = shape
    strides = cai.get("strides")
    if strides is None:
        pitch = w0 * c
    else:
        st = tuple(int(s) for s in strides) + ((1,) if len(strides) == 2 else ())
        if st[2] != 1 or st[1] != c or st[0] < w0 * c:
            return None
        pitch = st[0]
    return int(cai["data"][0]), h0, w0, c, pitch


class GpuFramePreparer:
    """Preprocess frames on the GPU into `backend`'s encoder input buffers. Not thread-safe: call it from the
    thread that runs the backend (its CUDA context must be current), one frame at a time, and run the encoder on
    a frame before preparing the next (the buffers hold one frame).

    backend: an active backend with `accepts_device_feeds` (trt, ort-cuda, ort-trt); one that has
    `ensure_cuda_context()` (the ONNX Runtime ones) is asked to make its CUDA context current first; the trt
    backend's is current once it is active. size: the CUT3R `size` (long side);
    square: the human branch's R. driver/compiler: pycuda modules (default: imported lazily).
    """

    def __init__(self, backend: Any, size: int, square: int, *, driver: Any = None, compiler: Any = None) -> None:
        from human3r_edge.runtime.preprocess_gpu import CudaPreprocessor

        if not takes_device_feeds(backend):
            raise BackendUnavailable(msg("GPU preprocessing", "backend has no device input buffers",
                                         getattr(backend, "name", type(backend).__name__),
                                         "a GPU backend (trt, ort-cuda, ort-trt)"))
        if isinstance(backend, CudaContextProvider) and driver is None:
            backend.ensure_cuda_context()
        self.backend = backend
        self.pre = CudaPreprocessor(size, square, driver=driver, compiler=compiler)
        self.driver = self.pre.driver
        self.width, self.height = (int(v) for v in backend.spec.resolution)
        self.size = int(size)
        self._img_host = self.driver.pagelocked_empty((3, self.height, self.width), np.float32)
        self.zero_copy_frames = 0  # device frames read in place (for tests and summaries)
        adopted(backend, self)  # freed when the backend deactivates, while its CUDA context is still valid

    def close(self) -> None:
        """Free the kernels' buffers and the pinned staging (the backend calls this at deactivation)."""
        self.pre.close()
        free = getattr(getattr(self._img_host, "base", None), "free", None)
        if callable(free):
            free()
        self._img_host = None

    def fits(self, h0: int, w0: int) -> bool:
        """True if an (h0, w0) frame preprocesses to the export's resolution (else the CPU path decides)."""
        try:
            return pp.output_shape(w0, h0, self.size) == (self.height, self.width)
        except Human3RError:
            return False

    def row_bytes(self, name: str) -> int:
        """Bytes of one batch row of input `name` ('img' (3, H, W) or 'img_mhmr' (3, R, R) float32)."""
        return 4 * 3 * (self.height * self.width if name == IMG_INPUT else self.pre.mhmr_res ** 2)

    def row_pointer(self, name: str, row: int) -> int:
        """Device address of batch row `row` of input `name`: multi-stream backends bind the first B rows of
        their N-row input buffers (trt `_dev[name]`, ort OrtValue), row b at b * row_bytes."""
        return int(self.backend.device_buffer(name)) + int(row) * self.row_bytes(name)

    def upload_row(self, row: int, img: np.ndarray, img_mhmr: np.ndarray) -> None:
        """Host-prepared images (3, H, W) and (3, R, R) float32 into batch row `row` of the input buffers (a
        stream that took the CPU path in a batch whose other rows were written by the kernels)."""
        be = self.backend
        be.stream.synchronize()  # earlier kernels on the backend's stream are done before the synchronous copy
        for name, a in ((IMG_INPUT, img), (MHMR_INPUT, img_mhmr)):
            a = np.ascontiguousarray(a, np.float32)
            if a.nbytes != self.row_bytes(name):
                raise Human3RError(msg(f"batch row {row} of {name}", "wrong size", a.shape,
                                       f"{self.row_bytes(name) // 4} float32"))
            self.driver.memcpy_htod(self.row_pointer(name, row), a)

    def move_rows(self, rows: list[int]) -> None:
        """Batch rows `rows` (ascending) of both input buffers moved to rows 0, 1, ... (device to device, on the
        backend's stream): the images of a subset of a batch, e.g. the streams whose duplicate view follows a
        reset. Row rows[i] >= i and the targets ascend, so no source is overwritten before it is read."""
        be = self.backend
        if list(rows) != sorted(set(rows)):
            raise Human3RError(msg("move_rows", "rows must ascend without repeats", rows))
        for i, r in enumerate(rows):
            if i == r:
                continue
            for name in (IMG_INPUT, MHMR_INPUT):
                self.driver.memcpy_dtod_async(self.row_pointer(name, i), self.row_pointer(name, r),
                                              self.row_bytes(name), be.stream)
        be.stream.synchronize()

    def prepare(self, frame: Any, channel_order: str, stream: Any = None, row: int = 0
                ) -> tuple[np.ndarray, tuple[int, int]] | None:
        """Preprocess `frame` into the encoder's input buffers (batch row `row` of a multi-stream backend's).
        Returns (the CUT3R image (3, H, W) float32, a new host array owned by the caller, and the source (h0,
        w0)), or None if the frame must take the CPU path.

        stream: the caller's CUDA stream that produced a device frame (int handle, pycuda / torch / CuPy stream).
        The frame is read only after that stream's work is done; without it, the interface's "stream" entry
        decides, and a frame that names none (torch exports no "stream" key) waits for the whole context."""
        from human3r_edge.runtime.cuda_util import producer_stream, wait_for_producer
        from human3r_edge.runtime.frames import check_frame_size, normalize_frame

        order = str(channel_order).upper()
        cai = getattr(frame, "__cuda_array_interface__", None)
        layout = device_frame_layout(cai) if cai is not None else None
        if cai is not None and layout is not None:
            ptr, h0, w0, c, pitch = layout
            check_frame_size(h0, w0)
            if not self.fits(h0, w0):
                return None
            wait_for_producer(self.driver, producer_stream(cai, stream))
            args: tuple = (ptr, h0, w0, c, pitch, order == "BGR" and c > 1)
            self.zero_copy_frames += 1
        else:
            a = normalize_frame(frame, stream=stream)
            h0, w0 = int(a.shape[0]), int(a.shape[1])
            if not self.fits(h0, w0):
                return None
            args = self.pre.upload(a, order)
        be = self.backend
        img_ptr = self.row_pointer(IMG_INPUT, row) if row else be.device_buffer(IMG_INPUT)
        mhmr_ptr = self.row_pointer(MHMR_INPUT, row) if row else be.device_buffer(MHMR_INPUT)
        self.pre.launch(*args, img_out=img_ptr, mhmr_out=mhmr_ptr, stream=be.stream)
        self.driver.memcpy_dtoh_async(self._img_host, img_ptr, be.stream)
        be.stream.synchronize()
        return self._img_host.copy(), (h0, w0)

