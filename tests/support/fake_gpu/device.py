"""The stand-in's device: host memory addressed by integer pointers, streams as ordered queues, stream capture.

Strictness (every breach raises `ContractViolation` and is logged in `FakeDevice.violations`):
* device pointers must lie inside a live allocation, and a span must not run past its end;
* freed allocations stay quarantined (never reused), so any later use is reported as use-after-free;
* fresh allocations are filled with 0xFF (NaN for floats) as cudaMalloc gives no zeros;
* async host<->device copies need page-locked host memory, and the host side is read/written when the stream
  executes, not when the copy is enqueued (as on a GPU);
* no allocation, no synchronisation and no synchronous copy while any stream is capturing;
* work on a stream runs only when someone synchronises (stream, event, context or a synchronous call).
"""
from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ALIGN = 256


class ContractViolation(AssertionError):
    """A use of the CUDA / TensorRT API that a real GPU would punish (wrongly or silently)."""


@dataclass
class Allocation:
    base: int
    size: int
    buf: np.ndarray  # owns the memory (uint8, over-allocated for alignment)
    alive: bool = True
    tag: str = ""


@dataclass
class Stream:
    handle: int
    queue: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    capture: list[tuple[str, Callable[[], None]]] | None = None  # ops recorded while capturing


@dataclass
class Graph:
    ops: list[tuple[str, Callable[[], None]]]
    alive: bool = True


class FakeDevice:
    """One fake GPU shared by the fake pycuda, the fake libcuda and the fake tensorrt."""

    def __init__(self, name: str = "Fake Orin (CPU stand-in)", cc: tuple[int, int] = (8, 7),
                 total_memory: int = 8 << 30) -> None:
        self.name, self.cc, self.total_memory = name, cc, total_memory
        self.allocs: dict[int, Allocation] = {}
        self._bases: list[int] = []
        self.pinned: dict[int, np.ndarray] = {}  # host address -> page-locked array
        self._pinned_bases: list[int] = []
        self.streams: dict[int, Stream] = {0: Stream(0)}
        self.graphs: dict[int, Graph] = {}
        self.graph_execs: dict[int, Graph] = {}
        self.context_depth = 0
        self.violations: list[str] = []
        self.raise_on_violation = True
        self.log: list[str] = []  # executed ops, in order
        self.bytes_in_use = 0
        self._next = 1

    # ------------------------------------------------------------------ violations
    def violation(self, text: str) -> None:
        self.violations.append(text)
        if self.raise_on_violation:
            raise ContractViolation(text)

    def require_context(self, what: str) -> None:
        if self.context_depth <= 0:
            self.violation(f"{what}: no current CUDA context (push one, or import pycuda.autoinit)")

    def capturing(self) -> bool:
        return any(s.capture is not None for s in self.streams.values())

    def handle(self) -> int:
        self._next += 1
        return self._next * 4096

    # ------------------------------------------------------------------ memory
    def alloc(self, size: int, tag: str = "") -> Allocation:
        self.require_context("cuMemAlloc")
        if self.capturing():
            self.violation("cuMemAlloc during CUDA graph capture")
        if int(size) <= 0:
            self.violation(f"cuMemAlloc of {size} bytes")
        buf = np.full(int(size) + ALIGN, 0xFF, np.uint8)
        off = (-buf.ctypes.data) % ALIGN
        base = buf.ctypes.data + off
        a = Allocation(base, int(size), buf[off:off + int(size)], tag=tag)
        self.allocs[base] = a
        bisect.insort(self._bases, base)
        self.bytes_in_use += a.size
        return a

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
    def stream(self, handle: int | None) -> Stream:
        h = int(handle or 0)
        if h not in self.streams:
            self.violation(f"unknown stream handle {h:#x}")
            return self.streams[0]
        return self.streams[h]

    def new_stream(self) -> Stream:
        s = Stream(self.handle())
        self.streams[s.handle] = s
        return s

    def enqueue(self, handle: int | None, label: str, fn: Callable[[], None]) -> None:
        s = self.stream(handle)
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
            self.enqueue(handle, f"graph:{label}", fn)
