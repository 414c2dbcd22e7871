"""The SMPL-X benchmark script: its projection arithmetic, its report, and a one-iteration numpy worker."""
from __future__ import annotations

import numpy as np

from human3r_edge.benchmarks.smplx_bench import (GPUS, PEOPLE, gpu_bytes_per_frame, least_disturbed, make_inputs,
                                                  markdown, projection, worker_breakdown, worker_numpy)
from human3r_edge.runtime.smplx.synthetic import write_synthetic_smplx


def test_projection_arithmetic():
    one, sixteen, seventeen = (gpu_bytes_per_frame(P, 4) for P in (1, 16, 17))
    basis = 488 * 3 * 10475 * 4
    assert basis < one["bytes_per_frame"] < basis * 1.05  # one person: the basis dominates
    assert sixteen["bytes_per_body"] < one["bytes_per_body"] / 8  # basis read once for 16 people
    assert seventeen["bytes_per_frame"] > sixteen["bytes_per_frame"] + basis  # a 17th person needs a second pass
    half = gpu_bytes_per_frame(1, 2)
    assert abs((one["bytes_per_frame"] - half["bytes_per_frame"]) - basis / 2) < 1
    proj = projection()
    row = proj["fp32 basis"][16]
    assert set(row["floor_ms_per_body"]) == set(GPUS)
    orin, rtx = row["floor_ms_per_body"]["Jetson AGX Orin"], row["floor_ms_per_body"]["RTX 4090"]
    assert abs(orin / rtx - 1008.0 / 204.8) < 1e-9


def test_inputs_are_rotations():
    x = make_inputs(4)
    R = x["rotmat"]
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)


def test_numpy_worker_and_report(tmp_path):
    model = write_synthetic_smplx(tmp_path, compress=False)
    res = worker_numpy(str(model), iters=1, blend_dtype="float32")
    assert set(res) == set(PEOPLE) and all(len(v) == 1 and v[0] > 0 for v in res.values())
    variants = ("native", "numpy", "torch-human3r", "torch-smplx", "numpy-fp16")
    stats = {"best_round_median_ms": 1.5, "median_ms": 2.0, "min_ms": 1.0, "p90_ms": 3.0, "n": 1, "rounds": 1}
    report = {"machine": {"cpu": "test cpu", "cores": "2", "numpy": np.__version__, "torch": None},
              "rounds": 1, "iters": 1, "model_note": "synthetic", "native_status": "compiled kernels x.so",
              "results": {v: {str(P): stats for P in PEOPLE} for v in variants},
              "results_cpu_time_1_thread": {v: {str(P): stats for P in PEOPLE} for v in variants},
              "projection": {k: ({str(P): r for P, r in v.items()} if "basis" in k else v)
                             for k, v in projection().items()}}
    report["speedup_at_16"] = {"wall_vs_torch-smplx_best_round_median": 2.9,
                               "wall_vs_torch-human3r_best_round_median": 3.5,
                               "numpy_wall_vs_torch-smplx_best_round_median": 1.9,
                               "numpy_wall_vs_torch-human3r_best_round_median": 2.5}
    bd = worker_breakdown(str(model), iters=1, P=4)
    assert bd["people"] == 4 and bd["total_ms"] > bd["blend_gemm_ms"] > 0 and bd["skin_gemm_gflops"] > 0
    assert bd["basis_bytes"] == 488 * 3 * 10475 * 4
    report["numpy_breakdown_16"] = bd
    text = markdown(report)
    assert "test cpu" in text and "PROJECTION" in text and text.count("\n| 16 |") == 2  # wall + CPU-time rows
    assert "2.90x" in text and "1.90x" in text and "**NOT met**" in text and "blend GEMM" in text
    assert "**not met**." in text  # the numpy path's verdict, reported on its own
    report["speedup_at_16"]["wall_vs_torch-smplx_best_round_median"] = 3.2
    assert "NOT met" not in markdown(report) and "**not met**." in markdown(report)
    # the numpy floor: every blend formulation tried, and the verdict against the smplx forward's 3x budget
    tried = bd["numpy_blend_variants_ms"]
    assert {"one GEMM", "transposed GEMM", "2048-column chunks", "8192-column chunks"} <= set(tried)
    assert bd["numpy_blend_best_ms"] == min(tried.values()) > 0 and bd["numpy_sparse_skin_ms"] > 0
    assert "out of numpy's reach here" in text  # budget 1.5 / 3 = 0.5 ms, below any real floor
    report["results"]["torch-smplx"]["16"] = {**stats, "best_round_median_ms": 1e6}
    assert "within reach in principle" in markdown(report)


def test_native_worker_times_the_compiled_path(tmp_path):
    from human3r_edge.runtime.smplx.native import load_native, native_status

    if load_native() is None:
        import pytest

        pytest.skip(f"no compiled kernels here: {native_status()}")
    model = write_synthetic_smplx(tmp_path, compress=False)
    res = worker_numpy(str(model), iters=1, blend_dtype="float32", backend="native")
    assert set(res) == set(PEOPLE) and all(v[0] > 0 for v in res.values())


def test_breakdown_runs_combine_figure_by_figure():
    a = {"total_ms": 9.0, "blend_gemm_gflops": 80.0, "people": 16.0,
         "numpy_blend_variants_ms": {"one GEMM": 6.0, "chunks": 5.0}, "numpy_blend_best_ms": 5.0}
    b = {"total_ms": 11.0, "blend_gemm_gflops": 90.0, "people": 16.0,
         "numpy_blend_variants_ms": {"one GEMM": 4.5, "chunks": 7.0}, "numpy_blend_best_ms": 4.5}
    c = least_disturbed([a, b])
    assert c["total_ms"] == 9.0 and c["blend_gemm_gflops"] == 90.0 and c["people"] == 16.0 and c["runs"] == 2
    assert c["numpy_blend_variants_ms"] == {"one GEMM": 4.5, "chunks": 5.0} and c["numpy_blend_best_ms"] == 4.5
