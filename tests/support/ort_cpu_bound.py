"""The IOBinding backend of runtime/backends/ort.py on the CPU device, so its ping-pong logic is tested here."""
from __future__ import annotations

from human3r_edge.runtime.backends.ort import OrtBoundBackend


class OrtCpuBoundBackend(OrtBoundBackend):
    """Same code as OrtCudaBackend/OrtTrtBackend with OrtValues on 'cpu' (tests only; strict_device must be off)."""

    name = "ort-cpu-bound"
    device_type = "cpu"
    primary_provider = "CPUExecutionProvider"

    def providers(self) -> list:
        return ["CPUExecutionProvider"]
