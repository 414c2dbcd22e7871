"""Fake `pycuda` (driver, autoinit, compiler) over FakeDevice: the API subset the runtime uses, strictly checked."""
from __future__ import annotations

import types
from typing import Any

import numpy as np

from .device import Allocation, FakeDevice, PyContext


def make_pycuda_modules(dev: FakeDevice) -> dict[str, types.ModuleType]:
    """Module objects for sys.modules: 'pycuda', 'pycuda.driver', 'pycuda.autoinit', 'pycuda.compiler'."""

    class Error(RuntimeError):
        pass

    class LogicError(Error):
        pass

    class DeviceAllocation:
        """Owns one fake device allocation; freed by free() or when garbage collected (like pycuda)."""

        def __init__(self, a: Allocation) -> None:
            self._a = a

        def __int__(self) -> int:
            return self._a.base

        __index__ = __int__

        def free(self) -> None:
            if self._a.alive and dev.released(self._a.owner, f"device allocation {self._a.tag}"):
                dev.free(self._a)

        def __del__(self) -> None:
            if self._a.alive and dev.released(self._a.owner, f"device allocation {self._a.tag} (garbage collected)",
                                                     in_del=True):
                dev.free(self._a)  # a buffer dropped while TensorRT still holds its address: caught on next use

    class PagelockedHostAllocation:
        """The `.base` of a pagelocked_empty array, as in pycuda: `.free()` releases the page-locked memory."""

        def __init__(self, shape: Any, dtype: Any, order: str, owner: PyContext | None) -> None:
            self._arr = np.empty(shape, dtype, order=order)
            self._arr.reshape(-1).view(np.uint8).fill(0xFF)  # uninitialised (NaN for floats), as real pinned memory
            self.__array_interface__ = self._arr.__array_interface__
            self.owner, self.alive = owner, True
            dev.register_pinned(self._arr)
            dev.live_pinned[id(self)] = f"pagelocked {self._arr.shape} {self._arr.dtype}"

        def free(self) -> None:
            if self.alive and dev.released(self.owner, "page-locked host allocation"):
                self.alive = False
                dev.unregister_pinned(self._arr)
                dev.live_pinned.pop(id(self), None)

        def __del__(self) -> None:
            if self.alive and dev.released(self.owner, "page-locked host allocation (garbage collected)", in_del=True):
                self.alive = False
                dev.unregister_pinned(self._arr)
                dev.live_pinned.pop(id(self), None)

    def _ptr(x: Any, what: str) -> int:
        if isinstance(x, np.ndarray):
            dev.violation(f"{what}: got a host numpy array where device memory is required (wrong direction?)")
        if isinstance(x, (DeviceAllocation, int, np.integer)):
            p = int(x)
            dev.owned(p, what)  # a buffer of another CUDA context: invalid on a real GPU
            return p
        dev.violation(f"{what}: {type(x).__name__} is not a device pointer")
        return 0

    def _host(x: Any, what: str, pinned: bool) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            dev.violation(f"{what}: {type(x).__name__} is not host memory (wrong direction?)")
        if not x.flags.c_contiguous:
            dev.violation(f"{what}: host array is not contiguous")
        if pinned and not dev.is_pinned(x):
            dev.violation(f"{what}: async copy with pageable host memory; stage through pagelocked_empty()")
        return x

    def _stream_handle(stream: Any) -> int:
        return 0 if stream is None else int(stream.handle)

    # ------------------------------------------------------------------ contexts and devices
    class Context:
        """pycuda's Context (cuda.hpp `context`): push/pop on this thread's stacks; detach releases it (and pops
        it first when it is current) and makes it invalid, so objects made in it can no longer be freed."""

        def __init__(self, device: "Device", pc: PyContext) -> None:
            self.device, self._c = device, pc
            pc.obj = self

        @property
        def handle(self) -> int:
            return self._c.cu

        @property
        def detached(self) -> bool:
            return not self._c.alive

        def push(self) -> None:
            dev.push(self._c)

        @staticmethod
        def pop() -> None:
            dev.pop()

        @staticmethod
        def get_current() -> "Context | None":
            cur = dev.pycuda_current()
            return None if cur is None else cur.obj  # type: ignore[return-value]

        @staticmethod
        def synchronize() -> None:
            dev.require_context("Context.synchronize")
            dev.synchronize_all("Context.synchronize")

        @staticmethod
        def get_device() -> "Device":
            if dev.require_context("Context.get_device") is None:
                raise LogicError("cuCtxGetDevice failed: invalid context")
            return Device(0)

        def detach(self) -> None:
            if not self._c.alive:
                dev.violation("Context.detach of an invalid context (pycuda: cannot detach from invalid context)")
                return
            if dev.pycuda_current() is self._c:
                dev.pop()  # detaching the current context pops it
            self._c.alive = False

    class Device:
        def __init__(self, ordinal: int) -> None:
            if ordinal != 0:
                raise LogicError(f"cuDeviceGet failed: invalid device ordinal {ordinal}")
            self.ordinal = ordinal

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return dev.name

        def compute_capability(self) -> tuple[int, int]:
            return dev.cc

        def total_memory(self) -> int:
            return dev.total_memory

        def make_context(self, flags: int = 0) -> Context:
            """A new context (not the primary one), pushed: what pycuda.autoinit does."""
            c = Context(self, PyContext(dev.handle(), primary=False))
            c.push()
            return c

        def retain_primary_context(self) -> Context:
            """The device's primary context (the one the CUDA runtime uses), not pushed."""
            return Context(self, PyContext(dev.primary_cu, primary=True))

    def init(flags: int = 0) -> None:
        return None

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        return DeviceAllocation(dev.alloc(int(nbytes), tag=f"mem_alloc({nbytes})"))

    def mem_get_info() -> tuple[int, int]:
        return dev.total_memory - dev.bytes_in_use, dev.total_memory

    def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
        owner = dev.require_context("pagelocked_empty")
        arr = np.asarray(PagelockedHostAllocation(shape, dtype, order, owner))
        return arr  # arr.base is the PagelockedHostAllocation, as in pycuda

    # ------------------------------------------------------------------ copies
    def memcpy_htod_async(dest: Any, src: Any, stream: Any = None) -> None:
        dev.require_context("memcpy_htod_async")
        d = _ptr(dest, "memcpy_htod_async dest")
        s = _host(src, "memcpy_htod_async src", pinned=True)
        n = s.nbytes
        dev.span(d, n, "memcpy_htod_async dest")  # checked at enqueue time too

        def op() -> None:
            dev.span(d, n, "memcpy_htod_async dest")[:] = s.reshape(-1).view(np.uint8)
        dev.enqueue(_stream_handle(stream), f"htod {n}B", op)

    def memcpy_dtoh_async(dest: Any, src: Any, stream: Any = None) -> None:
        dev.require_context("memcpy_dtoh_async")
        h = _host(dest, "memcpy_dtoh_async dest", pinned=True)
        s = _ptr(src, "memcpy_dtoh_async src")
        n = h.nbytes
        dev.span(s, n, "memcpy_dtoh_async src")

        def op() -> None:
            h.reshape(-1).view(np.uint8)[:] = dev.span(s, n, "memcpy_dtoh_async src")
        dev.enqueue(_stream_handle(stream), f"dtoh {n}B", op)

    def memcpy_dtod_async(dest: Any, src: Any, size: int, stream: Any = None) -> None:
        dev.require_context("memcpy_dtod_async")
        d, s, n = _ptr(dest, "memcpy_dtod_async dest"), _ptr(src, "memcpy_dtod_async src"), int(size)
        dev.span(d, n, "memcpy_dtod_async dest")
        dev.span(s, n, "memcpy_dtod_async src")
        if d < s + n and s < d + n:
            dev.violation("memcpy_dtod_async: overlapping source and destination")

        def op() -> None:
            dev.span(d, n, "memcpy_dtod_async dest")[:] = dev.span(s, n, "memcpy_dtod_async src")
        dev.enqueue(_stream_handle(stream), f"dtod {n}B", op)

    def _sync_copy(name: str) -> None:  # pointers are checked against the current context by _ptr
        dev.require_context(name)
        if dev.capturing():
            dev.violation(f"{name}: synchronous copy during CUDA graph capture")

    def memcpy_htod(dest: Any, src: Any) -> None:
        _sync_copy("memcpy_htod")
        d = _ptr(dest, "memcpy_htod dest")
        s = _host(src, "memcpy_htod src", pinned=False)
        dev.synchronize_all("memcpy_htod")
        dev.span(d, s.nbytes, "memcpy_htod dest")[:] = np.ascontiguousarray(s).reshape(-1).view(np.uint8)

    def memcpy_dtoh(dest: Any, src: Any) -> None:
        _sync_copy("memcpy_dtoh")
        h = _host(dest, "memcpy_dtoh dest", pinned=False)
        s = _ptr(src, "memcpy_dtoh src")
        dev.synchronize_all("memcpy_dtoh")
        h.reshape(-1).view(np.uint8)[:] = dev.span(s, h.nbytes, "memcpy_dtoh src")

    def memcpy_dtod(dest: Any, src: Any, size: int) -> None:
        _sync_copy("memcpy_dtod")
        dev.synchronize_all("memcpy_dtod")
        d, s, n = _ptr(dest, "memcpy_dtod dest"), _ptr(src, "memcpy_dtod src"), int(size)
        dev.span(d, n, "memcpy_dtod dest")[:] = dev.span(s, n, "memcpy_dtod src")

    def memset_d8_async(dest: Any, value: int, count: int, stream: Any = None) -> None:
        dev.require_context("memset_d8_async")
        d, n = _ptr(dest, "memset_d8_async dest"), int(count)
        dev.span(d, n, "memset_d8_async dest")

        def op() -> None:
            dev.span(d, n, "memset_d8_async dest")[:] = np.uint8(value)
        dev.enqueue(_stream_handle(stream), f"memset {n}B", op)

    def memset_d32_async(dest: Any, value: int, count: int, stream: Any = None) -> None:
        dev.require_context("memset_d32_async")
        d, n = _ptr(dest, "memset_d32_async dest"), int(count)
        dev.span(d, 4 * n, "memset_d32_async dest")

        def op() -> None:
            dev.span(d, 4 * n, "memset_d32_async dest").view(np.uint32)[:] = np.uint32(value)
        dev.enqueue(_stream_handle(stream), f"memset32 {4 * n}B", op)

    # ------------------------------------------------------------------ streams and events
    class Stream:
        def __init__(self, flags: int = 0) -> None:
            self._s = dev.new_stream(dev.require_context("Stream()"))
            self.handle = self._s.handle

        def __del__(self) -> None:  # pycuda: ~stream() destroys it in its context (leaks if that was detached)
            s = getattr(self, "_s", None)
            if s is not None and s.alive:
                dev.destroy_stream(s)

        def synchronize(self) -> None:
            dev.synchronize(self.handle, "Stream.synchronize")

        def is_done(self) -> bool:
            return not self._s.queue

    class Event:
        def __init__(self, flags: int = 0) -> None:
            self._stream: int | None = None
            self._recorded = False

        def record(self, stream: Any = None) -> "Event":
            self._stream = _stream_handle(stream)
            self._recorded = True
            dev.enqueue(self._stream, "event", lambda: None)
            return self

        def synchronize(self) -> "Event":
            if not self._recorded:
                dev.violation("Event.synchronize before record")
            dev.synchronize(self._stream, "Event.synchronize")
            return self

        def query(self) -> bool:
            return self._stream is None or not dev.stream(self._stream).queue

        def time_since(self, other: "Event") -> float:
            return 0.0

    driver = types.ModuleType("pycuda.driver")
    for name, obj in dict(Error=Error, LogicError=LogicError, RuntimeError=Error, DeviceAllocation=DeviceAllocation,
                          Context=Context, Device=Device, init=init, mem_alloc=mem_alloc, mem_get_info=mem_get_info,
                          pagelocked_empty=pagelocked_empty, memcpy_htod_async=memcpy_htod_async,
                          memcpy_dtoh_async=memcpy_dtoh_async, memcpy_dtod_async=memcpy_dtod_async,
                          memcpy_htod=memcpy_htod, memcpy_dtoh=memcpy_dtoh, memcpy_dtod=memcpy_dtod,
                          memset_d8_async=memset_d8_async, memset_d32_async=memset_d32_async,
                          Stream=Stream, Event=Event, module_from_buffer=None,
                          PagelockedHostAllocation=PagelockedHostAllocation).items():
        setattr(driver, name, obj)
    driver.FAKE_DEVICE = dev  # type: ignore[attr-defined]

    compiler = types.ModuleType("pycuda.compiler")
    source_module = _make_source_module(dev, _ptr, _stream_handle)
    compiler.SourceModule = source_module  # type: ignore[attr-defined]

    def module_from_buffer(buffer: Any, options: Any = None, message_handler: Any = None) -> Any:
        """cuModuleLoadDataEx of PTX text: the shipped PTX of kernels/ptx is mapped back to its .cu source
        (its header names it) and run through the host emulation (kernels/host_emu/launch.py). Refused as the
        driver would: a PTX ISA newer than the driver, a .target newer than the GPU, or a PTX older than its
        source (stale)."""
        from human3r_edge.kernels import build
        from human3r_edge.kernels.host_emu import launch

        owner = dev.require_context("cuModuleLoadDataEx")
        try:
            module = launch.load_ptx(buffer, dev.cc, dev.driver_ptx_isa)
        except build.PtxError as exc:
            raise LogicError(f"cuModuleLoadDataEx failed: {exc}") from None
        return source_module.loaded(module, owner)

    driver.module_from_buffer = module_from_buffer  # type: ignore[attr-defined]

    def make_autoinit() -> types.ModuleType:
        """Executed when `pycuda.autoinit` is imported: creates and pushes a context, like the real module."""
        autoinit = types.ModuleType("pycuda.autoinit")
        autoinit.device = Device(0)  # type: ignore[attr-defined]
        autoinit.context = autoinit.device.make_context()  # type: ignore[attr-defined]
        return autoinit

    pkg = types.ModuleType("pycuda")
    pkg.__path__ = []  # type: ignore[attr-defined]
    pkg.driver, pkg.compiler = driver, compiler  # type: ignore[attr-defined]
    pkg.VERSION = (2024, 1, 2)  # type: ignore[attr-defined]
    pkg.make_autoinit = make_autoinit  # type: ignore[attr-defined]
    return {"pycuda": pkg, "pycuda.driver": driver, "pycuda.compiler": compiler}


