"""Smoke test of `human3r-edge bench --config tiny --frames 3`: the whole flow (seeded weights, lean export, torch
and ort-cpu on the same frames, FLOPs, sgemm peak, JSON + markdown + PNG) and the stable JSON shape. No timing
is asserted."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from human3r_edge.benchmarks.bench_settings import GRAPH_STAGES, STAGES


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    d = tmp_path_factory.mktemp("bench")
    out = d / "tiny_512x288_cpu.json"
    env = dict(os.environ, HUMAN3R_BENCH_CACHE=str(d / "cache"))
    # the brief's command; --json keeps the committed results untouched, a small sgemm keeps it quick
    cmd = [sys.executable, "-m", "human3r_edge", "bench", "--config", "tiny", "--frames", "3", "--json", str(out),
           "--peak-size", "256", "--peak-repeats", "2"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "bench | tiny 512x288:" in res.stdout  # the one-line summary
    return out, json.loads(out.read_text())


@pytest.mark.slow
def test_bench_tiny_json_shape(tiny_result):
    _, r = tiny_result
    assert r["config"] == "tiny" and r["resolution"] == [512, 288] and r["frames"] == 3
    assert r["machine"]["sgemm_peak_gflops"] > 0
    assert r["machine"]["cores"] >= 1 and r["machine"]["threads"] >= 1 and r["machine"]["cpu"]
    assert isinstance(r["machine"]["quiet"], bool) and len(r["machine"]["loadavg_after"]) == 3
    assert r["versions"]["torch"] and r["versions"]["onnxruntime-gpu"]
    for k in GRAPH_STAGES:
        assert r["flops"][k] > 0
    assert r["flops"]["total"] == sum(r["flops"][k] for k in GRAPH_STAGES)
    assert r["flops_info"]["source"].startswith("onnx")
    assert set(r["backends"]) == {"torch", "ort-cpu"}
    for name, b in r["backends"].items():
        assert "skipped" not in b, name
        assert set(b["frame_ms"]) >= {"p50", "p90", "p99"}
        assert 0 < b["frame_ms"]["p50"] <= b["frame_ms"]["p99"]
        assert set(b["stages"]) == set(STAGES)
        for st in STAGES:
            assert set(b["stages"][st]) >= {"p50", "p90", "p99"}
        assert isinstance(b["peak_rss_bytes"], int) and b["peak_rss_bytes"] > 0
        assert set(b["efficiency"]) >= set(GRAPH_STAGES) | {"total"}
        assert all(isinstance(v, float) and v >= 0 for v in b["efficiency"].values())
        assert b["timed_frames"] == 3 and len(b["people_per_frame"]) == 4  # 1 warm-up + 3 timed
        assert b["fps"] > 0
    # same weights and frames: both backends see the same people on every frame
    assert r["backends"]["torch"]["people_per_frame"] == r["backends"]["ort-cpu"]["people_per_frame"]
    assert r["backends"]["torch"]["people_per_frame"][0] == r["people_frame0"] == 2
    assert r["comparison"]["ort-cpu"]["frame_p50_ratio"] > 0
    assert set(r["targets"]) == {"p50_vs_torch_le_0.75", "efficiency_total_ge_0.75", "overhead_le_0.03",
                                 "peak_rss_le_1.3x_weights"}


@pytest.mark.slow
def test_bench_tiny_writes_markdown_and_chart(tiny_result):
    out, r = tiny_result
    md = out.with_suffix(".md").read_text()
    assert "| stage (p50 ms) | torch | ort-cpu |" in md
    assert "sgemm peak" in md and r["command"].split()[0] == "human3r-edge"
    png = out.with_suffix(".png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib is not installed: no chart is written (the JSON and markdown still are)")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
