"""The stand-in's device: host memory addressed by integer pointers, streams as ordered queues, stream capture.

Strictness (every breach raises `ContractViolation` and is logged in `FakeDevice.violations`):
* device pointers must lie inside a live allocation, and a span must not run past its end;
* freed allocations stay quarantined (never reused), so any later use is reported as use-after-free;
* fresh allocations are filled with 0xFF (NaN for floats) as cudaMalloc gives no zeros;
* async host<->device copies need page-locked host memory, and the host side is read/written when the stream
  executes, not when the copy is enqueued (as on a GPU);
* no allocation, no synchronisation and no synchronous copy while any stream is capturing;
* work on a stream runs only when someone synchronises (stream, event, context or a synchronous call);
* CUDA contexts as the driver and pycuda keep them (pycuda's C++ wrapper, cuda.hpp): each thread has its own
  driver context stack and pycuda stack; `Device.retain_primary_context()` is the device's primary context and
  `make_context()` (what `pycuda.autoinit` calls) a new, different one. The CUDA runtime (ONNX Runtime's CUDA EP,
  TensorRT) selects its device with cudaSetDevice, which makes the primary context current on the driver stack
  (`cuda_set_device`), behind pycuda's back. A stream, module or device buffer used while another context is
  current is "invalid resource handle" (CUDA_ERROR_INVALID_HANDLE);
* every pycuda object remembers the pycuda context it was made in; once that context is detached, freeing the
  object is pycuda's swallowed `cannot_activate_dead_context`: the memory leaks. Here it is a violation.
"""
from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ALIGN = 256


class ContractViolation(AssertionError):
    """A use of the CUDA / TensorRT API that a real GPU would punish (wrongly or silently)."""


_IDS = itertools.count(1)


@dataclass(eq=False)
class PyContext:
    """One pycuda `Context` object (pycuda's `context` class): a CUcontext handle plus pycuda's validity flag."""

    cu: int  # the CUcontext handle; the primary context's is FakeDevice.primary_cu
    primary: bool
    alive: bool = True  # False after detach: objects made in it can no longer be freed (pycuda leaks them)
    ident: int = field(default_factory=lambda: next(_IDS))
    obj: object = None  # the fake pycuda Context wrapping it


@dataclass
class Allocation:
    base: int
    size: int
    buf: np.ndarray  # owns the memory (uint8, over-allocated for alignment)
    alive: bool = True
    tag: str = ""
    owner: PyContext | None = None  # the pycuda context it was allocated in


@dataclass
class Stream:
    handle: int
    queue: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    capture: list[tuple[str, Callable[[], None]]] | None = None  # ops recorded while capturing
    owner: PyContext | None = None
    alive: bool = True
    invalidated: bool = False  # an operation broke the capture in progress


@dataclass
class Graph:
    ops: list[tuple[str, Callable[[], None]]]
    alive: bool = True


