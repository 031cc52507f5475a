"""The keep-ratio loss (policies/pruning/objectives.py): it sees a collapse the argmax hides
from gradients, and its gradient spreads the rows' picks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from policies.pi05.config import tiny
from policies.pi05.model import Pi05Model
from policies.pruning.config import PrunerConfig
from policies.pruning.objectives import keep_ratio_loss, soft_union
from prunepi.quickstart import random_observation


def collapsed(n: int = 16, gap: float = 0.04) -> torch.Tensor:
    """Every row's scores: column 0 ahead of the rest by `gap` (the user's 0.04)."""
    s = torch.zeros(1, n, n)
    s[..., 0] = gap
    return s


def test_soft_union_counts_a_collapse_as_one_and_a_diagonal_as_all():
    valid = torch.ones(1, 16, dtype=torch.bool)
    # the user's collapse (gap 0.04): broad rows, all alike -> one pick, at any temperature
    for tau in (0.02, 0.05, 1.0):
        assert soft_union(collapsed(), valid, tau).item() == pytest.approx(1.0, abs=1e-5)
    diagonal = torch.eye(16)[None] * 1.0
    assert soft_union(diagonal, valid, tau=0.05).item() == pytest.approx(16.0, abs=1e-3)
    # invalid rows pick nothing, invalid columns are not counted
    half = valid.clone()
    half[:, 8:] = False
    assert soft_union(diagonal, half, tau=0.05).item() == pytest.approx(8.0, abs=1e-3)


def test_the_loss_is_the_squared_gap_to_the_target_and_its_gradient_spreads_picks():
    cfg = PrunerConfig(keep_loss_weight=2.0, keep_loss_target=0.5, keep_loss_temperature=0.05)
    valid = torch.ones(1, 16, dtype=torch.bool)
    s = collapsed() + 0.01 * torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    s.requires_grad_(True)
    loss = keep_ratio_loss(cfg, s, valid)
    ratio = soft_union(s.detach(), valid, 0.05).item() / 16
    assert ratio < 0.1 and loss.item() == pytest.approx(2.0 * (ratio - 0.5) ** 2, rel=1e-5)
    loss.backward()
    stepped = (s - 0.5 * s.grad).detach()  # one gradient step on the scores
    assert soft_union(stepped, valid, 0.05) > soft_union(s.detach(), valid, 0.05)


def test_training_adds_it_to_the_loss_and_eval_never_computes_it():
    base = tiny()
    pr = PrunerConfig(enabled=True, keep_loss_weight=1.0)
    torch.manual_seed(0)
    model = Pi05Model(dataclasses.replace(base, pruning=pr)).train()
    obs = random_observation(model.config, 2, torch.Generator().manual_seed(1))
    actions = torch.randn(2, model.config.action_horizon, model.config.action_dim)
    torch.manual_seed(2)
    out = model(obs, actions)
    aux = out.prefix.aux_loss
    assert aux is not None and aux.item() > 0 and aux.requires_grad
    assert out.total.item() == pytest.approx(out.loss.mean().item() + aux.item(), rel=1e-6)
    assert out.metrics["prune/keep_loss"] == pytest.approx(aux.item())
    out.total.backward()  # reaches the model through the scores
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        assert model.eval().embed_prefix(obs).aux_loss is None
    with pytest.raises(ValueError, match="pruning.keep_loss_target must be in \\(0, 1\\]"):
        PrunerConfig(keep_loss_target=0.0).validate()
