"""Configuration of the visual-token pruner and its noise schedule.

Plain frozen dataclasses (tyro-friendly, JSON-serialisable through `dataclasses.asdict`).
`validate()` raises `ValueError` naming the field and the offending value, e.g.
"pruning.keep_ratio must be in (0, 1], got 1.5".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

SCHEDULE_KINDS = ("none", "constant", "linear", "cosine", "gap")
SCORERS = (
    "lightvla",
    "no_query_norm",
    "temperature",
    "residual",
    "lowrank",
    "centered",
    "random",
    "grid",
)
TRAINING_FREE = ("random", "grid")  # policies/pruning/training_free.py: need a budget
BUDGETS = ("adaptive", "keep_tokens", "keep_ratio")
POSITION_IDS = ("openpi", "lightvla", "compact")


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _is_real(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class NoiseScheduleConfig:
    """Scale of the uniform exploration noise added to the scores in training.

    LightVLA sets `noise_scale = 1 - step / max_steps` every step (docs/references.md §2);
    docs/problem.md §4 (d) asks to compare no noise, constant noise and linear decay.
    """

    # "none": no noise; "constant": always `scale` (the paper's "constant noise" ablation);
    # "linear": LightVLA, `scale * (1 - step / total_steps)` down to `final_scale`;
    # "cosine": half-cosine from `scale` down to `final_scale`;
    # "gap": the linear decay multiplied by the batch's mean top1-top2 score gap, so that
    # `scale` is in units of the gap (docs/problem.md §4 (b): noise and gap of the same order).
    kind: str = "linear"
    scale: float = 1.0  # peak (step 0) / constant noise scale; for "gap": multiple of the gap
    total_steps: int = 1000  # steps over which linear/cosine/gap decay to `final_scale`
    final_scale: float = 0.0  # value reached at `total_steps` and held after (LightVLA: 0)

    def validate(self, prefix: str = "pruning.noise") -> None:
        _check(self.kind in SCHEDULE_KINDS, f"{prefix}.kind", f"one of {SCHEDULE_KINDS}", self.kind)
        _check(_is_real(self.scale) and self.scale >= 0, f"{prefix}.scale", ">= 0", self.scale)
        _check(
            _is_int(self.total_steps) and self.total_steps >= 1,
            f"{prefix}.total_steps",
            "an integer >= 1",
            self.total_steps,
        )
        _check(
            _is_real(self.final_scale) and self.final_scale >= 0,
            f"{prefix}.final_scale",
            ">= 0",
            self.final_scale,
        )


@dataclass(frozen=True)
class PrunerConfig:
    """LightVLA-style visual-token pruner (policies/pruning/pruner.py)."""

    enabled: bool = False  # the MODEL builds/calls the pruner only when True
    # Score function (policies/pruning/scorers.py):
    # "lightvla" (faithful, parameter-free), "no_query_norm" (no RMSNorm on the queries),
    # "temperature" (cross-attention logits / temperature), "residual" (query rms(q) + a*p),
    # "lowrank" (learnable rank-r cross-attention + residual), "centered" (tokens centred);
    # training-free baselines (policies/pruning/training_free.py): "random" (seeded per
    # observation), "grid" (uniform grid per camera); both need keep_tokens or keep_ratio.
    scorer: str = "lightvla"
    temperature: float = 1.0  # "temperature": divides the patch->task attention logits
    residual_alpha: float = 0.2  # "residual"/"lowrank": weight a of the patch in rms(q) + a*p
    lowrank_rank: int = 16  # "lowrank": rank r of the learnable projections Wq, Wk
    random_seed: int = 0  # "random": seed mixed with each observation's own hash
    # Eval-mode kept count (train mode selects consistently, see pruner.py):
    # "adaptive" (union of row argmaxes, LightVLA), "keep_tokens" (exactly keep_tokens),
    # "keep_ratio" (ceil(keep_ratio * valid patches)); all raised to at least min_keep.
    budget: str = "adaptive"
    keep_tokens: int = 64  # "keep_tokens": patches kept per sample (capped at valid patches)
    keep_ratio: float = 0.15  # "keep_ratio": fraction of the sample's valid patches kept
    min_keep: int = 1  # floor on the kept count for every budget (capped at valid patches)
    # Eval: round the batch's padded kept length K up to the next of these sizes (few shapes
    # for compiled / graph-captured inference); above the largest, K = N. () = no rounding.
    buckets: tuple[int, ...] = ()
    # Numbering of kept tokens, implemented by the MODEL ("openpi" | "lightvla" | "compact").
    position_ids: str = "openpi"
    trim_prompt_padding: bool = True  # eval: the MODEL drops padded prompt slots
    noise: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)  # training noise
    telemetry: bool = True  # compute the prune/* metrics (one host sync per call)

    def validate(self) -> None:
        p = "pruning"
        _check(isinstance(self.enabled, bool), f"{p}.enabled", "a bool", self.enabled)
        _check(self.scorer in SCORERS, f"{p}.scorer", f"one of {SCORERS}", self.scorer)
        _check(
            _is_real(self.temperature) and self.temperature > 0,
            f"{p}.temperature",
            "> 0",
            self.temperature,
        )
        _check(
            _is_real(self.residual_alpha) and self.residual_alpha >= 0,
            f"{p}.residual_alpha",
            ">= 0",
            self.residual_alpha,
        )
        _check(
            _is_int(self.lowrank_rank) and self.lowrank_rank >= 1,
            f"{p}.lowrank_rank",
            "an integer >= 1",
            self.lowrank_rank,
        )
        _check(
            _is_int(self.random_seed) and self.random_seed >= 0,
            f"{p}.random_seed",
            "an integer >= 0",
            self.random_seed,
        )
        _check(self.budget in BUDGETS, f"{p}.budget", f"one of {BUDGETS}", self.budget)
        # Rows all vote for one patch under these scorers: "adaptive" would keep just it.
        _check(
            self.scorer not in TRAINING_FREE or self.budget != "adaptive",
            f"{p}.budget",
            f"keep_tokens or keep_ratio for scorer {self.scorer!r}",
            self.budget,
        )
        _check(
            _is_int(self.keep_tokens) and self.keep_tokens >= 1,
            f"{p}.keep_tokens",
            "an integer >= 1",
            self.keep_tokens,
        )
        _check(
            _is_real(self.keep_ratio) and 0 < self.keep_ratio <= 1,
            f"{p}.keep_ratio",
            "in (0, 1]",
            self.keep_ratio,
        )
        _check(
            _is_int(self.min_keep) and self.min_keep >= 1,
            f"{p}.min_keep",
            "an integer >= 1",
            self.min_keep,
        )
        b = self.buckets
        ok = isinstance(b, tuple | list) and all(_is_int(x) and x >= 1 for x in b)
        ok = ok and all(x < y for x, y in zip(b[:-1], b[1:]))
        _check(ok, f"{p}.buckets", "strictly increasing integers >= 1", b)
        _check(
            self.position_ids in POSITION_IDS,
            f"{p}.position_ids",
            f"one of {POSITION_IDS}",
            self.position_ids,
        )
        _check(
            isinstance(self.trim_prompt_padding, bool),
            f"{p}.trim_prompt_padding",
            "a bool",
            self.trim_prompt_padding,
        )
        _check(isinstance(self.telemetry, bool), f"{p}.telemetry", "a bool", self.telemetry)
        _check(
            isinstance(self.noise, NoiseScheduleConfig),
            f"{p}.noise",
            "a NoiseScheduleConfig",
            self.noise,
        )
        self.noise.validate(f"{p}.noise")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PrunerConfig:
        """Inverse of `to_dict` (JSON turns tuples into lists and nests `noise`)."""
        d = dict(d)
        noise = d.pop("noise", None) or {}
        if not isinstance(noise, NoiseScheduleConfig):
            noise = NoiseScheduleConfig(**noise)
        if "buckets" in d:
            d["buckets"] = tuple(d["buckets"])
        return PrunerConfig(**d, noise=noise)
