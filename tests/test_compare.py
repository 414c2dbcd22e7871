"""`compare`: per-key tolerances from one table, exact integer keys, rotation vectors via matrices, missing
required keys fail, and the CLI's last line and exit status."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from human3r_edge.runtime.commands import compare as C
from human3r_edge.errors import Human3RError


def _golden() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "step/pts3d_in_self_view": rng.normal(size=(2, 4, 5, 3)).astype(np.float32) * 10,
        "step/n_humans": np.array([1, 2], np.int64),
        "step/smpl_id": np.array([0, 0, 1], np.int64),
        "demo/smpl_rotvec": np.array([[[np.pi - 1e-4, 0, 0]]], np.float32),
        "smplx/faces": np.arange(9, dtype=np.int64).reshape(3, 3),
        "inter/enc_tokens": rng.normal(size=(2, 3, 4)).astype(np.float32),
        "input/img": np.zeros((2, 3, 4, 4), np.float32),
    }


def _copy(d: dict) -> dict:
    return {k: v.copy() for k, v in d.items()}


def test_identical_passes_and_reports_every_shared_key():
    g = _golden()
    out = _copy(g)
    del out["input/img"]  # not required: skipped, not failed
    report = C.compare_dicts(out, g)
    assert report.passed and not report.missing
    assert {r.key for r in report.results} == set(out)
    lines = C.format_report(report)
    assert lines[-1].startswith("PASSED")


def test_tolerance_table_lookup():
    assert C.tolerance_for("step/conf") == C.TOLERANCES[""] == 3e-5
    assert C.tolerance_for("inter/enc_tokens") == 1e-4
    table = {"": 1e-5, "inter/": 1e-3, "inter/x": 2e-3}
    assert C.tolerance_for("inter/y", table) == 1e-3 and C.tolerance_for("inter/x", table) == 2e-3
    assert C.tolerance_for("step/y", table) == 1e-5


def test_float_tolerance_is_relative_to_max_ref():
    g = _golden()
    ref = g["step/pts3d_in_self_view"]
    scale = float(np.abs(ref).max())
    out = _copy(g)
    out["step/pts3d_in_self_view"] = ref + np.float32(2e-5 * scale)
    assert C.compare_dicts(out, g).passed
    out["step/pts3d_in_self_view"] = ref + np.float32(5e-5 * scale)
    report = C.compare_dicts(out, g)
    assert not report.passed
    assert report.worst.key == "step/pts3d_in_self_view"
    assert C.format_report(report)[-1].startswith("FAILED") and "step/pts3d_in_self_view" in C.format_report(report)[-1]


def test_integer_keys_are_exact():
    g = _golden()
    out = _copy(g)
    out["step/smpl_id"] = np.array([0, 1, 0], np.int64)  # swapped track ids
    report = C.compare_dicts(out, g)
    assert not report.passed and report.worst.key == "step/smpl_id"
    out = _copy(g)
    out["step/n_humans"] = out["step/n_humans"].astype(np.int32)  # same values, other width: accepted with a note
    r = C.compare_arrays("step/n_humans", out["step/n_humans"], g["step/n_humans"])
    assert r.ok and "int32" in r.note


def test_missing_required_key_fails_and_is_named(capsys, tmp_path):
    g = _golden()
    out = _copy(g)
    del out["smplx/faces"]
    report = C.compare_dicts(out, g)
    assert not report.passed and report.missing == ("smplx/faces",)
    np.savez(tmp_path / "out.npz", **out)
    np.savez(tmp_path / "golden.npz", **g)
    rc = C.main(argparse.Namespace(out=str(tmp_path / "out.npz"), golden=str(tmp_path / "golden.npz")))
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 1
    assert lines[-1].startswith("FAILED") and "smplx/faces" in lines[-1]
    assert any("smplx/faces" in line and "missing" in line for line in lines[:-1])


def test_shape_and_nan_mismatch_fail():
    g = _golden()
    r = C.compare_arrays("step/x", g["step/pts3d_in_self_view"][:1], g["step/pts3d_in_self_view"])
    assert not r.ok and "shape" in r.note
    a = g["inter/enc_tokens"].copy()
    a[0, 0, 0] = np.nan
    assert not C.compare_arrays("inter/enc_tokens", a, g["inter/enc_tokens"]).ok
    b = np.array([1.0, np.nan], np.float32)
    assert C.compare_arrays("step/x", b.copy(), b).ok


def test_rotvec_near_pi_compared_as_rotation_matrices():
    """A rotation of angle pi - e about +x is also (pi + e) about -x: far apart as vectors, equal as matrices."""
    g = _golden()
    ref = g["demo/smpl_rotvec"]
    angle = np.float64(ref[0, 0, 0])
    other = np.array([[[-(2 * np.pi - angle), 0, 0]]], np.float32)  # the same rotation, opposite convention
    np.testing.assert_allclose(C.rotvec_to_rotmat(other), C.rotvec_to_rotmat(ref), atol=1e-5)
    r = C.compare_arrays("demo/smpl_rotvec", other, ref)
    assert r.ok and r.kind == "rotmat" and "raw rotvec" in r.note
    wrong = np.array([[[0.0, angle, 0]]], np.float32)
    assert not C.compare_arrays("demo/smpl_rotvec", wrong, ref).ok


def test_unreadable_file_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    rc = C.main(argparse.Namespace(out=str(bad), golden=str(bad)))
    assert rc == 1 and capsys.readouterr().out.strip().splitlines()[-1].startswith("FAILED")
    with pytest.raises(Human3RError, match="not found"):
        C.compare_files(tmp_path / "absent.npz", bad)


def test_nothing_compared_is_a_failure(tmp_path, capsys):
    """A golden with no data keys (or none shared with the output) proves nothing: FAILED, exit 1."""
    import numpy as np

    from human3r_edge.cli import main

    np.savez(tmp_path / "out.npz", **{"meta/x": np.zeros(2), "meta/size_arg": np.array(128)})
    np.savez(tmp_path / "golden.npz", **{"meta/y": np.zeros(2), "meta/size_arg": np.array(128)})
    report = C.compare_files(tmp_path / "out.npz", tmp_path / "golden.npz")
    assert not report.passed
    assert main(["compare", str(tmp_path / "out.npz"), str(tmp_path / "golden.npz")]) == 1
    assert "FAILED no data key compared (1 meta/ keys only)" in capsys.readouterr().out


def test_score_maps_compare_where_they_decide():
    """A sub-threshold NMS peak that moved to a neighbour (an FP16 near-tie) is not an error; a change at or above the
    threshold still is."""
    from human3r_edge.runtime.commands.compare import compare_dicts, mask_undecided_scores

    ref = {"meta/detection_threshold": np.float32(0.3), "step/smpl_scores": np.zeros((1, 4, 4, 1), np.float32)}
    ref["step/smpl_scores"][0, 1, 1, 0] = 0.9
    ref["step/smpl_scores"][0, 2, 3, 0] = 0.0135
    out = {k: v.copy() for k, v in ref.items()}
    out["step/smpl_scores"][0, 2, 3, 0], out["step/smpl_scores"][0, 2, 2, 0] = 0.0, 0.0135  # the peak moved
    assert not compare_dicts(dict(out), dict(ref)).passed
    a, b = dict(out), dict(ref)
    assert mask_undecided_scores(a, b) == {"step/smpl_scores": 2}
    assert compare_dicts(a, b).passed
    out["step/smpl_scores"][0, 1, 1, 0] = 0.8  # a detection's score changed: still compared
    a, b = dict(out), dict(ref)
    mask_undecided_scores(a, b)
    assert not compare_dicts(a, b).passed
