"""openpi's learning-rate schedule: linear warmup, then cosine decay.

Same formula as openpi scripts/train_pytorch.py `lr_schedule` (which matches the JAX
`CosineDecaySchedule`): warmup starts at peak / (warmup + 1), reaches the peak at
`warmup_steps`, then a half cosine down to `decay_lr` at `decay_steps`, held after.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, peak: float, warmup_steps: int, decay_steps: int, end: float) -> float:
    """LR used by the optimizer step taken at 0-indexed global `step`."""
    if step < warmup_steps:
        init = peak / (warmup_steps + 1)
        return init + (peak - init) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, decay_steps - warmup_steps))
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
