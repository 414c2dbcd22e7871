"""The synthetic SMPL-X generator: official format and sizes, sound content, loadable by the smplx package."""
from __future__ import annotations

import numpy as np
import pytest

from human3r_edge.runtime.smplx.constants import EXTRA_JOINT_VERTICES, PARENTS
from human3r_edge.runtime.smplx.synthetic import (make_mean_params, make_synthetic_smplx, write_mean_params,
                                                  write_synthetic_smplx)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return write_synthetic_smplx(d, seed=9), write_mean_params(d, seed=9)


def test_format_matches_the_goldens_file(written, synthetic_smplx):
    ours = np.load(written[0], allow_pickle=True)
    ref = np.load(synthetic_smplx, allow_pickle=True)
    assert sorted(ours.files) == sorted(ref.files)  # includes joint2num, part2num and the stray allow_pickle
    for k in ref.files:
        assert ours[k].shape == ref[k].shape and ours[k].dtype == ref[k].dtype, k
    assert isinstance(ours["joint2num"].item(), dict) and ours["joint2num"].item()["head"] == 15


def test_content_is_sound(written):
    z = np.load(written[0], allow_pickle=True)
    assert z["v_template"].shape == (10475, 3) and z["f"].shape == (20908, 3) and z["f"].max() < 10475
    assert z["shapedirs"].shape == (10475, 3, 400) and z["posedirs"].shape == (10475, 3, 486)
    np.testing.assert_array_equal(z["kintree_table"][0, 1:], PARENTS[1:])
    assert z["kintree_table"][0, 0] == 4294967295
    W, JR = z["weights"], z["J_regressor"]
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(JR.sum(1), 1.0, atol=1e-12)
    assert (W >= 0).all() and (JR >= 0).all() and (W > 0).sum(1).max() <= 3 and (JR > 0).sum(1).max() <= 20
    assert (np.diff(np.sort(z["f"], axis=1), axis=1) > 0).all()  # no degenerate triangles
    np.testing.assert_allclose(z["lmk_bary_coords"].sum(1), 1.0)
    assert (z["posedirs"] != 0).mean() < 0.1 and np.abs(z["posedirs"]).max() < 0.02  # sparse, small correctives
    # the public extra-joint vertices sit at sensible places: nose above the pelvis, toes below it
    v = z["v_template"]
    assert v[EXTRA_JOINT_VERTICES[0], 1] > 0.1 and v[EXTRA_JOINT_VERTICES[5], 1] < -1.0


def test_seeded_and_reproducible():
    a, b, c = make_synthetic_smplx(1), make_synthetic_smplx(1), make_synthetic_smplx(2)
    for k in ("v_template", "weights", "posedirs", "f"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["v_template"], c["v_template"])


def test_smplx_package_loads_it(written):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    m = smplx.create(str(written[0]), "smplx", gender="neutral", use_pca=False, flat_hand_mean=True, num_betas=10,
                     batch_size=2)
    with torch.no_grad():
        out = m(betas=torch.ones(2, 10) * 0.5, expression=torch.ones(2, 10) * 0.5)
    assert out.vertices.shape == (2, 10475, 3) and out.joints.shape == (2, 127, 3)
    assert torch.isfinite(out.vertices).all()


def test_mean_params(written):
    z = np.load(written[1])
    assert {k: z[k].shape for k in z.files} == {"pose": (144,), "shape": (10,), "cam": (3,)}
    assert all(z[k].dtype == np.float64 for k in z.files)
    cols = z["pose"].reshape(24, 3, 2)  # [R00, R01, R10, R11, R20, R21]: first two columns of each rotation
    np.testing.assert_allclose(np.einsum("jrc,jrd->jcd", cols, cols), np.tile(np.eye(2), (24, 1, 1)), atol=1e-12)
    assert cols[0, 1, 1] < -0.9  # the first rotation is about pi around x
    np.testing.assert_array_equal(make_mean_params(9)["pose"], z["pose"])
