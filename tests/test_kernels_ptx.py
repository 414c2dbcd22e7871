"""Every CUDA source in kernels/ compiles to PTX for the four target architectures, and the benchmarks compile."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from human3r_edge.kernels.build import ARCHS, KERNEL_DIR, compile_object, compile_ptx, find_nvcc
from human3r_edge.kernels.host_emu import kernel_names

SOURCES = sorted(p.name for p in KERNEL_DIR.glob("*.cu"))
pytestmark = pytest.mark.skipif(find_nvcc() is None, reason="nvcc not found (set $NVCC or install the CUDA toolkit)")


def test_the_expected_kernel_files_exist():
    assert "smplx_skinning.cu" in SOURCES


@pytest.mark.parametrize("name", SOURCES)
def test_compiles_to_ptx_for_every_arch(name):
    entries = kernel_names((KERNEL_DIR / name).read_text())
    with ThreadPoolExecutor(2) as pool:  # nvcc is mostly single-threaded; the CI box has 2 cores
        ptx = dict(zip(ARCHS, pool.map(lambda a: compile_ptx(name, a), ARCHS)))
    for arch, text in ptx.items():
        assert re.search(rf"^\.target {arch}\b", text, re.M), arch
        found = set(re.findall(r"\.entry\s+(\w+)\s*\(", text))
        assert set(entries) <= found, (arch, set(entries) - found)  # extern "C": unmangled entry names


@pytest.mark.parametrize("name", SOURCES)
def test_standalone_benchmark_compiles(name):
    obj = compile_object(name, "sm_87", defines=["KERNEL_BENCH_MAIN"])
    assert obj[:4] == b"\x7fELF"
