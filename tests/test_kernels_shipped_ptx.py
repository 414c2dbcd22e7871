"""The kernels load from the PTX shipped in the package: no nvcc at run time (issue 13, bug 6).

On a Jetson without /usr/local/cuda/bin on PATH, pycuda's SourceModule (nvcc at run time) failed and the GPU
kernels silently fell back to the CPU. Now kernels/ptx/<kernel>.<arch>.ptx is loaded with pycuda's
module_from_buffer and JIT-compiled by the driver; the stand-in maps it back to its .cu source for host emulation
and refuses it as a driver would (ISA newer than the driver, target newer than the GPU) or when it is stale.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from human3r_edge.kernels import build
from human3r_edge.errors import BackendUnavailable
from support.fake_gpu import fake_gpu  # noqa: F401  (fixture)


def test_every_kernel_ships_fresh_ptx_for_every_arch():
    for name in build.KERNEL_FILES:
        for arch in build.ARCHS:
            p = build.ptx_path(name, arch)
            assert p.is_file(), f"missing {p.name}: python -m human3r_edge.kernels.build --write-ptx"
            src, sha, isa, target = build.ptx_info(p.read_text())
            assert src == name and target == int(arch[3:])
            assert sha == build.source_sha256(name), f"{p.name} is stale: regenerate it"
            assert isa <= (7, 8), f"{p.name}: PTX ISA {isa} needs a newer driver than JetPack's"


def test_ptx_is_package_data():
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(build.KERNEL_DIR).parent / "pyproject.toml").read_text())
    assert "ptx/*.ptx" in data["tool"]["setuptools"]["package-data"]["human3r_edge.kernels"]


@pytest.mark.skipif(shutil.which("ptxas") is None and build.find_nvcc() is None, reason="no CUDA toolkit here")
def test_shipped_ptx_assembles_at_its_declared_isa():
    """ptxas checks the PTX against the ISA version it declares, so the lowered .version is honest."""
    ptxas = shutil.which("ptxas") or str(build.find_nvcc()).replace("nvcc", "ptxas")
    for name in build.KERNEL_FILES:
        for arch in build.ARCHS:
            res = subprocess.run([ptxas, f"-arch={arch}", str(build.ptx_path(name, arch)), "-o", "/dev/null"],
                                 capture_output=True, text=True)
            assert res.returncode == 0, res.stderr


def _skin_and_preprocess(fake_gpu, tmp_path):
    from human3r_edge.runtime.preprocess_gpu import CudaPreprocessor
    from human3r_edge.runtime.smplx.gpu import CudaSkinner
    from human3r_edge.runtime.smplx.skinning import SMPLXModel
    from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx

    cuda = fake_gpu.cuda
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    try:
        model = SMPLXModel.load(write_synthetic_smplx(tmp_path, seed=1, compress=False))
        skinner = CudaSkinner(model, max_people=2)
        rot = np.tile(np.eye(3, dtype=np.float32), (1, 53, 1, 1))
        z = np.zeros((1, 10), np.float32)
        got = skinner.skin(rot, z, z, np.zeros((1, 3), np.float32))
        want = model.skin(rot, z, z, np.zeros((1, 3), np.float32))
        assert np.abs(got.v_cam - want.v_cam).max() <= 1e-5
        pre = CudaPreprocessor(128, 160)
        img, _ = pre.process(np.full((96, 128, 3), 128, np.uint8))
        assert img.shape == (3, 96, 128)
        for obj in (skinner, pre):
            getattr(obj, "close", lambda: None)()  # free in the context, before it is released
    finally:
        cuda.Context.pop()
        ctx.detach()


def test_kernels_load_from_ptx_without_nvcc(fake_gpu, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvcc anywhere: as on a Jetson without /usr/local/cuda/bin
    _skin_and_preprocess(fake_gpu, tmp_path)
    assert fake_gpu.dev.nvcc_runs == 0  # nothing compiled at run time: SourceModule never used


def test_jetpack5_driver_loads_the_ptx(fake_gpu, tmp_path):
    fake_gpu.dev.driver_ptx_isa = (7, 4)  # CUDA 11.4 (JetPack 5) on an Orin (sm_87)
    _skin_and_preprocess(fake_gpu, tmp_path)


def test_driver_refusals_are_backend_unavailable(fake_gpu, tmp_path, monkeypatch):
    from human3r_edge.runtime.preprocess_gpu import CudaPreprocessor

    cuda = fake_gpu.cuda
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    try:
        fake_gpu.dev.cc = (7, 2)  # Xavier: older than every shipped target
        with pytest.raises(BackendUnavailable, match="too old"):
            CudaPreprocessor(128, 160)
        fake_gpu.dev.cc = (8, 7)
        fake_gpu.dev.driver_ptx_isa = (7, 0)  # a driver older than the sm_87 PTX (ISA 7.4)
        with pytest.raises(BackendUnavailable, match="UNSUPPORTED_PTX_VERSION"):
            CudaPreprocessor(128, 160)
        fake_gpu.dev.driver_ptx_isa = (9, 0)
        monkeypatch.setattr(build, "source_sha256", lambda name: "0" * 64)  # the .cu changed after the PTX
        with pytest.raises(BackendUnavailable, match="stale PTX"):
            CudaPreprocessor(128, 160)
    finally:
        cuda.Context.pop()
        ctx.detach()


def test_newer_gpu_runs_the_newest_older_ptx():
    assert build.pick_arch((8, 0)) == "sm_75"  # A100: sm_75 PTX, JIT-compiled for sm_80
    assert build.pick_arch((9, 0)) == "sm_89" and build.pick_arch((12, 0)) == "sm_89"
    assert build.pick_arch((8, 7)) == "sm_87"


def test_write_ptx_takes_kernel_names_and_refuses_unknown_ones(capsys):
    """`python -m human3r_edge.kernels.build --write-ptx nv12.cu` regenerates one kernel's PTX only."""
    assert "nv12.cu" in build.KERNEL_FILES
    with pytest.raises(SystemExit) as exc:
        build.main(["--write-ptx", "no_such.cu"])
    assert exc.value.code == 2 and "not a shipped kernel file" in capsys.readouterr().err
