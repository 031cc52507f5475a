"""Training objectives on the pruner's selection: a cure that works through the loss, not
the scorer (issue 13; docs/collapse-notes.md says why scorer changes alone did not carry
over to closed loop).

Keep-ratio loss, after DynamicViT (Rao et al. 2021, §3.3 "ratio loss": the squared gap
between the kept fraction and a target ratio rho, averaged over the batch). DynamicViT
keeps tokens by a per-token Gumbel decision, so its kept fraction is the mean decision.
LightVLA keeps the union of the rows' argmaxes, which has no gradient; its differentiable
stand-in here counts how many columns some row would pick, with row i's pick
p_i = softmax(S_i / tau):

    kept_soft = sum_j valid_j * max_i p_ij        (in [1, valid patches])

It is 1 exactly when every row holds the same distribution, however broad: the collapse
(rows alike, argmax on one patch) reads as 1 at any tau, where the expected union of
independent samples from broad rows would read as many (our first version measured that,
and missed the collapse). Distinct sharp rows read as the number of distinct picks. The loss
is weight * mean_b (kept_soft_b / valid_b - rho)^2; its gradient reaches the scores and,
through the scorer, the queries and patch embeddings that make the rows alike. tau should
sit near the score gaps (the user's top-1/top-2 gap is 0.04 at |S| ~ 29): far below them
the rows saturate and the gradient vanishes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policies.pruning.config import PrunerConfig


def soft_keep(scores_n: Tensor, patch_valid: Tensor, tau: float) -> Tensor:
    """(B, N, N) column-masked scores, (B, N) valid -> (B, N) max_i softmax(S_i/tau)_j:
    how surely some row picks patch j (0 for invalid patches)."""
    p = torch.softmax(scores_n.float() / tau, dim=-1)  # (B, N, N) row i's pick over j
    p = p * patch_valid.unsqueeze(-1).float()  # invalid rows pick nothing
    return p.amax(dim=1) * patch_valid.float()


def soft_union(scores_n: Tensor, patch_valid: Tensor, tau: float) -> Tensor:
    """(B, N, N) column-masked scores, (B, N) valid -> (B,) sum_j max_i softmax(S_i/tau)_j."""
    return soft_keep(scores_n, patch_valid, tau).sum(-1)


def keep_ratio_loss(cfg: PrunerConfig, scores_n: Tensor, patch_valid: Tensor) -> Tensor:
    """Scalar: weight * mean over samples of (soft kept / valid patches - target)^2."""
    n_valid = patch_valid.sum(-1).clamp_min(1).float()  # (B,)
    ratio = soft_union(scores_n, patch_valid, cfg.keep_loss_temperature) / n_valid
    has = (patch_valid.sum(-1) > 0).float()
    gap = (ratio - cfg.keep_loss_target).pow(2) * has
    return cfg.keep_loss_weight * gap.sum() / has.sum().clamp_min(1.0)
