"""Tracking: Sinkhorn matching and id assignment reproduce the reference's track ids."""
from __future__ import annotations

import numpy as np
import pytest

from human3r_edge.runtime.tracking import Tracker, log_optimal_transport, match


def golden_human_tokens(z) -> list[np.ndarray]:
    """Per step, the last n_humans final decoder tokens (the human tokens) from the golden."""
    lens = z["inter/dec_last_tokens_len"]
    n = z["step/n_humans"]
    flat = z["inter/dec_last_tokens_concat"]
    out, start = [], 0
    for length, k in zip(lens, n):
        step = flat[start:start + length]
        out.append(step[length - k:])
        start += length
    assert start == flat.shape[0]
    return out


def test_golden_track_ids(golden_dir, require_golden):
    z = np.load(golden_dir / "golden.npz")
    tracker = Tracker()
    ids = [tracker.update(tok) for tok in golden_human_tokens(z)]
    got = np.concatenate(ids)
    np.testing.assert_array_equal(got, z["step/smpl_id"])
    assert got.dtype == np.int64


def torch_log_optimal_transport(scores, alpha, iters):
    """Independent torch transcription of the reference formula (log-space Sinkhorn with dustbins)."""
    import torch

    s = torch.as_tensor(scores, dtype=torch.float64)[None]
    b, m, n = s.shape
    a = torch.tensor(alpha, dtype=torch.float64)
    top = torch.cat([s, a.expand(b, m, 1)], -1)
    bottom = torch.cat([a.expand(b, 1, n), a.expand(b, 1, 1)], -1)
    z = torch.cat([top, bottom], 1)
    norm = -torch.log(torch.tensor(float(m + n), dtype=torch.float64))
    mu = torch.cat([norm.expand(m), torch.log(torch.tensor(float(n), dtype=torch.float64))[None] + norm])[None]
    nu = torch.cat([norm.expand(n), torch.log(torch.tensor(float(m), dtype=torch.float64))[None] + norm])[None]
    u, v = torch.zeros_like(mu), torch.zeros_like(nu)
    for _ in range(iters):
        u = mu - torch.logsumexp(z + v.unsqueeze(1), dim=2)
        v = nu - torch.logsumexp(z + u.unsqueeze(2), dim=1)
    return (z + u.unsqueeze(2) + v.unsqueeze(1) - norm)[0].numpy()


@pytest.mark.parametrize("m,n", [(1, 1), (2, 3), (5, 2), (7, 7)])
def test_sinkhorn_matches_torch_transcription(m, n):
    rng = np.random.default_rng(m * 10 + n)
    s = -rng.uniform(0, 5, size=(m, n))
    got = log_optimal_transport(s, -10.0, 20)
    ref = torch_log_optimal_transport(s, -10.0, 20)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_identical_tokens_keep_ids_and_new_person_gets_next_id():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=16).astype(np.float32) * 5 for _ in range(3))
    t = Tracker()
    np.testing.assert_array_equal(t.update(np.stack([a, b])), [0, 1])
    np.testing.assert_array_equal(t.update(np.stack([b, a])), [1, 0])
    np.testing.assert_array_equal(t.update(np.stack([c, b])), [2, 1])  # c is new; a is remembered
    assert set(t.ids.tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(t.update(np.stack([a])), [0])  # a comes back after an absence


def test_frame_without_people_keeps_memory():
    rng = np.random.default_rng(1)
    toks = rng.normal(size=(2, 8)).astype(np.float32) * 4
    t = Tracker()
    t.update(toks)
    assert t.update(np.zeros((0, 8), np.float32)).shape == (0,)
    np.testing.assert_array_equal(t.tokens, toks)
    np.testing.assert_array_equal(t.update(toks[::-1]), [1, 0])


def test_reset_forgets_tokens_but_never_reuses_ids():
    rng = np.random.default_rng(2)
    toks = rng.normal(size=(2, 8)).astype(np.float32) * 4
    t = Tracker()
    t.update(toks)
    t.reset()
    np.testing.assert_array_equal(t.update(toks), [2, 3])


def test_match_unmatched_far_tokens():
    a = np.zeros((1, 4), np.float32)
    b = np.full((1, 4), 100.0, np.float32)  # distance 200 >> dustbin: no match
    p, c = match(a, b)
    assert p.tolist() == [-1] and c.tolist() == [-1]


def test_bad_tokens_raise():
    from human3r_edge.errors import Human3RError

    t = Tracker()
    with pytest.raises(Human3RError, match="non-finite"):
        t.update(np.array([[np.nan, 0.0]], np.float32))
    with pytest.raises(Human3RError, match=r"\(n, D\)"):
        t.update(np.zeros(3, np.float32))


def test_max_remembered_forgets_the_least_recently_seen():
    rng = np.random.default_rng(3)
    people = rng.normal(size=(6, 8)).astype(np.float32) * 50
    t = Tracker(max_remembered=3)
    for i in range(6):  # one new person per frame
        assert t.update(people[i:i + 1]).tolist() == [i]
        assert t.tokens.shape[0] == min(i + 1, 3)
    assert sorted(t.ids.tolist()) == [3, 4, 5]
    assert t.update(people[5:6]).tolist() == [5]  # still remembered
    assert t.update(people[0:1]).tolist() == [6]  # forgotten: a new id
    unbounded = Tracker()
    for i in range(6):
        unbounded.update(people[i:i + 1])
    assert unbounded.update(people[0:1]).tolist() == [0]  # the reference remembers everyone


def test_cap_does_not_change_golden_ids(golden_dir, require_golden):
    """A cap at the golden's number of distinct people forgets no one: ids identical to the unbounded reference.
    A smaller cap keeps the memory bounded (the reference's grows with every new id)."""
    z = np.load(golden_dir / "golden.npz")
    people = len(set(z["step/smpl_id"].tolist()))
    t = Tracker(max_remembered=max(people, 1))
    got = np.concatenate([t.update(tok) for tok in golden_human_tokens(z)])
    np.testing.assert_array_equal(got, z["step/smpl_id"])
    small = max(1, people // 2)
    t = Tracker(max_remembered=small)
    for tok in golden_human_tokens(z):
        t.update(tok)
        assert t.tokens is None or t.tokens.shape[0] <= small