class FakeDevice:
    """One fake GPU shared by the fake pycuda, the fake libcuda and the fake tensorrt."""

    def __init__(self, name: str = "Fake Orin (CPU stand-in)", cc: tuple[int, int] = (8, 7),
                 total_memory: int = 8 << 30) -> None:
        self.name, self.cc, self.total_memory = name, cc, total_memory
        self._next = 1
        self.allocs: dict[int, Allocation] = {}
        self._bases: list[int] = []
        self.pinned: dict[int, np.ndarray] = {}  # host address -> page-locked array
        self._pinned_bases: list[int] = []
        self.streams: dict[int, Stream] = {0: Stream(0)}
        self.graphs: dict[int, Graph] = {}
        self.graph_execs: dict[int, Graph] = {}
        self.primary_cu = self.handle()
        self._driver_stacks: dict[int, list[int]] = {}  # thread id -> CUcontext handles (top = current)
        self._pycuda_stacks: dict[int, list[PyContext]] = {}  # thread id -> pycuda Context objects
        self.live_pinned: dict[int, str] = {}  # id of live page-locked allocations -> tag
        self.driver_ptx_isa = (9, 0)  # newest PTX ISA the (fake) driver JIT-compiles: CUDA 13.0's
        self.nvcc_runs = 0  # SourceModule compilations (nvcc at run time)
        self.violations: list[str] = []
        self.raise_on_violation = True
        self.log: list[str] = []  # executed ops, in order
        self.bytes_in_use = 0

    # ------------------------------------------------------------------ violations
    def violation(self, text: str) -> None:
        self.violations.append(text)
        if self.raise_on_violation:
            raise ContractViolation(text)

    # ------------------------------------------------------------------ contexts
    def driver_stack(self) -> list[int]:
        return self._driver_stacks.setdefault(threading.get_ident(), [])

    def pycuda_stack(self) -> list[PyContext]:
        return self._pycuda_stacks.setdefault(threading.get_ident(), [])

    @property
    def context_depth(self) -> int:
        """Depth of this thread's pycuda context stack."""
        return len(self.pycuda_stack())

    def driver_current(self) -> int:
        st = self.driver_stack()
        return st[-1] if st else 0

    def pycuda_current(self) -> PyContext | None:
        st = self.pycuda_stack()
        return st[-1] if st else None

    def push(self, ctx: PyContext) -> None:
        if not ctx.alive:
            self.violation("Context.push of a detached context")
        self.driver_stack().append(ctx.cu)
        self.pycuda_stack().append(ctx)

    def pop(self) -> PyContext | None:
        st, dst = self.pycuda_stack(), self.driver_stack()
        if not st or not dst:
            self.violation("Context.pop with no current context (pycuda: cannot pop non-current context)")
            return None
        dst.pop()
        return st.pop()

    def cuda_set_device(self) -> None:
        """What the CUDA runtime's cudaSetDevice (ONNX Runtime's CUDA EP on every Run, TensorRT) does to this
        thread: the device's primary context becomes current on the driver stack (cuCtxSetCurrent replaces the
        top), whatever was current before. pycuda's own stack does not see it."""
        st = self.driver_stack()
        if st:
            st[-1] = self.primary_cu
        else:
            st.append(self.primary_cu)

    def require_context(self, what: str, runtime: bool = False) -> PyContext | None:
        """The pycuda context current on this thread (pycuda calls), or just a driver context (runtime=True:
        TensorRT and ONNX Runtime use whatever is current)."""
        if runtime:
            if not self.driver_current():
                self.violation(f"{what}: no current CUDA context (push one, or import pycuda.autoinit)")
            return None
        cur = self.pycuda_current()
        if cur is None or not self.driver_current():
            self.violation(f"{what}: no current CUDA context (push one, or import pycuda.autoinit)")
            return None
        if not cur.alive:
            self.violation(f"{what}: the current pycuda context was detached")
        return cur

    def check_owner(self, owner: PyContext | None, what: str) -> None:
        """A resource made in `owner` used now: its CUcontext must be the one current on the driver stack."""
        if owner is None:
            return
        cur = self.driver_current()
        if owner.cu != cur:
            def name(cu: int) -> str:
                return "the primary context" if cu == self.primary_cu else f"context {cu:#x}" if cu else "none"
            self.violation(f"{what}: CUDA_ERROR_INVALID_HANDLE (invalid resource handle): made in "
                           f"{name(owner.cu)}, but {name(cur)} is current (pycuda.autoinit makes a non-primary "
                           "context; the CUDA runtime of ONNX Runtime/TensorRT makes the primary one current)")

    def released(self, owner: PyContext | None, what: str, in_del: bool = False) -> bool:
        """pycuda freeing an object made in `owner`: False (and a violation) when that context was detached,
        where pycuda swallows cannot_activate_dead_context and the memory or stream leaks. From a destructor
        (in_del) the violation is only recorded: the fixture reports it at the end of the test."""
        if owner is not None and not owner.alive:
            if in_del:
                self.violations.append(f"{what} freed after its pycuda context was detached: pycuda swallows "
                                       "cannot_activate_dead_context and it leaks (free it before Context.pop/"
                                       "detach)")
                return False
            self.violation(f"{what} freed after its pycuda context was detached: pycuda swallows "
                           "cannot_activate_dead_context and it leaks (free it before Context.pop/detach)")
            return False
        return True

    def capturing(self) -> bool:
        return any(s.capture is not None for s in self.streams.values())

    def handle(self) -> int:
        self._next += 1
        return self._next * 4096

    # ------------------------------------------------------------------ memory
    def alloc(self, size: int, tag: str = "", runtime: bool = False) -> Allocation:
        owner = self.require_context("cuMemAlloc", runtime)
        if self.capturing():
            self.violation("cuMemAlloc during CUDA graph capture")
        if int(size) <= 0:
            self.violation(f"cuMemAlloc of {size} bytes")
        buf = np.full(int(size) + ALIGN, 0xFF, np.uint8)
        off = (-buf.ctypes.data) % ALIGN
        base = buf.ctypes.data + off
        a = Allocation(base, int(size), buf[off:off + int(size)], tag=tag, owner=owner)
        self.allocs[base] = a
        bisect.insort(self._bases, base)
        self.bytes_in_use += a.size
        return a

    def map_host(self, arr: np.ndarray, tag: str = "mapped host memory") -> int:
        """Host memory made device-addressable at its own address (cudaHostRegister(..., Mapped) under unified
        addressing: the device pointer equals the host pointer). For tests whose "device" buffers are memory
        owned by someone else (ONNX Runtime CPU OrtValues, a numpy frame). Owned by the current pycuda context;
        the caller keeps `arr` alive while the address is used."""
        a = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        if a.ctypes.data != arr.ctypes.data:
            self.violation(f"map_host({tag}): the array is not contiguous")
        base = int(a.ctypes.data)
        if base in self.allocs and self.allocs[base].alive:
            return base
        if base not in self.allocs:
            bisect.insort(self._bases, base)
        self.allocs[base] = Allocation(base, a.nbytes, a, tag=tag, owner=self.pycuda_current())
        return base

    def free(self, a: Allocation) -> None:
        if not a.alive:
            self.violation(f"double free of device allocation {a.base:#x} ({a.tag})")
            return
        if self.capturing():
            self.violation("cuMemFree during CUDA graph capture")
        a.alive = False  # quarantined: the address is never handed out again, so later uses are detected
        self.bytes_in_use -= a.size

    def find(self, ptr: int) -> Allocation | None:
        k = bisect.bisect_right(self._bases, int(ptr)) - 1
        if k < 0:
            return None
        a = self.allocs[self._bases[k]]
        return a if a.base <= int(ptr) < a.base + a.size else None

    def span(self, ptr: int, nbytes: int, what: str) -> np.ndarray:
        """uint8 view of device bytes [ptr, ptr+nbytes), checked."""
        ptr = int(ptr)
        a = self.find(ptr)
        if a is None:
            self.violation(f"{what}: {ptr:#x} is not device memory (a host pointer, or never allocated)")
            return np.zeros(nbytes, np.uint8)
        if not a.alive:
            self.violation(f"{what}: use after free of device allocation {a.base:#x} ({a.tag})")
        end = ptr - a.base + int(nbytes)
        if end > a.size:
            self.violation(f"{what}: {nbytes} bytes at {ptr:#x} run {end - a.size} bytes past the end of a "
                           f"{a.size}-byte allocation")
            return np.zeros(nbytes, np.uint8)
        return a.buf[ptr - a.base:end]

    def register_pinned(self, arr: np.ndarray) -> None:
        self.pinned[arr.ctypes.data] = arr
        bisect.insort(self._pinned_bases, arr.ctypes.data)

    def unregister_pinned(self, arr: np.ndarray) -> None:
        addr = arr.ctypes.data
        if self.pinned.pop(addr, None) is not None:
            self._pinned_bases.remove(addr)

    def is_pinned(self, arr: np.ndarray) -> bool:
        if not isinstance(arr, np.ndarray) or arr.nbytes == 0:
            return False
        addr = arr.ctypes.data
        k = bisect.bisect_right(self._pinned_bases, addr) - 1
        if k < 0:
            return False
        base = self.pinned[self._pinned_bases[k]]
        return addr + arr.nbytes <= base.ctypes.data + base.nbytes

    # ------------------------------------------------------------------ streams
    def owned(self, ptr: int, what: str) -> None:
        """At enqueue time: device pointer `ptr` must belong to the context current now."""
        a = self.find(int(ptr))
        if a is not None:
            self.check_owner(a.owner, what)

    def stream(self, handle: int | None) -> Stream:
        h = int(handle or 0)
        if h not in self.streams or not self.streams[h].alive:
            self.violation(f"unknown or destroyed stream handle {h:#x}")
            return self.streams[0]
        return self.streams[h]

    def new_stream(self, owner: PyContext | None = None) -> Stream:
        s = Stream(self.handle(), owner=owner)
        self.streams[s.handle] = s
        return s

    def destroy_stream(self, s: Stream) -> None:
        if s.alive and self.released(s.owner, f"stream {s.handle:#x}", in_del=True):
            s.alive = False
            self.streams.pop(s.handle, None)

    def enqueue(self, handle: int | None, label: str, fn: Callable[[], None]) -> None:
        s = self.stream(handle)
        self.check_owner(s.owner, f"{label} on stream {s.handle:#x}")
        if s.handle == 0:
            if self.capturing():
                self.violation(f"{label}: legacy default stream used during capture")
            self.synchronize_all()  # the legacy default stream orders itself after all other work
            self._run(label, fn)
            return
        if s.capture is not None:
            s.capture.append((label, fn))
        else:
            s.queue.append((label, fn))

    def _run(self, label: str, fn: Callable[[], None]) -> None:
        self.log.append(label)
        fn()

    def synchronize(self, handle: int | None, what: str = "cuStreamSynchronize") -> None:
        s = self.stream(handle)
        if s.capture is not None:
            self.violation(f"{what} on a stream that is capturing")
        while s.queue:
            label, fn = s.queue.pop(0)
            self._run(label, fn)

    def synchronize_all(self, what: str = "cuCtxSynchronize") -> None:
        if self.capturing():
            self.violation(f"{what} while a stream is capturing")
        for h in list(self.streams):
            self.synchronize(h, what)

    # ------------------------------------------------------------------ capture
    def begin_capture(self, handle: int) -> None:
        s = self.stream(handle)
        if s.handle == 0:
            self.violation("stream capture on the legacy default stream")
        if s.capture is not None:
            self.violation("cuStreamBeginCapture on a stream already capturing")
        if s.queue:
            self.synchronize(handle)  # work enqueued before capture is not part of the graph
        s.capture = []

    def end_capture(self, handle: int) -> int:
        s = self.stream(handle)
        if s.capture is None:
            self.violation("cuStreamEndCapture on a stream that is not capturing")
            return 0
        if s.invalidated:
            s.capture, s.invalidated = None, False
            return 0  # CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, no graph
        g = Graph(s.capture)
        s.capture = None
        h = self.handle()
        self.graphs[h] = g
        return h

    def instantiate(self, graph: int) -> int:
        g = self.graphs.get(int(graph))
        if g is None or not g.alive:
            self.violation(f"cuGraphInstantiate of unknown graph {graph:#x}")
            return 0
        h = self.handle()
        self.graph_execs[h] = Graph(list(g.ops))
        return h

    def launch(self, graph_exec: int, handle: int) -> None:
        g = self.graph_execs.get(int(graph_exec))
        if g is None or not g.alive:
            self.violation(f"cuGraphLaunch of unknown graph exec {graph_exec:#x}")
            return
        for label, fn in g.ops:
            check = getattr(fn, "on_launch", None)  # e.g. enqueueV3: were its captured shapes changed since?
            if check is not None:
                check()
            self.enqueue(handle, f"graph:{label}", fn)
