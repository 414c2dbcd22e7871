"""`video/x-raw(memory:CUDAMemory)` buffers (GStreamer's nvcodec plugins: nvh264dec, cudaupload, cudaconvert)
handed to the Session as a CUDA pointer plus stream, without a copy to the host.

Written against GStreamer 1.22's libgstcuda C API through ctypes (Debian 12 ships no GstCuda typelib), and
NOT TESTED HERE: this machine has no GPU and no nvcodec plugins (docs/gstreamer.md says what is tested where).

* The buffer's GstCudaMemory is mapped with GST_MAP_CUDA: `data` is then a device pointer (no download).
* The producer's CUDA stream (`gst_cuda_memory_get_stream`) goes into `__cuda_array_interface__['stream']`;
  memory without one names the legacy default stream (1): both make device_frames.GpuFramePreparer synchronise
  the context before its kernels read the frame.
* Packed RGB/BGR/RGBA/BGRA frames are read in place by the preprocessing kernels on the GPU backends (zero-copy,
  device_frames.py); on ort-cpu the Session copies them to the host through pycuda.
  NV12 is converted to RGB on the device first (kernels/nv12.cu, loaded from its shipped PTX: no nvcc at run time;
  into one device buffer reused per size). The converter is tested through the strict stand-in and the host
  emulation against the CPU path (frames.nv12_to_rgb, OpenCV): tests/test_gst_units.py.
* Contexts: GstCuda creates its own CUDA context; the GPU backends use the device's primary context. The element
  answers the `gst.cuda.context` context query with a GstCudaContext wrapping the primary context
  (`gst_cuda_context_new_wrapped`), so upstream nvcodec elements allocate in the context our kernels run in.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from human3r_edge.kernels.build import load_module
from human3r_edge.runtime.backends.capabilities import CudaContextProvider
from human3r_edge.errors import BackendUnavailable, Human3RError, msg

GST_MAP_READ = 1
GST_MAP_CUDA = 1 << 17  # GST_MAP_FLAG_LAST << 1 (gst/cuda/gstcudamemory.h)
CUDA_CONTEXT_TYPE = "gst.cuda.context"

class _MapInfo(ctypes.Structure):
    _fields_ = [("memory", ctypes.c_void_p), ("flags", ctypes.c_int), ("data", ctypes.c_void_p),
                ("size", ctypes.c_size_t), ("maxsize", ctypes.c_size_t), ("user_data", ctypes.c_void_p * 4),
                ("_gst_reserved", ctypes.c_void_p * 4)]


def _lib(name: str) -> Any:
    path = ctypes.util.find_library(name)
    if path is None:
        raise BackendUnavailable(msg("memory:CUDAMemory", f"lib{name} not found", None,
                                     "GStreamer's CUDA library (gst-plugins-bad >= 1.22, nvcodec)"))
    return ctypes.CDLL(path)


@dataclass
class DeviceFrame:
    """A `__cuda_array_interface__` (v3) view of a mapped device frame, valid while its buffer is mapped."""

    ptr: int
    shape: tuple[int, int, int]  # (H, W, C) uint8
    pitch: int  # bytes per row
    stream: int  # CUstream handle; 1: the legacy default stream
    channel_order: str
    keep: Any = None  # what backs `ptr` when it is our own buffer (the NV12 conversion output)

    @property
    def __cuda_array_interface__(self) -> dict:
        h, w, c = self.shape
        return {"shape": self.shape, "typestr": "|u1", "data": (self.ptr, True), "version": 3,
                "strides": None if self.pitch == w * c else (self.pitch, c, 1), "stream": self.stream}


class _Nv12Converter:
    """The NV12 kernel (kernels/nv12.cu, loaded once from its shipped PTX into the current CUDA context) and its
    RGB output buffer (reallocated when the size changes). `driver`: pycuda.driver (imported when omitted)."""

    def __init__(self, driver: Any = None) -> None:
        if driver is None:
            try:
                import pycuda.driver as pycuda_driver
            except ImportError as exc:
                raise BackendUnavailable(msg("memory:CUDAMemory NV12", "pycuda is not installed", None,
                                             hint="pip install pycuda, or convert on the GPU upstream "
                                             "(cudaconvert ! video/x-raw(memory:CUDAMemory),format=RGBA)")) from exc
            driver = pycuda_driver
        self.driver = driver
        self.fn = load_module(driver, "nv12.cu").get_function("nv12_to_rgb")
        self.out: Any = None
        self.size = (0, 0)

    def __call__(self, y: int, y_pitch: int, uv: int, uv_pitch: int, w: int, h: int, stream: Any) -> Any:
        if self.size != (w, h):
            self.out = self.driver.mem_alloc(w * h * 3)  # held here: the Session reads it after this returns
            self.size = (w, h)
        self.fn(np.uintp(y), np.int32(y_pitch), np.uintp(uv), np.int32(uv_pitch), self.out, np.int32(w),
                np.int32(h), block=(32, 8, 1), grid=((w + 31) // 32, (h + 7) // 8), stream=stream)
        return self.out


@contextlib.contextmanager
def cuda_frame(buf: Any, layout: Any, run: Any) -> Iterator[DeviceFrame]:
    """Map `buf` (one GstCudaMemory) for CUDA and yield a DeviceFrame; unmapped on exit. `run` holds the NV12
    converter between frames (attribute `_nv12`)."""
    gst = _lib("gstreamer-1.0")
    cuda = _lib("gstcuda-1.0")
    gst.gst_memory_map.argtypes = [ctypes.c_void_p, ctypes.POINTER(_MapInfo), ctypes.c_int]
    gst.gst_memory_map.restype = ctypes.c_int
    gst.gst_memory_unmap.argtypes = [ctypes.c_void_p, ctypes.POINTER(_MapInfo)]
    cuda.gst_cuda_memory_get_stream.argtypes = [ctypes.c_void_p]
    cuda.gst_cuda_memory_get_stream.restype = ctypes.c_void_p
    cuda.gst_cuda_stream_get_handle.argtypes = [ctypes.c_void_p]
    cuda.gst_cuda_stream_get_handle.restype = ctypes.c_void_p
    if buf.n_memory() != 1:
        raise Human3RError(msg("human3r CUDA buffer", "not one memory block", buf.n_memory(), 1))
    mem = buf.peek_memory(0)
    mem_ptr = hash(mem)  # PyGObject: a boxed object's hash is its C pointer (what pyds.get_nvds_buf_surface uses)
    info = _MapInfo()
    if not gst.gst_memory_map(mem_ptr, ctypes.byref(info), GST_MAP_READ | GST_MAP_CUDA):
        raise Human3RError(msg("human3r CUDA buffer", "cannot be mapped with GST_MAP_CUDA", None,
                               "memory:CUDAMemory from GStreamer's nvcodec plugins"))
    try:
        stream_obj = cuda.gst_cuda_memory_get_stream(mem_ptr)
        stream = int(cuda.gst_cuda_stream_get_handle(stream_obj) or 1) if stream_obj else 1
        ptr = int(info.data)
        w, h = layout.width, layout.height
        from human3r_edge.runtime.gst.frames import FORMATS

        channels, order = FORMATS[layout.format]
        if channels:
            yield DeviceFrame(ptr + layout.offsets[0], (h, w, channels), layout.strides[0], stream, order)
        else:
            conv = getattr(run, "_nv12", None) or _Nv12Converter()
            run._nv12 = conv
            s = conv.driver.Stream(handle=stream) if stream not in (0, 1) else None
            out = conv(ptr + layout.offsets[0], layout.strides[0], ptr + layout.offsets[1], layout.strides[1],
                       w, h, s)
            yield DeviceFrame(int(out), (h, w, 3), w * 3, stream, "RGB", keep=out)
    finally:
        gst.gst_memory_unmap(mem_ptr, ctypes.byref(info))


def answer_context_query(element: Any, query: Any, run: Any) -> bool:
    """Answer upstream's `gst.cuda.context` query with a GstCudaContext wrapping the primary context the GPU
    backends use (so decoder output is allocated where our kernels run). False: not ours to answer."""
    if query.parse_context_type()[1] != CUDA_CONTEXT_TYPE:
        return False
    backend = getattr(getattr(run, "session", None), "backend", None)
    provider = isinstance(backend, CudaContextProvider)
    if backend is None or not (provider or getattr(backend, "name", "") == "trt"):
        return False  # a CPU backend: let GStreamer pick its own context (frames are then copied to the host)
    try:
        import pycuda.driver as driver
    except ImportError:
        return False
    if isinstance(backend, CudaContextProvider):
        backend.ensure_cuda_context()
    ctx = driver.Context.get_current()
    if ctx is None:
        return False
    cuda = _lib("gstcuda-1.0")
    cuda.gst_cuda_context_new_wrapped.argtypes = [ctypes.c_void_p, ctypes.c_int]
    cuda.gst_cuda_context_new_wrapped.restype = ctypes.c_void_p
    cuda.gst_cuda_handle_context_query.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    cuda.gst_cuda_handle_context_query.restype = ctypes.c_int
    wrapped = getattr(run, "_gst_cuda_context", None)
    if wrapped is None:
        wrapped = cuda.gst_cuda_context_new_wrapped(ctx.handle, _device_ordinal(driver, ctx))
        run._gst_cuda_context = wrapped  # one reference held for the element's lifetime
    element_ptr = ctypes.c_void_p.from_address(id(element) + ctypes.sizeof(ctypes.c_ssize_t) * 2).value
    return bool(cuda.gst_cuda_handle_context_query(element_ptr, hash(query), wrapped))


def _device_ordinal(driver: Any, ctx: Any) -> int:
    dev = ctx.get_device()
    for i in range(driver.Device.count()):
        if driver.Device(i).pci_bus_id() == dev.pci_bus_id():
            return i
    return 0
