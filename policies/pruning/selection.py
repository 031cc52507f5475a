"""Turning a score matrix into a kept set: votes, importance, budgets, slots, gathering.

Pure tensor code, per sample (nothing mixes samples except the padded length K).

Vocabulary: row i = the query of patch i; column j = patch j. A row VOTES for its argmax
column. Rows of invalid patches (masked camera) do not vote, invalid columns are never
chosen (their scores are filled with the most negative float). Ties at the max go to the
lowest index (torch.argmax returns the first maximum; the sorts below are stable).

Importance (used by the budgets and by `min_keep`) orders the valid patches by
  1. vote count (descending), so the union of row argmaxes always ranks first, then
  2. column max of the score over valid rows (descending): how much the patch's best
     "fan" wants it, then
  3. index (ascending).
With this order the adaptive kept set (the union) is exactly the top-|union| patches, so
every budget is "the top-k patches by importance" with its own k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from policies.pruning.budgets import BUDGETS
from policies.pruning.config import PrunerConfig

NEG = torch.finfo(torch.float32).min  # fill for invalid columns (finite: no NaN anywhere)


def mask_columns(scores: Tensor, patch_valid: Tensor) -> Tensor:
    """(B, N, N) scores with invalid patch columns set to NEG."""
    return scores.masked_fill(~patch_valid.unsqueeze(1), NEG)


def count_votes(argmax: Tensor, row_valid: Tensor) -> Tensor:
    """(B, N) argmax per row -> (B, N) long number of valid rows voting for each patch."""
    votes = torch.zeros_like(argmax)
    return votes.scatter_add_(1, argmax, row_valid.long())


def importance_rank(scores_m: Tensor, votes: Tensor, patch_valid: Tensor) -> Tensor:
    """(B, N) long rank of each patch by importance (0 = most important; module docstring).

    scores_m: (B, N, N) column-masked scores. Invalid patches rank last.
    """
    B, N = votes.shape
    rows = scores_m.masked_fill(~patch_valid.unsqueeze(-1), float("-inf"))  # rows don't vote
    colmax = rows.amax(dim=1).masked_fill(~patch_valid, float("-inf"))  # (B, N)
    votes = votes.masked_fill(~patch_valid, -1)
    # Two stable sorts = lexicographic (votes desc, colmax desc, index asc).
    order = torch.sort(colmax, dim=1, descending=True, stable=True).indices  # (B, N)
    by_votes = torch.sort(votes.gather(1, order), dim=1, descending=True, stable=True).indices
    order = order.gather(1, by_votes)  # (B, N) patches, most important first
    ranks = torch.arange(N, device=votes.device).expand(B, N)
    return torch.empty_like(order).scatter_(1, order, ranks)


def budget_counts(cfg: PrunerConfig, n_valid: Tensor, union: Tensor) -> Tensor:
    """(B,) long number of patches to keep per sample, in [0, n_valid]."""
    if cfg.budget not in BUDGETS:
        raise ValueError(f"pruning.budget must be one of {tuple(BUDGETS)}, got {cfg.budget!r}")
    k = BUDGETS[cfg.budget].count(cfg, n_valid, union)
    return torch.minimum(k.clamp_min(cfg.min_keep), n_valid)


@dataclass
class Selection:
    argmax: Tensor  # (B, N) long, each row's argmax over valid columns
    votes: Tensor  # (B, N) long, valid rows voting for each patch
    union: Tensor  # (B,) long, size of the union of valid rows' argmaxes
    keep: Tensor  # (B, N) bool, the budgeted kept set (top-k by importance)
    count: Tensor  # (B,) long, keep.sum(1)
    faithful: Tensor  # (B,) bool, kept set == union (LightVLA's own rule applies)


def select(cfg: PrunerConfig, scores_m: Tensor, patch_valid: Tensor) -> Selection:
    """Row argmaxes, their union, and the budgeted kept set from column-masked scores."""
    argmax = scores_m.argmax(dim=-1)  # (B, N)
    votes = count_votes(argmax, patch_valid)  # (B, N)
    union = (votes > 0).sum(1)  # (B,)
    n_valid = patch_valid.sum(1)  # (B,)
    count = budget_counts(cfg, n_valid, union)  # (B,)
    keep = importance_rank(scores_m, votes, patch_valid) < count.unsqueeze(1)  # (B, N)
    faithful = torch.full_like(union, BUDGETS[cfg.budget].keeps_union, dtype=torch.bool)
    faithful = faithful & (count == union)
    return Selection(argmax, votes, union, keep, count, faithful)


def slot_index(scores_m: Tensor, sel: Selection, patch_valid: Tensor) -> Tensor:
    """Train mode: the patch each of the N slots selects, (B, N) long.

    - Adaptive budget and union >= min_keep ("faithful"): slot i takes row i's argmax, as
      LightVLA does; the distinct selected set is the union = the kept set.
    - Otherwise (a budget that adds or removes patches from the union): slot i takes
      patch i itself if i is kept, else row i's argmax restricted to the kept set. Every
      kept patch is then selected (by its own slot) and nothing else is, so the distinct
      selected set EQUALS the kept set -- at zero noise, exactly what eval keeps.
    - Slots of invalid patches take themselves (the model masks them out anyway).
    """
    B, N = sel.argmax.shape
    own = torch.arange(N, device=scores_m.device).expand(B, N)
    restricted = scores_m.masked_fill(~sel.keep.unsqueeze(1), NEG).argmax(dim=-1)  # (B, N)
    budgeted = torch.where(sel.keep, own, restricted)
    index = torch.where(sel.faithful.unsqueeze(1), sel.argmax, budgeted)
    return torch.where(patch_valid, index, own)


def padded_length(max_count: int, n: int, buckets: tuple[int, ...]) -> int:
    """Eval padded length K: max kept count, rounded up to the next bucket, capped at N."""
    if not buckets:
        return min(max_count, n)
    k = next((b for b in buckets if b >= max_count), n)
    return min(k, n)


def gather_kept(patches: Tensor, keep: Tensor, buckets: tuple[int, ...]) -> tuple[Tensor, ...]:
    """Eval mode: kept patches in original order, right-padded to a common length K.

    patches (B, N, D), keep (B, N) -> patches (B, K, D) (zeros in padding),
    index (B, K) long ascending (0 in padding), valid (B, K) bool.
    """
    B, N, D = patches.shape
    counts = keep.sum(1)  # (B,)
    K = padded_length(int(counts.max().item()) if B else 0, N, buckets)
    pos = torch.arange(N, device=keep.device).expand(B, N)
    key = torch.where(keep, pos, pos + N)  # kept first, each group in index order
    first = torch.sort(key, dim=1).values[:, :K]  # (B, K)
    valid = first < N  # (B, K)
    index = torch.where(valid, first, 0)  # (B, K)
    kept = patches.gather(1, index.unsqueeze(-1).expand(B, K, D))  # (B, K, D)
    kept = kept.masked_fill(~valid.unsqueeze(-1), 0)
    return kept, index, valid
