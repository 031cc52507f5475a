"""Eval-mode budgets, in one table: a new budget is one count function and one entry.

A budget turns a sample's valid patch count and its union of row argmaxes into how many
patches eval keeps (then raised to `min_keep` and capped at the valid count by
selection.budget_counts). `keeps_union` marks LightVLA's own rule, where the kept set is the
union itself (selection.Selection.faithful); the others keep the top-k by importance.
Validation (config.py), the pruner and Tune's search space read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from policies.pruning.config import PrunerConfig

# (cfg, n_valid (B,), union (B,)) -> (B,) long patches to keep, before min_keep and the cap
Count = Callable[[PrunerConfig, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class BudgetSpec:
    count: Count
    keeps_union: bool = False


def _keep_ratio(cfg: PrunerConfig, n_valid: Tensor, union: Tensor) -> Tensor:
    # ceil(ratio * n); the epsilon keeps 0.1 * 30 = 3.0000000000000004 at 3.
    return torch.ceil(n_valid.double() * cfg.keep_ratio - 1e-9).long()


BUDGETS: dict[str, BudgetSpec] = {
    # LightVLA: the union of the rows' argmaxes, as many as it holds.
    "adaptive": BudgetSpec(lambda cfg, n_valid, union: union, keeps_union=True),
    # exactly keep_tokens per sample (fewer when the sample has fewer valid patches)
    "keep_tokens": BudgetSpec(
        lambda cfg, n_valid, union: torch.full_like(n_valid, cfg.keep_tokens)
    ),
    # ceil(keep_ratio x the sample's valid patches)
    "keep_ratio": BudgetSpec(_keep_ratio),
}
