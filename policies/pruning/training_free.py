"""Training-free selectors: which valid patches to keep, without any fine-tuning.

Baselines for the kept-tokens-against-success curve (`prunepi curve`, services/curve/):
does a scorer beat chance, and does it beat plain spatial coverage?

- scorer "random": every valid patch gets a pseudo-random priority and the budget keeps
  the top k. The priority comes from a generator seeded by `pruning.random_seed` and a hash
  of the sample's own valid patch and prompt embeddings, never from a global RNG drawn in
  arrival order: the same observation keeps the same tokens in any batch, on any worker, in
  any rollout order (π0.5's embeddings are bitwise batch-invariant on CPU; a GPU whose
  batched kernels round differently gives another, equally random, draw).
- scorer "grid": spatial subsampling. A sample's kept count k (its budget) is split evenly
  over its valid cameras and each camera keeps the first patches of one fixed order
  (`grid_order`): at every count each of the camera's patch rows and patch columns holds
  the same number of kept patches, give or take one, and the kept patches spread out, so no
  budget drops a stripe (a whole row, a whole column, or one column in many rows).

Both are score matrices whose rows all equal one per-patch priority s, S[b, i, j] =
s[b, j], so selection.py is unchanged: every row votes for the top patch and the
importance order after it is the column max, i.e. s; every budget keeps the top k by s.
An "adaptive" budget would keep just the one patch every row votes for, so both need
keep_tokens or keep_ratio (PrunerConfig.validate). Masked cameras are never kept
(selection.mask_columns). The LightVLA selectors need no code here: "lightvla" is the
parameter-free scorer under a budget, "lightvla-adaptive" its own union of row argmaxes
(docs/references.md §2); `selector_config` names all four for the curve.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import Tensor, nn

from policies.pruning.config import PrunerConfig
from policies.pruning.scorers import Scores, rms_norm
from policies.pruning.selection import budget_counts

SELECTORS = ("random", "lightvla", "lightvla-adaptive", "grid")
# Hash arithmetic modulo the Mersenne prime 2^31 - 1: every product of two residues stays
# below 2^62 and a sum of 2^21 of them (768 x 2048 embedding values) below 2^63 (no
# int64 overflow); 48271 is the MINSTD multiplier (Park & Miller 1988).
MODULUS = 2_147_483_647
MIX = 48_271


def selector_config(selector: str, keep_ratio: float | None, base: PrunerConfig) -> PrunerConfig:
    """The eval pruner of a training-free `selector` keeping `keep_ratio` of the valid
    patches (None for "lightvla-adaptive", which keeps its own count); the rest of `base`
    (position ids, prompt trimming, buckets, seed) is kept."""
    if selector not in SELECTORS:
        raise ValueError(f"selector must be one of {SELECTORS}, got {selector!r}")
    if (selector == "lightvla-adaptive") != (keep_ratio is None):
        raise ValueError(
            f"keep_ratio must be None exactly for 'lightvla-adaptive', got keep_ratio="
            f"{keep_ratio!r} for selector {selector!r}"
        )
    scorer = "lightvla" if selector.startswith("lightvla") else selector
    budget = "adaptive" if keep_ratio is None else "keep_ratio"
    cfg = dataclasses.replace(
        base,
        enabled=True,
        scorer=scorer,
        budget=budget,
        keep_ratio=base.keep_ratio if keep_ratio is None else keep_ratio,
        min_keep=1,  # a budget of 2 % keeps 2 % (at least one patch), not a floor of base's
    )
    cfg.validate()
    return cfg


def sample_hash(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D) float, (B, T) bool -> (B,) long in [0, MODULUS): the exact float bits of
    the masked tokens, each position weighted differently (on x's device, no host copy)."""
    B = x.shape[0]
    x = torch.where(mask.unsqueeze(-1), x.float(), 0.0).contiguous()  # (B, T, D)
    bits = x.view(torch.int32).long().reshape(B, -1) % MODULUS  # (B, T*D) residues
    pos = torch.arange(bits.shape[1], device=x.device)
    weight = (pos * MIX + 1) % MODULUS  # (T*D,)
    return ((bits * weight) % MODULUS).sum(1) % MODULUS


def random_priority(
    patches: Tensor, patch_valid: Tensor, task: Tensor, task_mask: Tensor, seed: int
) -> Tensor:
    """(B, N) float in [0, 1): one generator per sample, seeded by `seed` and its content."""
    hp = sample_hash(patches, patch_valid).tolist()
    ht = sample_hash(task, task_mask).tolist()
    N = patches.shape[1]
    rows = []
    for a, b in zip(hp, ht):
        g = torch.Generator().manual_seed(((seed * MODULUS + a) * MODULUS + b) % 2**63)
        rows.append(torch.rand(N, generator=g))
    return torch.stack(rows).to(patches.device) if rows else patches.new_zeros(0, N)


