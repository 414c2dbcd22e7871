"""The strict CPU stand-in for `tensorrt`, `pycuda` and libcuda (tests only; never a shipped backend).

Injected through `sys.modules` (and `cuda_util.open_libcuda`), so the real code in runtime/backends/trt.py,
runtime/cuda_util.py and export/trt_build.py runs unchanged on a machine without a GPU:

    def test_x(fake_gpu):            # the fixture (import it into the test module)
        fake_gpu.dev.violations      # contract breaches seen so far

Device memory is host memory addressed by integer pointers, streams and events are ordered queues executed on
synchronisation, an engine is the ONNX graph run by ONNX Runtime CPU, and kernels (`SourceModule`, or the shipped
PTX through `module_from_buffer`) run through `human3r_edge.kernels.host_emu.launch` (the same .cu source, pycuda's
argument rules). This is the project's one pycuda stand-in: kernel launchers are tested on it with the
`primary_gpu` fixture (the primary context current, as a backend's ensure_cuda_context leaves it).
Every contract breach raises `ContractViolation` (see device.py and tensorrt_fake.py for the list).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from .device import ContractViolation, FakeDevice
from .libcuda_fake import FakeLibCuda
from .pycuda_fake import make_pycuda_modules
from .tensorrt_fake import make_tensorrt_module

__all__ = ["ContractViolation", "FakeDevice", "FakeGPU", "fake_gpu", "install", "primary_gpu"]
_NAMES = ("tensorrt", "pycuda", "pycuda.driver", "pycuda.compiler", "pycuda.autoinit")


@dataclass
class FakeGPU:
    """Handles on one installed stand-in."""

    dev: FakeDevice
    trt: Any
    cuda: Any
    libcuda: FakeLibCuda
    state: dict = field(default_factory=dict)

    def take_violations(self) -> list[str]:
        """The violations seen so far (cleared): a test that plants one acknowledges it this way."""
        out = list(self.dev.violations)
        self.dev.violations.clear()
        return out

    @property
    def compiler(self) -> Any:
        """The fake `pycuda.compiler` (SourceModule over kernels/host_emu/launch.py)."""
        return sys.modules["pycuda.compiler"]

    def push_primary(self) -> Any:
        """Push the device's primary context on this thread (what a backend's ensure_cuda_context does)."""
        ctx = self.cuda.Device(0).retain_primary_context()
        ctx.push()
        return ctx

    def set_trt_version(self, version: str) -> Any:
        """Swap in a fake tensorrt of another version (same device); returns the new module."""
        self.trt = make_tensorrt_module(self.dev, version, self.state)
        sys.modules["tensorrt"] = self.trt
        return self.trt


def install(monkeypatch: pytest.MonkeyPatch, trt_version: str = "10.3.0.30", gpu_name: str = "Fake Orin (CPU stand-in)",
            cc: tuple[int, int] = (8, 7)) -> FakeGPU:
    """Put the fake modules into sys.modules (undone by `monkeypatch` at teardown)."""
    from human3r_edge.runtime import cuda_util

    dev = FakeDevice(gpu_name, cc)
    state: dict = {}
    trt = make_tensorrt_module(dev, trt_version, state)
    mods = make_pycuda_modules(dev)
    for name in _NAMES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(sys, "meta_path", [_AutoinitFinder(mods["pycuda"])] + sys.meta_path)
    lib = FakeLibCuda(dev)
    monkeypatch.setattr(cuda_util, "open_libcuda", lambda: lib)
    return FakeGPU(dev, trt, mods["pycuda.driver"], lib, state)


class _AutoinitFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Builds the fake `pycuda.autoinit` when it is imported (so importing it creates a context, as for real)."""

    def __init__(self, pkg: Any) -> None:
        self.pkg = pkg

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname == "pycuda.autoinit":
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec: Any) -> Any:
        return self.pkg.make_autoinit()

    def exec_module(self, module: Any) -> None:
        self.pkg.autoinit = module


@pytest.fixture
def primary_gpu(fake_gpu: FakeGPU) -> FakeGPU:
    """The stand-in with the primary context current on this thread: for tests that drive a kernel launcher
    directly (`CudaSkinner(model, k, driver=gpu.cuda)`, `CudaPreprocessor(..., driver=gpu.cuda)`), as a backend's
    `ensure_cuda_context()` leaves it. The kernels run through the host emulation (kernels/host_emu)."""
    fake_gpu.push_primary()
    return fake_gpu


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGPU]:
    """The stand-in for one test. Fails the test if a contract violation was raised but swallowed somewhere
    (a test that plants one takes it with `take_violations()`)."""
    gpu = install(monkeypatch)
    yield gpu
    import gc

    gc.collect()  # objects dropped by the test are freed now, so a leak past a detached context is seen here
    left = gpu.dev.violations
    if left:
        from collections import Counter

        summary = "; ".join(f"{n} x {text}" if n > 1 else text for text, n in Counter(left).items())
        pytest.fail(f"CPU stand-in: unacknowledged contract violation(s): {summary}")
