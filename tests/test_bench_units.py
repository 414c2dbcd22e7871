"""Unit tests of the benchmark pieces that need no export: sgemm peak, FLOP counting, statistics, projection."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from human3r_edge.benchmarks import bench, bench_assets, bench_settings, flops, frames, memory, peak, projection
from human3r_edge.runtime.config import get_config
from human3r_edge.errors import Human3RError


# ------------------------------------------------------------------------------------------ peak
def test_ort_matmul_graph_computes_x_at_w():
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    x, w = (rng.standard_normal((32, 32), dtype=np.float32) for _ in range(2))
    sess = ort.InferenceSession(peak.matmul_model_bytes(32, w), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-4, atol=1e-4)


def test_measure_reports_each_library_and_the_best():
    res = peak.measure(128, 2, threads=1, libraries=("numpy", "torch", "ort"))
    libs = res["libraries"]
    assert set(libs) == {"numpy", "torch", "ort"}
    for r in libs.values():
        assert r["error"] is None and r["best_gflops"] >= r["median_gflops"] > 0
    # numpy's thread count is not controlled, so with threads=1 it must not be the reference peak
    eligible = [libs["torch"]["best_gflops"], libs["ort"]["best_gflops"]]
    assert res["peak_gflops"] == pytest.approx(max(eligible))
    assert res["peak_library"] in ("torch", "ort")


def test_measure_refuses_unknown_library():
    with pytest.raises(Human3RError, match="unknown libraries"):
        peak.measure(64, 1, libraries=("blas",))


# ------------------------------------------------------------------------------------------ FLOPs
def _toy_module():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 4, 4)
            self.lin = nn.Linear(16, 48)
            self.up = nn.ConvTranspose2d(16, 8, 2, 2)
            self.gconv = nn.Conv2d(8, 8, 3, padding=1, groups=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)  # (1, 16, 8, 8)
            t = y.flatten(2).transpose(1, 2)  # (1, 64, 16)
            qkv = self.lin(t).reshape(1, 64, 3, 2, 8).permute(2, 0, 3, 1, 4)  # 3 x (1, 2, 64, 8)
            a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (1, 2, 64, 8)
            z = a.transpose(1, 2).reshape(1, 64, 16).transpose(1, 2).reshape(1, 16, 8, 8)
            return self.gconv(self.up(z + y))  # (1, 8, 16, 16)

    return Toy().eval()


# hand count, 2 FLOPs per multiply-add: conv 8*8*16 outputs x 3*4*4; linear 64x16x48; attention 2 heads x
# (64x64x8 for q k^T + 64x64x8 for a v); transposed conv 16*8*8 inputs x 8*2*2; grouped conv 8*16*16 x 4*3*3
TOY_FLOPS = {"Conv": 2 * 1024 * 48 + 2 * 2048 * 36, "MatMul": 2 * 64 * 16 * 48 + 2 * 2 * 2 * 64 * 64 * 8,
             "ConvTranspose": 2 * 1024 * 32}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_count_matches_hand_count(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "toy.onnx"
    torch.onnx.export(_toy_module(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17)
    g = flops.count_model(flops.load_structure(path))
    assert g.uncounted == []
    assert g.by_op == TOY_FLOPS
    assert g.flops == sum(TOY_FLOPS.values())
    n = sum(p.numel() for p in _toy_module().parameters())
    assert 0 <= g.params - n <= 8  # weights plus a few scalar constants (e.g. the attention scale)
    assert g.weight_fp32_bytes >= 4 * n
    assert set(g.by_scope) >= {"conv", "lin", "up", "gconv"}  # TorchScript node names carry the module
    # the largest intermediate: the (1, 2, 64, 64) attention scores (or the (1, 8, 16, 16) output), fp32
    assert g.largest_tensor_bytes == 2 * 64 * 64 * 4
    assert g.activation_peak_bytes >= g.largest_tensor_bytes


def test_meta_count_matches_onnx_count_of_the_same_module():
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    m = _toy_module().to("meta").requires_grad_(False)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m(torch.zeros(1, 3, 32, 32, device="meta"))
    assert fc.get_total_flops() == sum(TOY_FLOPS.values())  # SDPA decomposes to matmuls on meta: counted


def test_node_flops_formulas_without_torch():
    from onnx import helper

    shapes = {"a": (2, 5, 7), "b": (7, 3), "y": (2, 5, 3), "g": (4, 6), "gw": (6, 9), "gy": (4, 9),
              "q": (1, 3, 10), "k": (1, 3, 12)}
    mm = helper.make_node("MatMul", ["a", "b"], ["y"])
    assert flops.node_flops(mm, shapes) == 2 * 2 * 5 * 3 * 7
    gemm = helper.make_node("Gemm", ["g", "gw"], ["gy"])
    assert flops.node_flops(gemm, shapes) == 2 * 4 * 9 * 6
    ein = helper.make_node("Einsum", ["q", "k"], ["o"], equation="bnd,bmd->bnm")
    shapes.update(q=(1, 4, 8), k=(1, 6, 8))
    assert flops.node_flops(ein, shapes) == 2 * 1 * 4 * 6 * 8
    mha = helper.make_node("MultiHeadAttention", ["q", "k", "k"], ["o"], domain="com.microsoft", num_heads=2)
    assert flops.node_flops(mha, {"q": (1, 10, 16), "k": (1, 12, 16)}) == 4 * 10 * 12 * 16
    relu = helper.make_node("Relu", ["a"], ["r"])
    assert flops.node_flops(relu, shapes) == 0
    assert flops.node_flops(helper.make_node("MatMul", ["zz", "b"], ["y2"]), shapes) is None


def test_torch_meta_count_of_672S_matches_the_reference_anchor():
    pytest.importorskip("torch")
    # anchor (reference-cpu-benchmark.md): 1431.4 GFLOP per frame for the full 672S model with 2 people
    full = flops.torch_stage_flops(get_config("672S"), 512, 288, 2, lean=False)
    assert full["total"] / 1e9 == pytest.approx(1431.4, rel=0.01)
    lean = flops.torch_stage_flops(get_config("672S"), 512, 288, 2, lean=True)
    # lean drops two DPTs (140 GFLOP each) and final_transform (18.4): the encoder is the same
    assert lean["stages"]["encoder"] == full["stages"]["encoder"]
    assert (full["total"] - lean["total"]) / 1e9 == pytest.approx(2 * 140.0 + 18.4, rel=0.02)
    assert lean["params"] < full["params"]
    assert all(v > 0 for v in lean["activation_peak_bytes"].values())


# ------------------------------------------------------------------------------------------ statistics
def _records(frame_ms, graph_frac=0.9, people=2):
    out = []
    for f in frame_ms:
        st = {k: 0.0 for k in bench_settings.STAGES}
        st.update(encoder=0.4 * f, decoder=0.5 * f, smpl_head=0.0, preprocess=0.1 * f)
        out.append({"frame_ms": f, "stages": st, "graph_ms": graph_frac * f, "people": people})
    return {"records": out}


def test_summary_percentiles_efficiency_and_overhead():
    raw = _records([999.0, 100.0, 100.0, 100.0, 100.0])
    flops_ = {"encoder": int(40e9), "decoder": int(50e9), "smpl_head": 0}
    b = bench.summarize_backend(raw, warmup=1, flops=flops_, peak_gflops=1000.0)
    assert b["timed_frames"] == 4 and b["warmup_frames"] == 1
    assert b["frame_ms"]["p50"] == pytest.approx(100.0)  # the warm-up frame is excluded
    assert b["fps"] == pytest.approx(10.0)
    # 90 GFLOP in 0.1 s = 900 GFLOP/s of a 1000 GFLOP/s peak; encoder 40 GFLOP in 40 ms = 100 %
    assert b["efficiency"]["total"] == pytest.approx(0.9)
    assert b["efficiency"]["encoder"] == pytest.approx(1.0)
    assert b["efficiency"]["graphs"] == pytest.approx(1.0)
    assert b["overhead"]["outside_graphs_fraction_p50"] == pytest.approx(0.1)
    assert set(b["stages"]) == set(bench_settings.STAGES)
    for k in bench_settings.STAGES:
        assert set(b["stages"][k]) >= {"p50", "p90", "p99"}


def test_comparison_and_targets():
    flops_ = {"encoder": int(40e9), "decoder": int(50e9), "smpl_head": 0}
    torch_b = bench.summarize_backend(_records([200.0] * 3), 0, flops_, 1000.0)
    ort_b = bench.summarize_backend(_records([100.0] * 3, graph_frac=0.98), 0, flops_, 1000.0)
    ort_b.update(rss_over_weights=1.4, rss_above_baseline_over_weights=1.2)
    backends = {"torch": torch_b, "ort-cpu": ort_b, "trt": {"skipped": "no GPU"}}
    cmp_ = bench.compare_to_torch(backends)
    assert set(cmp_) == {"torch", "ort-cpu"}
    assert cmp_["ort-cpu"]["frame_p50_ratio"] == pytest.approx(0.5)
    assert cmp_["ort-cpu"]["speedup"] == pytest.approx(2.0)
    t = bench.targets(backends)
    assert t["p50_vs_torch_le_0.75"]["met"] and t["peak_rss_le_1.3x_weights"]["met"]
    assert t["peak_rss_le_1.3x_weights"]["absolute"] == pytest.approx(1.4)
    assert t["overhead_le_0.03"]["met"]
    assert t["efficiency_total_ge_0.75"]["met"] and t["efficiency_total_ge_0.75"]["value"] == pytest.approx(0.9)


def test_peak_rss_tracking_sees_a_new_allocation():
    if not memory.reset_peak_rss():
        pytest.skip("/proc/self/clear_refs is not writable here: peak RSS cannot be reset")
    before = memory.peak_rss_bytes()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    assert memory.peak_rss_bytes() >= before + 60 * 2**20
    del block
    memory.release_memory()
    assert memory.reset_peak_rss()
    assert memory.peak_rss_bytes() < before + 32 * 2**20


def test_settings_validation():
    p = __import__("argparse").ArgumentParser()
    bench_settings.add_arguments(p)
    s = bench_settings.settings_from_args(p.parse_args(["--config", "tiny", "--threads", "1", "--ort-option",
                                               "allow_spinning=false"]))
    assert s.backends == ("torch", "ort-cpu") and s.threads == 1 and s.source_size == (640, 360)
    assert s.ort_options == (("allow_spinning", False),)
    for bad in (["--backends", "torch,foo"], ["--resolution", "500x288"], ["--frames", "0"],
                ["--ort-option", "novalue"]):
        with pytest.raises(Human3RError):
            bench_settings.settings_from_args(p.parse_args(bad))


def test_synthetic_frames_are_deterministic_and_preprocess_to_the_resolution():
    from human3r_edge.runtime.preprocess import preprocess_rgb

    a = frames.synthetic_frames(640, 360, 2, seed=3)
    b = frames.synthetic_frames(640, 360, 2, seed=3)
    assert a[0].dtype == np.uint8 and a[0].shape == (360, 640, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], a[1])
    assert preprocess_rgb(a[0], 512).shape == (3, 288, 512)


def test_calibration_lets_exactly_the_asked_people_pass():
    torch = pytest.importorskip("torch")
    from human3r_edge.export.assets import random_model
    from human3r_edge.export.model.detection import nms
    from human3r_edge.runtime.preprocess import pad_image, preprocess_rgb

    model, _ = random_model(get_config("tiny"), 0, calibrate=False)
    img = preprocess_rgb(frames.synthetic_frames(160, 120, 1)[0], 128)
    mhmr, _ = pad_image(img, model.cfg.mhmr_img_res)
    for people in (1, 3):
        bench_assets.calibrate_detection(model, img, mhmr, people)
        with torch.inference_mode():
            scores, _ = model.detect(model.encode_human(torch.from_numpy(mhmr)[None]))
        assert int((nms(scores) >= 0.3).sum()) == people


# ------------------------------------------------------------------------------------------ projection
def test_projection_row_arithmetic():
    dev = projection.Device("X", 10.0, 100.0, 8.0, "test")
    counts = {"variant": "V", "total_flops": 1e12, "params": 500_000_000, "state_bytes": 10_000_000,
              "activation_bytes": 200_000_000}
    r = projection.project(counts, dev)
    assert r["compute_floor_ms"] == pytest.approx(100.0)  # 1 TFLOP / 10 TFLOPS
    assert r["realistic_ms"] == pytest.approx([1e3 / 6.0, 250.0])  # 60 % and 40 % of the peak
    assert r["bandwidth_floor_ms"] == pytest.approx(10.0)  # 1 GB of FP16 weights / 100 GB/s
    assert r["memory_bytes"] == 1_000_000_000 + 10_000_000 + 200_000_000
    assert r["within_8gb_budget"] and r["fits_device_memory"]


def test_projection_table_is_labelled_and_complete(tmp_path):
    pytest.importorskip("torch")
    p = projection.projection(512, 288, 16, variants=("672S",))
    assert p["label"].startswith("PROJECTION")
    assert [r["device"] for r in p["rows"]] == [d.name for d in projection.DEVICES]
    assert {d.name for d in projection.DEVICES} == {"Orin Nano 8GB", "Orin NX 16GB", "AGX Orin 64GB", "RTX 4090"}
    j, md = projection.write(p, tmp_path)
    text = md.read_text()
    assert "PROJECTION" in text and "8 GB" in text and "deployment.md" in text
    assert json.loads(j.read_text())["rows"][0]["variant"] == "672S"
    with pytest.raises(Human3RError):
        projection.projection(512, 288, 16, exports={"999X": tmp_path}, variants=("672S",))


def test_peak_module_cli_runs():
    out = subprocess.run([sys.executable, "-m", "human3r_edge.benchmarks.peak", "--size", "64", "--repeats", "1",
                          "--libraries", "numpy,ort"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sgemm peak |" in out.stdout


def test_one_machine_description_for_every_benchmark():
    """bench, smplx_bench and soak describe the machine through benchmarks/machine.py, with the same keys."""
    import inspect

    from human3r_edge.benchmarks import machine, smplx_bench, soak

    info = machine.describe(2)
    assert {"cpu", "cores", "threads", "memory_bytes", "platform", "python", "numpy", "loadavg_before"} <= set(info)
    done = machine.finish(info, machine.cpu_snapshot())
    assert isinstance(done["quiet"], bool) and len(done["loadavg_after"]) == 3 and 0 <= done["foreign_cpu_share"]
    for mod in (bench, smplx_bench, soak):
        src = inspect.getsource(mod)
        assert "machine.describe(" in src and "/proc/cpuinfo" not in src, mod.__name__
