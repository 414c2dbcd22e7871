"""Typed backend capabilities (runtime/backends/capabilities.py) instead of getattr/hasattr probes (issue 15)."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from human3r_edge.runtime.backends.capabilities import (CudaContextProvider, DeviceFeeds, DeviceValues,
                                                        ResourceOwner, Skinner, adopted, takes_device_feeds)
from human3r_edge.runtime.backends.ort import OrtBoundBackend, OrtCpuBackend
from human3r_edge.runtime.backends.trt import TrtBackend
from human3r_edge.runtime.iospec import ExportSpec
from human3r_edge.runtime.smplx.gpu import CudaSkinner
from human3r_edge.runtime.smplx.skinning import SMPLXModel
from support.ort_cpu_bound import OrtCpuBoundBackend
from support.toy_export import write_toy_export

ROOT = Path(__file__).resolve().parents[1]
CAPABILITIES = ("accepts_device_feeds", "ensure_cuda_context", "adopt", "device_buffer", "device_value")


def test_backends_declare_what_they_offer(tmp_path):
    write_toy_export(tmp_path)
    spec = ExportSpec.load(tmp_path)
    cpu, bound = OrtCpuBackend(spec, tmp_path), OrtCpuBoundBackend(spec, tmp_path, strict_device=False)
    assert not takes_device_feeds(cpu) and not isinstance(cpu, DeviceFeeds)
    assert not isinstance(cpu, CudaContextProvider) and isinstance(cpu, ResourceOwner)
    # the IOBinding code on the CPU EP has device buffers in its type but takes no device feeds
    assert isinstance(bound, DeviceFeeds) and not takes_device_feeds(bound)
    assert isinstance(bound, CudaContextProvider) and isinstance(bound, DeviceValues)
    # the protocol check must not touch `stream` (it would create a CUDA context on the ONNX Runtime backends)
    assert bound._cuda is None and bound._cuda_stream is None
    for cls in (OrtBoundBackend, TrtBackend):
        assert hasattr(cls, "device_buffer")
    assert TrtBackend.accepts_device_feeds is True and not hasattr(TrtBackend, "ensure_cuda_context")


def test_skinners_and_adoption():
    assert all(callable(getattr(c, "skin")) for c in (SMPLXModel, CudaSkinner))
    assert isinstance(SimpleNamespace(skin=lambda *a, **k: None), Skinner)
    assert not isinstance("SMPLX_NEUTRAL.npz", Skinner)  # a path: run loads the model from it
    kept: list = []
    owner = SimpleNamespace(adopt=lambda r: kept.append(r) or r)
    thing = object()
    assert adopted(owner, thing) is thing and kept == [thing]
    assert adopted(SimpleNamespace(), thing) is thing  # a double without adopt: unchanged


def test_no_capability_probes_left_in_the_callers():
    """session, device_frames, run, check and the GStreamer CUDA memory path test capabilities with isinstance."""
    probe = re.compile(r"(getattr|hasattr)\([^)]*[\"'](%s)[\"']" % "|".join(CAPABILITIES))
    for rel in ("runtime/session.py", "runtime/device_frames.py", "runtime/commands/run.py", "runtime/commands/check.py",
                "runtime/gst/cuda_memory.py"):
        found = probe.findall((ROOT / rel).read_text())
        assert not found, (rel, found)
