"""The test doubles of tests/support/doubles.py honour the I/O spec (a wrong double would make the pipeline tests
pass vacuously)."""
from __future__ import annotations

import numpy as np

from support.doubles import FakeBackend, GoldenReplayBackend


def test_fake_backend_honours_spec():
    fb = FakeBackend(people=lambda i: [(1, 2, 0.9)])
    with fb:
        enc = fb.run("encoder", {"img": np.zeros((1, 3, 96, 128), np.float32),
                                 "img_mhmr": np.zeros((1, 3, 112, 112), np.float32)})
        assert enc["det_scores"][0, 1, 2] == np.float32(0.9)
        feeds = {"human_cell": np.array([10, 0, 0, 0], np.int32), "human_patch": np.zeros(4, np.int32),
                 "human_valid": np.array([1, 0, 0, 0], np.float32), "first": np.ones(1, np.float32),
                 "ttt3r": np.ones(1, np.float32)}
        dec = fb.run("decoder", feeds)
        np.testing.assert_array_equal(dec["human_tokens"][0, 0], fb.cell_tokens[10])
        assert np.all(dec["human_tokens"][0, 1:] == 0)
        assert fb.read_state("state")[0, 0, 0] == 1.0
        fb.run("decoder", feeds)
        assert fb.read_state("state")[0, 0, 0] == 2.0
        fb.reset_state()
        assert fb.read_state("state")[0, 0, 0] == 0.0
        sm = fb.run("smpl_head", {})
        assert sm["smpl_rotmat"].shape == (1, 4, 53, 3, 3)


def test_golden_backend_honours_spec(golden_dir, require_golden):
    gb = GoldenReplayBackend(golden_dir)
    with gb:
        enc = gb.run("encoder", {"img": gb.z["input/img"][:1], "img_mhmr": gb.z["input/img_mhmr"][:1]})
        np.testing.assert_array_equal(enc["det_scores"][0], gb.z["step/smpl_scores"][0, :, :, 0])
