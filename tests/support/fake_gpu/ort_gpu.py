"""ONNX Runtime's CUDA EP, simulated on the stand-in: the real IOBinding backend code with the CUDA runtime's
effect on CUDA contexts.

The CUDA EP calls cudaSetDevice when it is created and on every Run, and that makes the device's primary context
current on the calling thread (cuCtxSetCurrent semantics: it replaces the top of the driver's context stack),
behind pycuda's back. `SimulatedOrtCudaBackend` is `OrtBoundBackend` (the code of ort-cuda / ort-trt) with its
OrtValues on the CPU EP and that context switch done by `FakeDevice.cuda_set_device()` at the same points, so
pycuda work in any other context (e.g. `pycuda.autoinit`'s) fails here as it does on a GPU.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.runtime.backends.ort import OrtBoundBackend
from human3r_edge.runtime.iospec import ExportSpec


def _device() -> Any:
    return sys.modules["pycuda.driver"].FAKE_DEVICE  # type: ignore[attr-defined]


class SimulatedOrtCudaBackend(OrtBoundBackend):
    """ort-cuda on the CPU stand-in (tests only). Register it as "ort-cuda" in runtime.backends.BACKENDS."""

    name = "ort-cuda"
    device_type = "cpu"
    primary_provider = "CPUExecutionProvider"

    def __init__(self, spec: ExportSpec, directory: Path, **options: Any) -> None:
        super().__init__(spec, directory, **{"strict_device": False, **options})

    def providers(self) -> list:
        return ["CPUExecutionProvider"]

    def _activate_impl(self) -> None:
        super()._activate_impl()
        _device().cuda_set_device()  # CUDAExecutionProvider's constructor: cudaSetDevice(device_id)

    def _run_impl(self, graph: str, feeds: Mapping[str, np.ndarray], fetch: list[str]) -> dict[str, np.ndarray]:
        _device().cuda_set_device()  # CUDAExecutionProvider::OnRunStart: cudaSetDevice(device_id)
        return super()._run_impl(graph, feeds, fetch)

    def _run_streams(self, graph: str, feeds: Mapping[str, Any], fetch: list[str], slots: tuple[int, ...]
                     ) -> dict[str, np.ndarray]:
        _device().cuda_set_device()  # OnRunStart, as above (the row-copy sessions run on the same EP)
        return super()._run_streams(graph, feeds, fetch, slots)
