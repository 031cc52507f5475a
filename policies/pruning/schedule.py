"""Noise schedules for the pruner's training-time exploration noise.

LightVLA (`TokenPruner`, prismatic/extern/hf/modeling_prismatic.py) adds `U[0,1) * scale`
to the scores before the argmax, with `scale = 1 - step / max_steps` set every step
(docs/references.md §2). docs/problem.md §4 proposes (b) bringing the noise and the score's
top1-top2 gap to the same order ("gap" below) and (d) comparing none / constant / linear.

    sched = make_schedule(NoiseScheduleConfig(kind="linear", scale=1.0, total_steps=100))
    sched.scale(50)  # 0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from policies.pruning.config import NoiseScheduleConfig

# Each kind is a function of (config, progress in [0, 1], score gap) -> scale.
ScaleFn = Callable[[NoiseScheduleConfig, float, "float | None"], float]


def _none(c: NoiseScheduleConfig, progress: float, score_gap: float | None) -> float:
    """No exploration noise (the paper's "no noise" ablation)."""
    return 0.0


def _constant(c: NoiseScheduleConfig, progress: float, score_gap: float | None) -> float:
    """`scale` at every step (the paper's "constant noise" ablation)."""
    return c.scale


def _linear(c: NoiseScheduleConfig, progress: float, score_gap: float | None) -> float:
    """LightVLA: `scale * (1 - step / total_steps)`, generalised to end at `final_scale`."""
    return c.final_scale + (c.scale - c.final_scale) * (1.0 - progress)


def _cosine(c: NoiseScheduleConfig, progress: float, score_gap: float | None) -> float:
    """Half cosine from `scale` (step 0) to `final_scale` (step >= total_steps)."""
    w = 0.5 * (1.0 + math.cos(math.pi * progress))
    return c.final_scale + (c.scale - c.final_scale) * w


def _gap(c: NoiseScheduleConfig, progress: float, score_gap: float | None) -> float:
    """Linear decay in units of the score's mean top1-top2 gap (docs/problem.md §4 (b)).

    U[0,1) * s flips a row's argmax between its top two patches only if s exceeds their
    gap; LightVLA's scale 1 against a gap of ~0.04 (docs/problem.md §4) is 25 gaps, i.e. pure
    random exploration. Here `scale` = how many gaps of noise at step 0. The pruner
    applies it per sample with the sample's own deterministic mean gap (the batch mean is
    logged as `prune/score_top1_gap_det_mean`).
    """
    if score_gap is None:
        raise ValueError("noise schedule kind 'gap' needs score_gap, got None")
    if not math.isfinite(score_gap) or score_gap < 0:
        raise ValueError(f"score_gap must be finite and >= 0, got {score_gap}")
    return _linear(c, progress, None) * score_gap


_KINDS: dict[str, ScaleFn] = {
    "none": _none,
    "constant": _constant,
    "linear": _linear,
    "cosine": _cosine,
    "gap": _gap,
}


@dataclass(frozen=True)
class NoiseSchedule:
    """`scale(step, score_gap=...)` -> noise scale at a global training step."""

    cfg: NoiseScheduleConfig

    def scale(self, step: int, *, score_gap: float | None = None) -> float:
        if step < 0:
            raise ValueError(f"noise schedule step must be >= 0, got {step}")
        # Fraction of the decay done, in [0, 1] (held at 1 after total_steps).
        progress = min(int(step), self.cfg.total_steps) / self.cfg.total_steps
        return float(_KINDS[self.cfg.kind](self.cfg, progress, score_gap))


def make_schedule(cfg: NoiseScheduleConfig) -> NoiseSchedule:
    """Build the schedule named by `cfg.kind` (validated first)."""
    cfg.validate()
    return NoiseSchedule(cfg)
