"""Score functions: (patches, task) -> S (B, N, N), S[b, i, j] = how much query row i wants
patch j. Every scorer computes in fp32 with autocast off and returns the normalised
tensors for telemetry.

Faithful scorer ("lightvla"), LightVLA `TokenPruner` in prismatic/extern/hf/
modeling_prismatic.py (docs/references.md §2):

    P = rms(patches), T = rms(task)          parameter-free RMSNorm, fp32, eps 1e-6
    Q = rms(softmax(P T^T / sqrt(D)) T)      one head over the full width, no projections
    S = Q P^T / sqrt(D)                      = sqrt(D) * cos(q_i, p_j)

Differences from LightVLA, on purpose: the patch->task attention masks prompt padding
(docs/problem.md §2.2; LightVLA attends to everything after the patches) and padded task
embeddings are zeroed first, so their values cannot reach the scores at all.

Why it collapses (docs/collapse-notes.md, reproduced by policies/pruning/synthetic.py): when all
patches share one dominant direction, the attention logits P T^T differ between patches
only through the small per-token spread, so every patch reads (almost) the same mix of
task tokens and every query row is (almost) the same vector -- worse, the values T share
their own dominant direction. Then every score row ranks the patches by their projection
on that one direction and all rows vote for the same one or two winners: the union of
row argmaxes is 1-3 of 768 patches, `prune/queries_std_mean` is ~0.002-0.009 and
`prune/argmax_top1_share_mean` is high. The variants below attack that mechanism:

- "no_query_norm": drops the second RMSNorm. It rescales each row of S by a positive
  number, so the row argmax -- hence the eval kept set -- cannot change; it only changes
  how sharp the training softmax is (kept as the control of docs/problem.md §4 (a)).
- "temperature": divides the attention logits by `temperature`, making each patch's
  attention sharper; it barely helps because the logits' spread is the problem, not
  their scale, and the values still share one direction.
- "residual": Q = rms(ctx) + a * P, a patch-aware query: row i now also prefers patches
  similar to patch i, so rows differ; `a` trades diversity against selectivity. The
  bonus grows with the width (its per-token part is ~a * spread^2 * sqrt(D)): on the
  synthetic data a = 0.2 keeps a union of ~139 at D = 2048, ~19 at 512, ~3.5 at 256.
- "lowrank": learnable queries -- the attention logits get a learnable rank-r bilinear
  term (P Wq)(T Wk)^T / sqrt(r) (Wq on patches, Wk on the task), and the query keeps the
  patch residual of "residual" so rows differ from the first step; Wq, Wk ~ N(0, 1/D).
  At init it scores like "residual" (synthetic data, D = 2048: union ~138 vs ~139).
- "centered": patches and task tokens centred over their valid tokens before the norm,
  which removes the shared direction outright (on the synthetic data every patch votes
  for itself, i.e. nothing is pruned: a diagnostic, not a cure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# per-sample GEMMs at inference: a sample's scores do not depend on its batch
from policies.invariant import batched_matmul, per_sample_matmul

RMS_EPS = 1e-6  # LightVLA's parameter-free RMSNorm epsilon


def rms_norm(x: Tensor, eps: float = RMS_EPS) -> Tensor:
    """Parameter-free RMSNorm over the last dim, in fp32 (LightVLA's three norms)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of the tokens where `mask`: (B, T, D), (B, T) -> (B, 1, D)."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)


@dataclass
class Scores:
    scores: Tensor  # (B, N, N) fp32, unmasked; S[b, i, j]: row i (query of patch i), col j
    patches: Tensor  # (B, N, D) fp32, normalised patches P (telemetry)
    task: Tensor  # (B, L, D) fp32, normalised task tokens T, padded slots zero (telemetry)
    # (B, N, D) fp32, the queries before any residual: rms(attn T) (LightVLA's), or attn T
    # without the query norm. What `prune/queries_std_mean` reads; the score uses
    # Q = queries + alpha * P where a residual is on (S = Q P^T / sqrt(D)).
    queries: Tensor


class LowRankLogits(nn.Module):
    """Learnable queries: attention logits += (P Wq)(T Wk)^T / sqrt(r).

    Wq (D, r) projects the patches, Wk (D, r) the task tokens. Both start as N(0, 1/D)
    (so the extra logits are O(1) and differ per patch) and receive gradients through the
    straight-through soft path of the selection (S -> Q -> attention -> Wq, Wk).
    """

    def __init__(self, width: int, rank: int):
        super().__init__()
        if rank > width:
            raise ValueError(f"pruning.lowrank_rank must be <= width {width}, got {rank}")
        self.width, self.rank = width, rank
        self.wq = nn.Parameter(torch.empty(width, rank))
        self.wk = nn.Parameter(torch.empty(width, rank))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        std = self.width**-0.5
        with torch.no_grad():
            self.wq.normal_(0.0, std, generator=generator)
            self.wk.normal_(0.0, std, generator=generator)

    def forward(self, P: Tensor, T: Tensor) -> Tensor:
        pq = per_sample_matmul(P, self.wq.float())  # (B, N, r)
        tk = per_sample_matmul(T, self.wk.float())  # (B, L, r)
        return batched_matmul(pq, tk.transpose(1, 2)) / math.sqrt(self.rank)  # (B, N, L)


class Scorer(nn.Module):
    """The LightVLA score family; parameter-free unless given learnable `lowrank` logits.

    query_norm: RMSNorm on the attention output (LightVLA: True).
    temperature: divides the patch->task attention logits (LightVLA: 1).
    alpha: weight of the patch residual in the query, Q = norm(ctx) + alpha * P (LightVLA: 0).
    center: centre patches / task over their valid tokens before the norm (LightVLA: no).
    lowrank: learnable addition to the attention logits (LightVLA: none).
    dtype: precision of the norms' outputs, the matmuls and the scores. float32 (default,
    autocast off); bfloat16 is LightVLA's own under bf16 autocast: its rms_norm casts back
    to the input dtype, so at |S| ~ 29 the score step is 0.125, three times the user's
    top-1/top-2 gap of 0.04 (docs/problem.md), and tied rows all pick the lowest index.
    """

    def __init__(
        self,
        width: int,
        *,
        query_norm: bool = True,
        temperature: float = 1.0,
        alpha: float = 0.0,
        center: bool = False,
        lowrank: LowRankLogits | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.width = width
        self.dtype = dtype
        self.query_norm = query_norm
        self.temperature = temperature
        self.alpha = alpha
        self.center = center
        self.lowrank = lowrank

    def forward(
        self, patches: Tensor, patch_valid: Tensor, task: Tensor, task_mask: Tensor
    ) -> Scores:
        with torch.autocast(device_type=patches.device.type, enabled=False):
            return self._forward(patches, patch_valid, task, task_mask)

    def _forward(
        self, patches: Tensor, patch_valid: Tensor, task: Tensor, task_mask: Tensor
    ) -> Scores:
        D = patches.shape[-1]
        p = patches.float()  # (B, N, D)
        # Padded prompt slots are zeroed before anything reads them (docs/problem.md §2.2).
        t = torch.where(task_mask.unsqueeze(-1), task.float(), 0.0)  # (B, L, D)
        if self.center:
            p = p - masked_mean(p, patch_valid)
            t = torch.where(task_mask.unsqueeze(-1), t - masked_mean(t, task_mask), 0.0)
        dt = self.dtype
        P = rms_norm(p).to(dt)  # (B, N, D)
        T = rms_norm(t).to(dt)  # (B, L, D); rms(0) = 0 in padded slots

        # Patch -> task cross-attention, key-padding mask from task_mask. Masked logits get
        # the most negative float (not -inf): exp underflows to exactly 0, and a prompt
        # with no valid token gives a zero context instead of NaN.
        logits = batched_matmul(P, T.transpose(1, 2)) / math.sqrt(D)  # (B, N, L)
        if self.lowrank is not None:
            logits = logits + self.lowrank(P.float(), T.float()).to(dt)
        logits = logits / self.temperature
        logits = logits.masked_fill(~task_mask.unsqueeze(1), torch.finfo(logits.dtype).min)
        attn = torch.softmax(logits.float(), dim=-1).to(dt)  # (B, N, L); autocast's fp32
        ctx = batched_matmul(attn, T)  # (B, N, D); padded rows of T are zero
        queries = rms_norm(ctx).to(dt) if self.query_norm else ctx  # (B, N, D)
        # The residual's alpha * P has the patches' own spread: telemetry reads `queries`,
        # before it, so a residual cannot pass for diverse cross-attention queries.
        Q = queries + self.alpha * P if self.alpha else queries
        S = batched_matmul(Q, P.transpose(1, 2)) / math.sqrt(D)  # (B, N, N)
        # bf16 scores stay bf16-rounded in fp32: equal rows stay tied for the argmax.
        f = torch.float32
        return Scores(scores=S.to(f), patches=P.to(f), task=T.to(f), queries=queries.to(f))
