"""Track identities across frames (host side): Sinkhorn optimal transport with a dustbin between the
remembered human tokens and the current ones, mutual nearest neighbours, and fresh ids for the rest."""
from __future__ import annotations

import torch

DUSTBIN_SCORE = -10.0
SINKHORN_ITERS = 20
MATCH_THRESHOLD = 0.2


def log_optimal_transport(scores: torch.Tensor, alpha: float = DUSTBIN_SCORE,
                          iters: int = SINKHORN_ITERS) -> torch.Tensor:
    """Log-space Sinkhorn on scores (B, m, n) augmented with a dustbin row and column of value `alpha`.

    Returns (B, m+1, n+1) log assignment scores, scaled so that probabilities sum to m + n.
    """
    b, m, n = scores.shape
    a = torch.tensor(alpha, dtype=scores.dtype, device=scores.device)
    ms = torch.tensor(float(m), dtype=scores.dtype, device=scores.device)
    ns = torch.tensor(float(n), dtype=scores.dtype, device=scores.device)
    top = torch.cat([scores, a.expand(b, m, 1)], dim=-1)  # (b, m, n+1)
    bottom = torch.cat([a.expand(b, 1, n), a.expand(b, 1, 1)], dim=-1)  # (b, 1, n+1)
    z = torch.cat([top, bottom], dim=1)  # (b, m+1, n+1)
    norm = -(ms + ns).log()
    log_mu = torch.cat([norm.expand(m), ns.log()[None] + norm]).expand(b, -1)  # (b, m+1)
    log_nu = torch.cat([norm.expand(n), ms.log()[None] + norm]).expand(b, -1)  # (b, n+1)
    u = torch.zeros_like(log_mu)
    v = torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(z + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(z + u.unsqueeze(2), dim=1)
    return z + u.unsqueeze(2) + v.unsqueeze(1) - norm


class Tracker:
    """Identity bookkeeping of `forward_recurrent_lighter`.

    Remembers the decoder tokens of the last matched humans plus every unmatched earlier track (tracks
    never expire); frames without humans leave the memory untouched; ids are never reused.
    """

    def __init__(self) -> None:
        self.tokens: torch.Tensor | None = None  # (1, m, D) remembered tokens
        self.ids: torch.Tensor | None = None  # (1, m) int64 their ids
        self.max_id = -1

    def update(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (1, n, D) dec_norm-ed human tokens of this frame (n >= 1) -> ids (n,) int64."""
        n = tokens.shape[1]
        prev_tokens, prev_ids = self.tokens, self.ids
        if prev_tokens is None or prev_ids is None:
            ids = torch.arange(n, device=tokens.device)[None]
            self.max_id = n - 1
            self.tokens, self.ids = tokens.clone(), ids.clone()
            return ids[0]
        z = log_optimal_transport(-torch.cdist(prev_tokens, tokens, p=2))
        scores = z[:, :-1, :-1]  # (1, m, n)
        best0, best1 = scores.max(2), scores.max(1)
        idx0, idx1 = best0.indices, best1.indices  # (1, m) best current per old, (1, n) best old per current
        mutual0 = torch.arange(idx0.shape[1], device=tokens.device)[None] == idx1.gather(1, idx0)
        mutual1 = torch.arange(idx1.shape[1], device=tokens.device)[None] == idx0.gather(1, idx1)
        conf0 = torch.where(mutual0, best0.values.exp(), scores.new_tensor(0))
        valid0 = mutual0 & (conf0 > MATCH_THRESHOLD)  # (1, m) old tracks matched
        valid1 = mutual1 & valid0.gather(1, idx1)  # (1, n) current humans matched
        ids = torch.full_like(idx1, -1)
        if bool(valid1.any()):
            ids[valid1] = prev_ids.gather(1, idx1[valid1][None]).flatten()
        fresh = int((~valid1).sum())
        if fresh > 0:
            ids[~valid1] = torch.arange(self.max_id + 1, self.max_id + 1 + fresh, device=tokens.device)
            self.max_id += fresh
        lost = ~valid0
        if bool(lost.any()):
            self.ids = torch.cat([ids, prev_ids[lost][None]], dim=1)
            self.tokens = torch.cat([tokens, prev_tokens[lost][None]], dim=1)
        else:
            self.tokens, self.ids = tokens.clone(), ids.clone()
        return ids[0]
