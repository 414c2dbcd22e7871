"""Engine builder through the CPU stand-in: weak vs strong typing by TensorRT version, pins, caches, bad input."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import helper

from human3r_edge.export.trt_build import (BuildOptions, add_arguments, build_engines, main, typing_mode)
from human3r_edge.runtime.backends import open_backend
from human3r_edge.runtime.backends.trt import EngineSidecar
from human3r_edge.errors import ConfigError, Human3RError
from human3r_edge.runtime.iospec import ExportSpec
from support.fake_gpu import ContractViolation, fake_gpu  # noqa: F401  (fixture)
from support.toy_export import run_frames, write_toy_export


@pytest.fixture
def toy(tmp_path) -> Path:
    d = tmp_path / "onnx"
    write_toy_export(d)
    return d


def _opts(**kw) -> BuildOptions:
    return BuildOptions(progress=False, **kw)


def test_typing_mode_by_version():
    assert typing_mode("10.3.0.30", "auto") == "weak"
    assert typing_mode("10.11.0", "auto") == "weak"
    assert typing_mode("10.12.0.36", "auto") == "strong"
    assert typing_mode("11.0.0", "auto") == "strong"
    assert typing_mode("10.13.0", "weak") == "weak"  # deprecated but still there
    with pytest.raises(ConfigError, match="no weak typing"):
        typing_mode("11.1.0", "weak")


def test_weak_typing_on_trt_10_3(fake_gpu, toy, tmp_path):
    scs = build_engines(toy, tmp_path / "e", _opts())
    builds = fake_gpu.state["builds"]
    for sc, b in zip(scs, builds):
        assert sc.typing == "weak" and sc.onnx_file == f"{sc.graph}.onnx"
        assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(sc.flags) and not b["strongly_typed"]
        assert b["precision_constraints_obeyed"]
        assert sorted(b["fp32_layers"]) == sorted(r["layer"] for r in sc.fp32_layers)
        assert not sc.unmatched_fp32_nodes
    dec = next(sc for sc in scs if sc.graph == "decoder")
    reasons = " ".join(r["reason"] for r in dec.fp32_layers)
    for word in ("normalisation", "softmax", "reduction", "exp head", "pose translation"):
        assert word in reasons
    out = tmp_path / "e"
    assert (out / "export.json").is_file() and (out / "initial_state.npz").is_file()
    assert (out / "timing.cache").is_file()


@pytest.mark.parametrize("version", ["10.13.0.35", "11.0.0.1"])
def test_strong_typing_from_fp16_onnx(fake_gpu, toy, tmp_path, version):
    trt = fake_gpu.set_trt_version(version)
    if version.startswith("11"):
        assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")
    scs = build_engines(toy, tmp_path / "e", _opts())
    for sc, b in zip(scs, fake_gpu.state["builds"]):
        assert sc.typing == "strong" and sc.onnx_file == f"{sc.graph}.fp16.onnx"
        assert b["strongly_typed"] and b["fp32_layers"] == [] and "FP16" not in b["flags"]
        assert sc.fp32_layers == () and "FP16" not in sc.flags
    # the engines run (FP16 ONNX through the stand-in) and match the FP16 ONNX on ONNX Runtime CPU
    spec = ExportSpec.load(tmp_path / "e")
    with open_backend("trt", tmp_path / "e") as be:
        got = run_frames(be, spec, 3)
    assert all(v.dtype.kind in "fi" for row in got for v in row.values())


def test_strong_typing_refuses_fp16_flags_in_stand_in(fake_gpu, toy):
    """The stand-in enforces what the builder must never do (so a regression in trt_build is caught)."""
    trt = fake_gpu.set_trt_version("10.13.0.35")
    logger = trt.Logger()
    b = trt.Builder(logger)
    net = b.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(net, logger).parse_from_file(str(toy / "smpl_head.fp16.onnx"))
    cfg = b.create_builder_config()
    cfg.set_flag(trt.BuilderFlag.FP16)
    with pytest.raises(ContractViolation, match="strongly typed"):
        b.build_serialized_network(net, cfg)
    with pytest.raises(ContractViolation, match="strongly typed"):
        net.get_layer(0).precision = trt.float32
    assert len(fake_gpu.take_violations()) == 2


def test_fp32_precision_clears_tf32(fake_gpu, toy, tmp_path):
    scs = build_engines(toy, tmp_path / "e", _opts(precision="fp32"))
    assert all(sc.flags == () and sc.onnx_file.endswith(".onnx") and ".fp16" not in sc.onnx_file for sc in scs)
    fake_gpu.set_trt_version("10.13.0.35")
    scs = build_engines(toy, tmp_path / "e2", _opts(precision="fp32"))
    assert all(sc.typing == "strong" and ".fp16" not in sc.onnx_file for sc in scs)


def test_timing_cache_persists_between_builds(fake_gpu, toy, tmp_path):
    cache = tmp_path / "shared.cache"
    build_engines(toy, tmp_path / "a", _opts(timing_cache=str(cache), graphs=("encoder",)))
    first = fake_gpu.state["builds"][-1]
    assert cache.is_file() and first["timing_cache_hits"] == 0
    build_engines(toy, tmp_path / "b", _opts(timing_cache=str(cache), graphs=("encoder",)))
    assert fake_gpu.state["builds"][-1]["timing_cache_hits"] > 0
    cache.write_bytes(b"garbage from another TensorRT")
    build_engines(toy, tmp_path / "c", _opts(timing_cache=str(cache), graphs=("encoder",)))  # warns, rebuilds
    assert fake_gpu.state["builds"][-1]["timing_cache_hits"] == 0


def test_progress_monitor_drives_bars(fake_gpu, toy, tmp_path, capsys):
    build_engines(toy, tmp_path / "e", BuildOptions(progress=True, graphs=("smpl_head",)))
    assert "Building engine" in capsys.readouterr().err


def test_opt_level_and_workspace_are_applied(fake_gpu, toy, tmp_path):
    sc = build_engines(toy, tmp_path / "e", _opts(opt_level=4, workspace_mb=64, graphs=("encoder",)))[0]
    assert sc.builder_optimization_level == 4 and sc.workspace_bytes == 64 << 20
    assert fake_gpu.state["builds"][-1]["builder_optimization_level"] == 4


# ------------------------------------------------------------------------------------------ bad input
def test_workspace_below_minimum_is_refused():
    with pytest.raises(ConfigError, match="workspace too small.*16 MiB"):
        BuildOptions(workspace_mb=8)
    with pytest.raises(ConfigError, match="unknown precision"):
        BuildOptions(precision="int8")


def test_workspace_too_small_for_tensorrt(fake_gpu, toy, tmp_path):
    fake_gpu.state["workspace_required"] = 64 << 20
    with pytest.raises(Human3RError, match="ran out of workspace.*more than --workspace-mb 32.*raise --workspace-mb"):
        build_engines(toy, tmp_path / "e", _opts(workspace_mb=32))


def test_missing_onnx_file(fake_gpu, toy, tmp_path):
    (toy / "decoder.onnx").unlink()
    with pytest.raises(Human3RError, match="graph decoder \\| ONNX file not found"):
        build_engines(toy, tmp_path / "e", _opts())
    assert not (tmp_path / "e").exists()  # refused before any engine was built


def test_missing_fp16_variant_for_strong_typing(fake_gpu, tmp_path):
    toy = tmp_path / "onnx"
    write_toy_export(toy, fp16=False)
    fake_gpu.set_trt_version("10.13.0.35")
    with pytest.raises(Human3RError, match="no FP16 ONNX.*--typing weak"):
        build_engines(toy, tmp_path / "e", _opts())
    assert build_engines(toy, tmp_path / "e", _opts(typing="weak"))[0].typing == "weak"


def test_not_an_export_directory(fake_gpu, tmp_path):
    with pytest.raises(Human3RError, match="not a directory"):
        build_engines(tmp_path / "nope", tmp_path / "e", _opts())
    (tmp_path / "empty").mkdir()
    with pytest.raises(Human3RError, match="missing I/O spec"):
        build_engines(tmp_path / "empty", tmp_path / "e", _opts())


def test_op_check_refuses_unsupported_graph(fake_gpu, toy, tmp_path):
    m = onnx.load(str(toy / "smpl_head.onnx"))
    m.graph.node.append(helper.make_node("Unique", ["smpl_shape"], ["u"], name="planted"))
    onnx.save(m, str(toy / "smpl_head.onnx"))
    with pytest.raises(Human3RError, match="op-support errors.*Unique"):
        build_engines(toy, tmp_path / "e", _opts(graphs=("smpl_head",)))
    with pytest.raises(Human3RError, match="ONNX parser failed.*No importer registered for op: Unique"):
        build_engines(toy, tmp_path / "e", _opts(graphs=("smpl_head",), op_check=False))


def test_cli_build_then_run(fake_gpu, toy, tmp_path, capsys):
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--onnx-dir", str(toy), "--out", str(tmp_path / "e"), "--no-progress", "--opt-level", "2"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "built 3 engine(s) (fp16, weak typing, TensorRT 10.3.0.30)" in out
    sc = EngineSidecar.load(tmp_path / "e" / "decoder.engine.json")
    assert sc.builder_optimization_level == 2
    bad = p.parse_args(["--onnx-dir", str(toy), "--out", str(tmp_path / "e"), "--workspace-mb", "4"])
    assert main(bad) == 2
    assert "workspace too small" in capsys.readouterr().err


def test_cli_without_tensorrt_exits_cleanly(tmp_path):
    """Here (no TensorRT, only its stubs): exit code 3 with the install hint, no traceback."""
    toy = tmp_path / "onnx"
    write_toy_export(toy, fp16=False)
    from human3r_edge.cli import main as cli

    assert cli(["build", "--onnx-dir", str(toy), "--out", str(tmp_path / "e")]) == 3


def test_engine_dir_is_self_contained(fake_gpu, toy, tmp_path):
    out = tmp_path / "e"
    build_engines(toy, out, _opts())
    moved = tmp_path / "moved_onnx"
    shutil.move(str(toy), str(moved))  # the ONNX is gone from its build-time path: the engines still load
    spec = ExportSpec.load(out)
    with open_backend("trt", out) as be:
        assert run_frames(be, spec, 1)[0]["camera_pose"].shape == (1, 7)
    sc = json.loads((out / "encoder.engine.json").read_text())
    assert sc["onnx_path"].startswith(str(toy))
