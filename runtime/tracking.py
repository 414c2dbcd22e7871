"""Track identities across frames: Sinkhorn matching of decoder human tokens, as the reference streamer does."""
from __future__ import annotations

import numpy as np

from human3r_edge.errors import Human3RError, msg

DUSTBIN_ALPHA = -10.0  # log-score of matching a person to "nobody"
SINKHORN_ITERS = 20
MATCH_THRESHOLD = 0.2  # exp(score) a mutual match must exceed


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return np.log(np.sum(np.exp(x - peak), axis=axis)) + np.squeeze(peak, axis=axis)


def log_optimal_transport(scores: np.ndarray, alpha: float = DUSTBIN_ALPHA, iters: int = SINKHORN_ITERS
                          ) -> np.ndarray:
    """Entropic optimal transport in log space with one dustbin row and column.

    scores: (m, n) similarity (here -distance). Returns (m+1, n+1) float64 log-assignment scores, scaled so that
    exp() of an entry is a matching probability (the reference's `Z - norm`).
    """
    s = np.asarray(scores, dtype=np.float64)
    m, n = s.shape
    z = np.empty((m + 1, n + 1), np.float64)  # couplings with the dustbin row/column
    z[:m, :n] = s
    z[:m, n] = alpha
    z[m, :] = alpha
    norm = -np.log(m + n)
    log_mu = np.full(m + 1, norm)
    log_mu[m] = np.log(n) + norm
    log_nu = np.full(n + 1, norm)
    log_nu[n] = np.log(m) + norm
    u = np.zeros(m + 1)
    v = np.zeros(n + 1)
    for _ in range(iters):
        u = log_mu - _logsumexp(z + v[None, :], axis=1)
        v = log_nu - _logsumexp(z + u[:, None], axis=0)
    return z + u[:, None] + v[None, :] - norm


def pairwise_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (m, n) between rows of a (m, D) and b (n, D), in float64."""
    d = np.asarray(a, np.float64)[:, None, :] - np.asarray(b, np.float64)[None, :, :]  # (m, n, D)
    return np.sqrt(np.sum(d * d, axis=-1))


def match(prev_tokens: np.ndarray, tokens: np.ndarray, threshold: float = MATCH_THRESHOLD
          ) -> tuple[np.ndarray, np.ndarray]:
    """Mutual-nearest-neighbour Sinkhorn matching.

    prev_tokens (m, D), tokens (n, D). Returns (prev_match (m,) int64, cur_match (n,) int64): for each remembered
    person the index of its current match, and for each current person the index of its remembered match; -1 where
    there is none.
    """
    z = log_optimal_transport(-pairwise_distance(prev_tokens, tokens))
    scores = z[:-1, :-1]  # (m, n)
    best0 = np.argmax(scores, axis=1)  # (m,) best current for each remembered
    best1 = np.argmax(scores, axis=0)  # (n,) best remembered for each current
    mutual0 = best1[best0] == np.arange(best0.size)
    mutual1 = best0[best1] == np.arange(best1.size)
    score0 = np.where(mutual0, np.exp(scores[np.arange(best0.size), best0]), 0.0)
    valid0 = mutual0 & (score0 > threshold)
    valid1 = mutual1 & valid0[best1]
    return np.where(valid0, best0, -1).astype(np.int64), np.where(valid1, best1, -1).astype(np.int64)


class Tracker:
    """Assigns a persistent id to every detected person from its decoder token.

    Mirrors the reference: the remembered set is the current people plus every earlier person left unmatched;
    a frame without people leaves the memory untouched; new people get the next unused ids in detection order.
    Ids are never reused within one Tracker, even across `reset()`.

    The reference never forgets anyone, so its memory and matching cost grow with every new id. `max_remembered`
    bounds that: beyond it, the people unseen for the longest are forgotten (a returning one gets a new id).
    None keeps the reference's unbounded behaviour; results are identical while fewer people are remembered.
    """

    def __init__(self, threshold: float = MATCH_THRESHOLD, max_remembered: int | None = None) -> None:
        if max_remembered is not None and max_remembered < 1:
            raise Human3RError(msg("tracker", "max_remembered must be >= 1 or None", max_remembered))
        self.threshold = threshold
        self.max_remembered = max_remembered
        self.next_id = 0
        self.frame = 0  # update() calls with people, for the least-recently-seen order
        self.tokens: np.ndarray | None = None  # (M, D) float32 remembered tokens
        self.ids: np.ndarray | None = None  # (M,) int64 their ids
        self.last_seen: np.ndarray | None = None  # (M,) int64 frame each was last matched or added

    def reset(self) -> None:
        """Forget every remembered person (a new scene); ids keep counting up."""
        self.tokens = None
        self.ids = None
        self.last_seen = None

    def update(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (n, D) float32 of this frame's people, in detection order -> ids (n,) int64 (a new array)."""
        tokens = np.asarray(tokens)
        if tokens.ndim != 2:
            raise Human3RError(msg("tracker", "tokens must be (n, D)", tokens.shape))
        n = tokens.shape[0]
        if n == 0:
            return np.zeros(0, np.int64)
        if not np.all(np.isfinite(tokens)):
            raise Human3RError(msg("tracker", "non-finite human tokens", hint="the decoder produced NaN/inf"))
        self.frame += 1
        if self.tokens is None or self.ids is None or self.last_seen is None:
            ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
            self.next_id += n
            self._remember(tokens.copy(), ids.copy(), np.full(n, self.frame, np.int64))
            return ids
        if self.tokens.shape[1] != tokens.shape[1]:
            raise Human3RError(msg("tracker", "token width changed", tokens.shape[1], self.tokens.shape[1]))
        prev_match, cur_match = match(self.tokens, tokens, self.threshold)
        ids = np.full(n, -1, np.int64)
        matched = cur_match >= 0
        ids[matched] = self.ids[cur_match[matched]]
        fresh = int(np.count_nonzero(~matched))
        ids[~matched] = np.arange(self.next_id, self.next_id + fresh, dtype=np.int64)
        self.next_id += fresh
        lost = prev_match < 0
        self._remember(np.concatenate([tokens, self.tokens[lost]], axis=0),
                       np.concatenate([ids, self.ids[lost]], axis=0),
                       np.concatenate([np.full(n, self.frame, np.int64), self.last_seen[lost]]))
        return ids

    def _remember(self, tokens: np.ndarray, ids: np.ndarray, last_seen: np.ndarray) -> None:
        cap = self.max_remembered
        if cap is not None and tokens.shape[0] > cap:
            # keep the `cap` most recently seen, in their current order (stable: older rows go first)
            order = np.argsort(-last_seen, kind="stable")[:cap]
            keep = np.sort(order)
            tokens, ids, last_seen = tokens[keep], ids[keep], last_seen[keep]
        self.tokens, self.ids, self.last_seen = tokens, ids, last_seen
