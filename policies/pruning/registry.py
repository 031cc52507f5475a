"""Every scorer in one table: a new scorer is one build function and one entry here.

`SCORERS` maps `pruning.scorer` to what the rest of prunepi needs of it: how to build the
module (a `Scores` producer, policies/pruning/scorers.py), whether it needs a fixed budget
(the training-free orderings, whose rows all vote alike), whether Tune searches over it
(tune/space.py), and its rows in the synthetic collapse table (policies/pruning/
synthetic.py). Validation (config.py), the pruner, Tune and the table all read this table,
so none of them has its own list. A scorer's knob is a `PrunerConfig` field (temperature,
residual_alpha, lowrank_rank, random_seed) that only its build function reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from policies.pruning.config import PrunerConfig
from policies.pruning.scorers import LowRankLogits, Scorer
from policies.pruning.training_free import PriorityScorer

Build = Callable[[PrunerConfig, int, "int | None"], nn.Module]  # (cfg, width, per camera)


@dataclass(frozen=True)
class ScorerSpec:
    build: Build
    needs_budget: bool = False  # eval budget must be keep_tokens / keep_ratio, not adaptive
    searched: bool = False  # one of Tune's scorer choices
    table: tuple[tuple[str, dict[str, Any]], ...] = ()  # synthetic rows: (label, overrides)


def _dt(cfg: PrunerConfig) -> torch.dtype:
    """`pruning.score_dtype` as a torch dtype (scorers.Scorer `dtype`)."""
    return getattr(torch, cfg.score_dtype)


def _lowrank(cfg: PrunerConfig, width: int, _: int | None) -> nn.Module:
    lowrank = LowRankLogits(width, cfg.lowrank_rank)
    return Scorer(width, alpha=cfg.residual_alpha, lowrank=lowrank, dtype=_dt(cfg))


SCORERS: dict[str, ScorerSpec] = {
    # LightVLA's parameter-free scorer, faithful (docs/references.md §2).
    "lightvla": ScorerSpec(
        lambda cfg, w, _: Scorer(w, dtype=_dt(cfg)),
        searched=True,
        table=(("lightvla", {}), ("lightvla bf16 scores", {"score_dtype": "bfloat16"})),
    ),
    # The cures of docs/problem.md §4 (docs/collapse-notes.md measures each).
    "no_query_norm": ScorerSpec(
        lambda cfg, w, _: Scorer(w, query_norm=False, dtype=_dt(cfg)),
        table=(("no_query_norm", {}),),
    ),
    "temperature": ScorerSpec(
        lambda cfg, w, _: Scorer(w, temperature=cfg.temperature, dtype=_dt(cfg)),
        table=(
            ("temperature t=0.1", {"temperature": 0.1}),
            ("temperature t=0.02", {"temperature": 0.02}),
        ),
    ),
    "residual": ScorerSpec(
        lambda cfg, w, _: Scorer(w, alpha=cfg.residual_alpha, dtype=_dt(cfg)),
        searched=True,
        table=(
            ("residual a=0.05", {"residual_alpha": 0.05}),
            ("residual a=0.2", {"residual_alpha": 0.2}),
        ),
    ),
    "lowrank": ScorerSpec(
        _lowrank, searched=True, table=(("lowrank r=16 a=0.2 (init)", {"lowrank_rank": 16}),)
    ),
    "centered": ScorerSpec(
        lambda cfg, w, _: Scorer(w, center=True, dtype=_dt(cfg)), table=(("centered", {}),)
    ),
    # Training-free orderings (policies/pruning/training_free.py): they need a budget.
    "random": ScorerSpec(PriorityScorer, needs_budget=True),
    "grid": ScorerSpec(PriorityScorer, needs_budget=True),
}


def build_scorer(cfg: PrunerConfig, width: int, patches_per_camera: int | None = None) -> nn.Module:
    """The scorer named by `cfg.scorer` for patch/task width `width`; `patches_per_camera`
    is the camera layout that "grid" needs."""
    if cfg.scorer not in SCORERS:
        raise ValueError(f"pruning.scorer must be one of {tuple(SCORERS)}, got {cfg.scorer!r}")
    return SCORERS[cfg.scorer].build(cfg, width, patches_per_camera)


def searched_scorers() -> tuple[str, ...]:
    return tuple(name for name, spec in SCORERS.items() if spec.searched)


def table_variants() -> tuple[tuple[str, PrunerConfig], ...]:
    """(label, config) rows of the synthetic collapse table, in SCORERS order."""
    return tuple(
        (label, PrunerConfig(scorer=name, **overrides))
        for name, spec in SCORERS.items()
        for label, overrides in spec.table
    )
