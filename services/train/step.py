"""One optimizer step, Ray-free (the worker loops over it; tests and the step-time
measurement call it directly).

openpi scripts/train_pytorch.py `train_loop`, one iteration: set the LR by hand, forward,
loss = mean of the per-element MSE, backward, clip the global grad norm, AdamW step, zero
grads. Added: randomness re-seeded from (seed, global_step, rank), image augmentation, the
pruner's `step=global_step`, and the EMA update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from policies.pi05.model import Observation, Pi05Model
from services.train.config import TrainConfig
from services.train.data import augment_observation
from services.train.ema import EMA
from services.train.lr import lr_at


def step_seeds(seed: int, global_step: int, rank: int) -> tuple[int, int]:
    """Two independent 63-bit seeds (global RNG, augmentation) for a step on a rank."""
    a, b = np.random.SeedSequence([seed, global_step, rank]).generate_state(2, dtype=np.uint64)
    return int(a >> np.uint64(1)), int(b >> np.uint64(1))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """openpi `_optimizer.AdamW`: b1 0.9, b2 0.95, eps 1e-8, weight decay 1e-10."""
    return torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        betas=(cfg.adam_b1, cfg.adam_b2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
    )


@dataclass
class Stepper:
    """What a step touches. `net` is `model` or its DDP wrapper."""

    cfg: TrainConfig
    model: Pi05Model
    net: nn.Module
    opt: torch.optim.Optimizer
    ema: EMA | None
    rank: int
    device: torch.device

    def lr(self, global_step: int) -> float:
        c = self.cfg
        return lr_at(
            global_step,
            peak=c.lr,
            warmup_steps=c.warmup_steps,
            decay_steps=c.decay_steps,
            end=c.decay_lr,
        )

    def __call__(
        self, obs: Observation, actions: torch.Tensor, global_step: int
    ) -> dict[str, float]:
        """obs: this rank's batch; actions (b, H, action_dim) normalized. -> step metrics."""
        s_global, s_aug = step_seeds(self.cfg.seed, global_step, self.rank)
        torch.manual_seed(s_global)  # flow noise and time (model), pruner noise
        obs, actions = obs.to(self.device), actions.to(self.device)
        if self.cfg.augment:
            obs = augment_observation(obs, torch.Generator().manual_seed(s_aug))
        for group in self.opt.param_groups:
            group["lr"] = self.lr(global_step)
        out = self.net(obs, actions, step=global_step)  # out.loss (b, H, action_dim)
        # openpi averages over batch, horizon and all action dims; plus the pruner's
        # objective when it has one (pruning.keep_loss_weight)
        loss = out.total
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        return {
            "train/loss": loss.item(),
            "train/grad_norm": float(grad_norm),
            **{k: float(v) for k, v in out.metrics.items()},
        }
