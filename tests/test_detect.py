"""Detection on the host: NMS, threshold, head locations, slot feeds and the more-than-K policy."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from human3r_edge.runtime.detect import Detector, head_locations, keep_top, nms3x3, threshold_cells
from human3r_edge.errors import Human3RError


@pytest.fixture
def z(golden_dir, require_golden):
    return np.load(golden_dir / "golden.npz")


def offsets_for(loc: np.ndarray, h: np.ndarray, w: np.ndarray, g: int) -> np.ndarray:
    """An offset map that makes the detected cells produce the golden head locations."""
    off = np.zeros((g, g, 2), np.float32)
    off[h, w] = loc / np.float32(14) - np.float32(0.5) - np.stack([w, h], -1).astype(np.float32)
    return off


def test_nms_idempotent_on_golden(z):
    s = z["step/smpl_scores"][..., 0]
    for frame in s:
        np.testing.assert_array_equal(nms3x3(frame), frame)


def test_threshold_counts_and_order(z):
    s = z["step/smpl_scores"][..., 0]
    counts = []
    for frame in s:
        h, w = threshold_cells(frame, float(z["meta/detection_threshold"]))
        counts.append(len(h))
        flat = h * frame.shape[1] + w
        assert np.all(np.diff(flat) > 0), "row-major order"
    np.testing.assert_array_equal(counts, z["step/n_humans"])
    np.testing.assert_array_equal(np.repeat(np.arange(len(s)), counts), z["step/human_step_index"])


def test_detector_reproduces_head_patches(z):
    s = z["step/smpl_scores"][..., 0]
    _, _, hh, ww = z["input/img"].shape
    r = int(z["meta/mhmr_img_res"])
    g = s.shape[1]
    k = max(4, int(z["step/n_humans"].max()))  # enough slots for the most crowded step
    det = Detector((hh, ww), r, g, slots=k)
    loc_all, pos_all, n_all = z["step/smpl_loc"], z["inter/smpl_pos"], z["step/n_humans"]
    start = 0
    for i, frame in enumerate(s):
        n = int(n_all[i])
        h, w = threshold_cells(frame)
        loc = loc_all[start:start + n]
        d = det.detect(frame[None], offsets_for(loc, h, w, g)[None])
        assert d.count == n and d.dropped == 0
        np.testing.assert_allclose(d.loc_square, loc, rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(d.patch_yx, pos_all[start:start + n])
        slots = det.slots_for(d)
        np.testing.assert_array_equal(slots.human_cell[:n], h * g + w)
        np.testing.assert_array_equal(slots.human_patch[:n], pos_all[start:start + n, 0] * (ww // 16)
                                      + pos_all[start:start + n, 1])
        np.testing.assert_array_equal(slots.human_valid, (np.arange(k) < n).astype(np.float32))
        assert slots.human_cell.dtype == np.int32 and slots.human_patch.dtype == np.int32
        assert np.all(slots.human_cell[n:] == 0) and np.all(slots.human_patch[n:] == 0)
        start += n


def test_nms_matches_torch_maxpool():
    import torch

    rng = np.random.default_rng(0)
    s = rng.uniform(size=(9, 9)).astype(np.float32)
    s[2, 2] = s[2, 3] = 0.95  # an exact tie: both survive (equality)
    t = torch.from_numpy(s)[None, None]
    hmax = torch.nn.functional.max_pool2d(t, 3, stride=1, padding=1)
    ref = (t * (hmax == t).float())[0, 0].numpy()
    np.testing.assert_array_equal(nms3x3(s), ref)
    assert nms3x3(s)[2, 2] == nms3x3(s)[2, 3] == np.float32(0.95)


def test_threshold_is_inclusive_in_float32():
    s = np.zeros((3, 3), np.float32)
    s[1, 1] = np.float32(0.3)
    assert len(threshold_cells(s)[0]) == 1
    s[1, 1] = np.nextafter(np.float32(0.3), np.float32(0))
    assert len(threshold_cells(s)[0]) == 0


def test_head_location_formula():
    loc = head_locations(np.array([2]), np.array([5]), np.array([[0.25, -1.0]]))
    np.testing.assert_allclose(loc, [[(5 + 0.5 + 0.25) * 14, (2 + 0.5 - 1.0) * 14]])


def many_peaks(g: int, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    s = np.zeros((g, g), np.float32)
    cells = [(y, x) for y in range(0, g, 2) for x in range(0, g, 2)][:n]
    vals = rng.permutation(np.linspace(0.4, 0.9, len(cells))).astype(np.float32)
    for (y, x), v in zip(cells, vals):
        s[y, x] = v
    return s, vals


def test_more_than_k_keeps_top_scores_in_row_major_order_and_warns_once():
    rng = np.random.default_rng(3)
    g = 8
    s, _ = many_peaks(g, 10, rng)
    det = Detector((96, 128), 112, g, slots=4)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        d = det.detect(s, np.zeros((g, g, 2), np.float32))
        det.detect(s, np.zeros((g, g, 2), np.float32))
    assert len([w for w in rec if "more people" in str(w.message)]) == 1
    assert d.count == 4 and d.dropped == 6
    all_scores = s[s >= 0.3]
    np.testing.assert_array_equal(np.sort(d.scores), np.sort(all_scores)[-4:])
    flat = d.cells_hw[:, 0] * g + d.cells_hw[:, 1]
    assert np.all(np.diff(flat) > 0)


def test_max_people_cap_and_range():
    rng = np.random.default_rng(4)
    s, _ = many_peaks(8, 5, rng)
    with pytest.warns(UserWarning, match="more people than the 2 kept"):
        d = Detector((96, 128), 112, 8, slots=4, max_people=2).detect(s, np.zeros((8, 8, 2), np.float32))
    assert d.count == 2
    with pytest.raises(Human3RError, match="max_people"):
        Detector((96, 128), 112, 8, slots=4, max_people=5)


def test_keep_top_ties_prefer_lower_index():
    np.testing.assert_array_equal(keep_top(np.array([0.5, 0.7, 0.5, 0.7], np.float32), 3), [0, 1, 3])


def test_no_detections():
    det = Detector((96, 128), 112, 8, slots=3)
    d = det.detect(np.zeros((8, 8), np.float32), np.zeros((8, 8, 2), np.float32))
    assert d.count == 0
    assert det.slots_for(d).human_valid.sum() == 0
