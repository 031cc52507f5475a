"""The scorer table is the one place a scorer is added: validation, the pruner, Tune's space
and the synthetic collapse table all take it from policies/pruning/registry.py."""

from __future__ import annotations

import pytest
import torch

from policies.pruning import registry
from policies.pruning.config import PrunerConfig
from policies.pruning.pruner import TokenPruner
from policies.pruning.scorers import Scorer


def test_a_new_entry_is_everywhere_at_once(monkeypatch):
    with pytest.raises(ValueError, match="pruning.scorer must be one of"):
        PrunerConfig(scorer="sharp").validate()
    sharp = registry.ScorerSpec(
        lambda cfg, w, _: Scorer(w, temperature=0.5),
        searched=True,
        table=(("sharp t=0.5", {}),),
    )
    monkeypatch.setitem(registry.SCORERS, "sharp", sharp)
    cfg = PrunerConfig(enabled=True, scorer="sharp")
    cfg.validate()
    pruner = TokenPruner(cfg, 16).eval()
    assert isinstance(pruner.scorer, Scorer) and pruner.scorer.temperature == 0.5
    out = pruner(
        torch.randn(2, 12, 16),
        torch.ones(2, 12, dtype=torch.bool),
        torch.randn(2, 5, 16),
        torch.ones(2, 5, dtype=torch.bool),
    )
    assert out.patches.shape[0] == 2 and (out.kept_tokens >= 1).all()
    assert "sharp" in registry.searched_scorers()
    assert ("sharp t=0.5", PrunerConfig(scorer="sharp")) in registry.table_variants()


def test_budgeted_scorers_refuse_the_adaptive_budget():
    for name, spec in registry.SCORERS.items():
        if spec.needs_budget:
            with pytest.raises(
                ValueError, match="pruning.budget must be keep_tokens or keep_ratio"
            ):
                PrunerConfig(scorer=name, budget="adaptive").validate()
            PrunerConfig(scorer=name, budget="keep_ratio").validate()


def test_tune_and_the_table_read_the_registry():
    from policies.pruning.synthetic import VARIANTS
    from tune.space import SCORERS

    assert SCORERS == ("lightvla", "residual", "lowrank")
    assert [label for label, _ in VARIANTS][:3] == [
        "lightvla",
        "lightvla bf16 scores",
        "no_query_norm",
    ]
    assert {cfg.scorer for _, cfg in VARIANTS} <= set(registry.SCORERS)


def test_bf16_scores_are_bf16_rounded_and_fp32_stays_exact():
    """pruning.score_dtype: "bfloat16" computes LightVLA's scores as its bf16 autocast does
    (every score a bf16 value, so near rows tie); "float32" is the default, unchanged."""
    g = torch.Generator().manual_seed(0)
    args = (
        torch.randn(2, 24, 64, generator=g),
        torch.ones(2, 24, dtype=torch.bool),
        torch.randn(2, 6, 64, generator=g),
        torch.ones(2, 6, dtype=torch.bool),
    )
    s32 = registry.build_scorer(PrunerConfig(), 64)(*args).scores
    s16 = registry.build_scorer(PrunerConfig(score_dtype="bfloat16"), 64)(*args).scores
    assert s16.dtype == s32.dtype == torch.float32
    assert torch.equal(s16, s16.bfloat16().float()) and not torch.equal(s32, s32.bfloat16().float())
    assert (s16 - s32).abs().max() < 0.1 * s32.abs().max()
    with pytest.raises(ValueError, match="pruning.score_dtype must be one of"):
        PrunerConfig(score_dtype="float16").validate()


def test_a_new_budget_is_one_entry(monkeypatch):
    from policies.pruning import budgets

    with pytest.raises(ValueError, match="pruning.budget must be one of"):
        PrunerConfig(budget="half_union").validate()
    spec = budgets.BudgetSpec(lambda cfg, n_valid, union: (union + 1) // 2)
    monkeypatch.setitem(budgets.BUDGETS, "half_union", spec)
    cfg = PrunerConfig(enabled=True, budget="half_union", min_keep=1)
    cfg.validate()
    args = (torch.randn(2, 12, 16), torch.ones(2, 12, dtype=torch.bool))
    task = (torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool))
    union = TokenPruner(PrunerConfig(enabled=True), 16).eval()(*args, *task).kept_tokens
    half = TokenPruner(cfg, 16).eval()(*args, *task).kept_tokens
    assert torch.equal(half, (union + 1) // 2)
