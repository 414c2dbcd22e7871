"""What a backend (or a skinner) may offer beyond the Backend protocol, as typed capabilities.

Call sites test a capability with `isinstance(x, Capability)` (the protocols are `@runtime_checkable`) instead
of probing with getattr/hasattr, so a type checker follows them:

* `DeviceFeeds`: takes `ON_DEVICE` feeds: the caller writes input `name` into `device_buffer(name)` on the
  backend's CUDA stream (`stream`), then runs (trt, ort-cuda, ort-trt). `takes_device_feeds(b)` also checks
  `accepts_device_feeds`, which an ONNX Runtime backend decides by its device (the IOBinding code on the CPU EP
  has `device_buffer` but takes no device feeds).
* `CudaContextProvider`: `ensure_cuda_context()` makes the CUDA context its runtime uses (the device's primary
  one) current for pycuda on this thread and returns `pycuda.driver` (the ONNX Runtime GPU backends; the trt
  backend keeps its context current while active and needs no call).
* `ResourceOwner`: `adopt(resource)` closes `resource` at deactivation, while the backend's CUDA context is still
  valid (every Backend; a duck-typed test double may lack it).
* `Skinner`: `skin(rotmat, betas, expression, transl, c2w)` -> SkinResult (SMPLXModel on the CPU, CudaSkinner).

`stream` is a data member: on Python < 3.12, `isinstance` against a protocol evaluates data members, and the
ONNX Runtime backends create their stream (and CUDA context) on first access, so `DeviceFeeds` checks only
`accepts_device_feeds` and `device_buffer`; `stream` is typed on `DeviceFeedsWithStream` for static use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, TypeVar, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from human3r_edge.runtime.smplx.skinning import SkinResult

R = TypeVar("R")


@runtime_checkable
class DeviceFeeds(Protocol):
    """Inputs may be written on the device: `device_buffer(name)` is the address to write (see module doc)."""

    accepts_device_feeds: bool

    def device_buffer(self, name: str) -> int: ...


class DeviceFeedsWithStream(DeviceFeeds, Protocol):
    """DeviceFeeds plus the CUDA stream (a pycuda Stream) the feeds are written on and the backend runs after."""

    stream: Any


@runtime_checkable
class DeviceValues(Protocol):
    """The device value (an ONNX Runtime OrtValue) holding tensor `name` now (the ONNX Runtime GPU backends)."""

    def device_value(self, name: str) -> Any: ...


@runtime_checkable
class CudaContextProvider(Protocol):
    """Puts pycuda into the backend's CUDA context on this thread; returns pycuda.driver."""

    def ensure_cuda_context(self) -> Any: ...


@runtime_checkable
class ResourceOwner(Protocol):
    """Closes adopted resources (objects with close()) before its CUDA context is released."""

    def adopt(self, resource: R) -> R: ...


@runtime_checkable
class Skinner(Protocol):
    """SMPL-X skinning of P people: SMPLXModel (CPU) or CudaSkinner (GPU)."""

    def skin(self, rotmat: np.ndarray, betas: np.ndarray, expression: np.ndarray, transl: np.ndarray,
             c2w: np.ndarray | None = None) -> "SkinResult": ...


def takes_device_feeds(backend: object) -> TypeGuard[DeviceFeedsWithStream]:
    """True when `backend` takes ON_DEVICE feeds now (DeviceFeeds with accepts_device_feeds set)."""
    return isinstance(backend, DeviceFeeds) and bool(backend.accepts_device_feeds)


def adopted(backend: object, resource: R) -> R:
    """`backend.adopt(resource)` where the backend is a ResourceOwner, else `resource` unchanged."""
    return backend.adopt(resource) if isinstance(backend, ResourceOwner) else resource
