"""A timing cache shared between GPUs or TensorRT versions does not abort the build (issue 13, bug 4)."""
from __future__ import annotations

import pytest

from support.fake_gpu import fake_gpu  # noqa: F401  (fixture)
from support.toy_export import write_toy_export


@pytest.fixture
def toy(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    write_toy_export(d)
    return d


def _build(toy, out, cache):
    from human3r_edge.export.trt_build import BuildOptions, build_engines

    build_engines(toy, out, BuildOptions(progress=False, timing_cache=str(cache), graphs=("encoder",)))


@pytest.mark.parametrize("change", ["tensorrt-version", "gpu"])
def test_timing_cache_of_another_gpu_or_tensorrt_warns_and_starts_fresh(fake_gpu, toy, tmp_path, capsys, change):
    cache = tmp_path / "shared.cache"  # one file, as on a shared drive / in the Jetson guide
    _build(toy, tmp_path / "a", cache)
    assert fake_gpu.state["builds"][-1]["timing_cache_hits"] == 0
    if change == "gpu":
        fake_gpu.dev.name = "Fake RTX 4090 (CPU stand-in)"
        fake_gpu.dev.cc = (8, 9)
    else:
        fake_gpu.set_trt_version("10.3.1.7")
    _build(toy, tmp_path / "b", cache)  # TensorRT refuses the cache: warn, build with a fresh one
    assert fake_gpu.state["builds"][-1]["timing_cache_hits"] == 0
    assert "timing cache" in capsys.readouterr().err
    _build(toy, tmp_path / "c", cache)  # the fresh cache was saved: this device now hits it
    assert fake_gpu.state["builds"][-1]["timing_cache_hits"] > 0