@functools.cache
def grid_order(side: int) -> tuple[int, ...]:
    """Every patch of a side x side grid, row-major index, in the order "grid" keeps them:
    any first k hold floor(k / side) or ceil(k / side) patches of every row AND of every
    column, and spread out.

    Why: rows of evenly spaced points (the first "grid") put the same columns in every row,
    so at 58 of 64 both cameras lost one vertical stripe in every frame. Here the order runs
    in `side` rounds, each a permutation (one patch per row and per column), which keeps both
    axes balanced at every count, and the complement too (the dropped patches of a dense
    budget are balanced the same way). Inside a round the next patch is the farthest from
    every patch taken so far (farthest-point sampling; ties: nearer the centre, then lower
    index), among those that leave the round completable into a permutation (a perfect
    matching of its remaining rows and columns over free patches; after a whole round the
    free patches form a regular bipartite graph, which always has one).
    """
    c = (side - 1) / 2
    centre = [(i // side - c) ** 2 + (i % side - c) ** 2 for i in range(side * side)]
    far = [math.inf] * (side * side)  # squared distance to the nearest patch taken
    free = [[True] * side for _ in range(side)]
    order: list[int] = []
    for _ in range(side):
        rows, cols = set(range(side)), set(range(side))
        for _ in range(side):
            i = _next_in_round(side, rows, cols, free, far, centre)
            y, x = divmod(i, side)
            order.append(i)
            rows.discard(y), cols.discard(x)
            far = [min(f, (j // side - y) ** 2 + (j % side - x) ** 2) for j, f in enumerate(far)]
    return tuple(order)


def _next_in_round(side, rows, cols, free, far, centre) -> int:
    """The farthest free patch in a row and column unused this round whose taking leaves
    the round's other rows and columns a perfect matching (`grid_order`)."""
    cand = [y * side + x for y in rows for x in cols if free[y][x]]
    for i in sorted(cand, key=lambda j: (-far[j], centre[j], j)):
        y, x = divmod(i, side)
        free[y][x] = False
        if _perfect_matching(sorted(rows - {y}), sorted(cols - {x}), free):
            return i
        free[y][x] = True
    raise RuntimeError(f"no patch completes the round on a {side}x{side} grid")  # unreachable


def _perfect_matching(rows: list[int], cols: list[int], free: list[list[bool]]) -> bool:
    """Whether every row can take a distinct column over free cells (augmenting paths)."""
    owner: dict[int, int] = {}

    def place(r: int, seen: set[int]) -> bool:
        for c in cols:
            if free[r][c] and c not in seen:
                seen.add(c)
                if c not in owner or place(owner[c], seen):
                    owner[c] = r
                    return True
        return False

    return all(place(r, set()) for r in rows)


def grid_points(side: int, k: int) -> tuple[int, ...]:
    """Row-major indices (sorted) of the k patches "grid" keeps of a side x side grid."""
    if not 0 <= k <= side * side:
        raise ValueError(f"k must be in [0, {side * side}] for a {side}x{side} grid, got {k}")
    return tuple(sorted(grid_order(side)[:k]))


def grid_priority(patch_valid: Tensor, counts: Tensor, patches_per_camera: int) -> Tensor:
    """(B, N) float: 1 on each valid camera's grid points, 0 elsewhere. counts (B,) is the
    kept count per sample; cameras are wholly valid or masked (model.embed_images)."""
    B, N = patch_valid.shape
    P = patches_per_camera
    side = math.isqrt(P)
    cams = patch_valid.view(B, N // P, P).any(-1).tolist()  # (B, C)
    out = torch.zeros(B, N)
    for b, (k, valid) in enumerate(zip(counts.tolist(), cams)):
        on = [c for c, v in enumerate(valid) if v]
        for i, c in enumerate(on):
            share = k // len(on) + (i < k % len(on))
            idx = [c * P + j for j in grid_points(side, min(share, P))]
            out[b, idx] = 1.0
    return out.to(patch_valid.device)


class PriorityScorer(nn.Module):
    """The "random" and "grid" scorers: S[b, i, j] = priority[b, j] (module docstring)."""

    def __init__(self, cfg: PrunerConfig, width: int, patches_per_camera: int | None = None):
        super().__init__()
        if cfg.scorer not in ("random", "grid"):
            raise ValueError(f"pruning.scorer must be 'random' or 'grid', got {cfg.scorer!r}")
        P = patches_per_camera
        if P is not None and (P < 1 or math.isqrt(P) ** 2 != P):
            raise ValueError(f"patches_per_camera must be a square number >= 1, got {P}")
        self.cfg, self.width, self.patches_per_camera = cfg, width, P

    def forward(
        self, patches: Tensor, patch_valid: Tensor, task: Tensor, task_mask: Tensor
    ) -> Scores:
        B, N, _ = patches.shape
        if self.cfg.scorer == "random":
            s = random_priority(patches, patch_valid, task, task_mask, self.cfg.random_seed)
        else:
            s = grid_priority(patch_valid, self._counts(patch_valid), self._layout(N))
        P = rms_norm(patches)  # (B, N, D)
        T = rms_norm(torch.where(task_mask.unsqueeze(-1), task.float(), 0.0))  # (B, L, D)
        # No queries exist; a row's "query" is its own patch, so the telemetry's
        # prune/queries_std_mean reads the patches' spread.
        S = s.float().unsqueeze(1).expand(B, N, N)  # (B, N, N), every row the same
        return Scores(scores=S, patches=P, task=T, queries=P)

    def _counts(self, patch_valid: Tensor) -> Tensor:
        n_valid = patch_valid.sum(1)  # (B,)
        return budget_counts(self.cfg, n_valid, n_valid)  # union unused: never "adaptive"

    def _layout(self, n: int) -> int:
        P = self.patches_per_camera
        if P is None or n % P:
            raise ValueError(
                f"scorer 'grid' needs the camera layout: patches_per_camera must divide the "
                f"{n} patch slots (Pi05Model passes vision.num_patches), got {P}"
            )
        return P
