"""Exponential moving average of the weights (openpi JAX trainer: `ema_decay`, 0.999 for
pi05_libero; openpi's PyTorch trainer has none).

Kept in fp32 whatever the parameter dtype: a bf16 EMA cannot move by 0.1% per step (bf16
resolves ~0.8%). The checkpoint's model.safetensors holds the EMA weights (cast to each
parameter's dtype); the fp32 EMA itself goes to train_state.safetensors for exact resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {
            n: p.detach().float().clone() for n, p in model.named_parameters()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """ema = decay * ema + (1 - decay) * param (after each optimizer step)."""
        for n, p in model.named_parameters():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    @contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the EMA weights into `model` (e.g. to save them)."""
        with torch.no_grad():
            backup = {n: p.detach().clone() for n, p in model.named_parameters()}
            for n, p in model.named_parameters():
                p.copy_(self.shadow[n].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(backup[n])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": t.cpu() for n, t in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for n, t in self.shadow.items():
            t.copy_(tensors[f"ema.{n}"])