def _make_source_module(dev: FakeDevice, ptr_of: Any, stream_of: Any) -> Any:
    """SourceModule over the host emulation's launcher (human3r_edge.kernels.host_emu.launch): the same .cu source,
    compiled for and run on the host; this fake adds the contexts, streams and device-memory checks."""

    class Function:
        def __init__(self, fn: Any, name: str, owner: Any = None) -> None:
            self._fn, self.name, self._types, self.owner = fn, name, None, owner

        def _convert(self, args: tuple) -> list:
            from human3r_edge.kernels.host_emu.launch import check_kernel_args

            try:
                check_kernel_args(self.name, args)  # pycuda's _build_arg_buf: TypeError, as real pycuda raises
            except TypeError as exc:
                dev.violations.append(str(exc))
                raise
            out: list = []
            for a in args:
                if isinstance(a, (np.integer, np.floating)):
                    out.append(a)
                else:
                    p = ptr_of(a, f"kernel {self.name} pointer argument")
                    if dev.find(p) is None or not dev.find(p).alive:  # type: ignore[union-attr]
                        dev.violation(f"kernel {self.name}: pointer {p:#x} is not live device memory")
                    out.append(np.uintp(p))
            return out

        def __call__(self, *args: Any, block: tuple = (1, 1, 1), grid: tuple = (1, 1), stream: Any = None,
                     shared: int = 0, **kw: Any) -> None:
            dev.require_context(f"kernel {self.name}")
            dev.check_owner(self.owner, f"kernel {self.name} launch (cuLaunchKernel)")
            conv = self._convert(args)
            g3 = tuple(grid) + (1,) * (3 - len(grid))
            dev.enqueue(stream_of(stream), f"kernel {self.name}",
                        lambda: self._fn(*conv, block=tuple(block), grid=g3))

        def prepare(self, arg_types: Any) -> "Function":
            self._types = arg_types
            return self

        def prepared_async_call(self, grid: tuple, block: tuple, stream: Any, *args: Any, shared_size: int = 0) -> None:
            self(*args, block=block, grid=grid, stream=stream)

        def prepared_call(self, grid: tuple, block: tuple, *args: Any, shared_size: int = 0) -> None:
            self(*args, block=block, grid=grid)

    class SourceModule:
        def __init__(self, source: str, options: Any = None, no_extern_c: bool = False, **kw: Any) -> None:
            from human3r_edge.kernels.host_emu import launch  # the same .cu source, compiled for the host

            self.owner = dev.require_context("cuModuleLoad")
            dev.nvcc_runs += 1  # pycuda's SourceModule runs nvcc at run time
            self._module = launch.load_source(source, options=options, no_extern_c=no_extern_c)

        @classmethod
        def loaded(cls, module: Any, owner: Any) -> "SourceModule":
            """A module loaded from PTX (module_from_buffer): no nvcc run."""
            self = cls.__new__(cls)
            self.owner, self._module = owner, module
            return self

        def get_function(self, name: str) -> Function:
            return Function(self._module.get_function(name), name, self.owner)

    return SourceModule
