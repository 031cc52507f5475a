"""Configuration of the visual-token pruner and its noise schedule.

Plain frozen dataclasses (tyro-friendly, JSON-serialisable through `dataclasses.asdict`).
`validate()` raises `ValueError` naming the field and the offending value, e.g.
"pruning.keep_ratio must be in (0, 1], got 1.5".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from prunepi.checks import (
    BOOL,
    Rule,
    check,
    check_fields,
    int_at_least,
    is_int,
    one_of,
    real_above,
    real_at_least,
    real_in,
)

ScheduleKind = Literal["none", "constant", "linear", "cosine", "gap"]
SCHEDULE_KINDS = get_args(ScheduleKind)
PositionIds = Literal["openpi", "lightvla", "compact"]
ScoreDtype = Literal["float32", "bfloat16"]
TrainTokens = Literal["copies", "masked"]
POSITION_IDS = get_args(PositionIds)


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
    kind: ScheduleKind = "linear"
    scale: float = 1.0  # peak (step 0) / constant noise scale; for "gap": multiple of the gap
    total_steps: int = 1000  # steps over which linear/cosine/gap decay to `final_scale`
    final_scale: float = 0.0  # value reached at `total_steps` and held after (LightVLA: 0)

    def validate(self, scope: str = "pruning.noise") -> None:
        check_fields(scope, self, NOISE_RULES)


NOISE_RULES = {
    "kind": one_of(SCHEDULE_KINDS),
    "scale": real_at_least(0),
    "total_steps": int_at_least(1),
    "final_scale": real_at_least(0),
}


@dataclass(frozen=True)
class PrunerConfig:
    """LightVLA-style visual-token pruner (policies/pruning/pruner.py)."""

    enabled: bool = False  # the MODEL builds/calls the pruner only when True
    # Score function, a key of policies/pruning/registry.py SCORERS:
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
    budget: str = "adaptive"  # a key of policies/pruning/budgets.py BUDGETS
    keep_tokens: int = 64  # "keep_tokens": patches kept per sample (capped at valid patches)
    keep_ratio: float = 0.15  # "keep_ratio": fraction of the sample's valid patches kept
    min_keep: int = 1  # floor on the kept count for every budget (capped at valid patches)
    # Eval: round the batch's padded kept length K up to the next of these sizes (few shapes
    # for compiled / graph-captured inference); above the largest, K = N. () = no rounding.
    buckets: tuple[int, ...] = ()
    # Numbering of kept tokens, implemented by the MODEL ("openpi" | "lightvla" | "compact").
    position_ids: PositionIds = "openpi"
    trim_prompt_padding: bool = True  # eval: the MODEL drops padded prompt slots
    noise: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)  # training noise
    telemetry: bool = True  # compute the prune/* metrics (one host sync per call)
    # Precision of the LightVLA-family scores: "float32" (autocast off) or "bfloat16", as
    # LightVLA's own training computes them (policies/pruning/scorers.py `Scorer`).
    score_dtype: ScoreDtype = "float32"
    # Keep-ratio loss (policies/pruning/objectives.py, after DynamicViT): in training, add
    # weight * (soft kept fraction - target)^2 to the loss; 0 turns it off. The soft kept
    # fraction is the expected union of the rows' picks at temperature tau.
    keep_loss_weight: float = 0.0
    keep_loss_target: float = 0.25  # target kept fraction of the valid patches
    keep_loss_temperature: float = 0.05  # tau: below the score gaps, so a collapse shows
    # What the LLM sees in training (policies/pruning/pruner.py): "copies", LightVLA's
    # straight-through W @ patches (every slot a copy of the patch it selected); "masked",
    # eval's sequence (each selected patch once, the rest out of attention through a
    # straight-through keep gate on the attention logits, after DynamicViT §3.2).
    train_tokens: TrainTokens = "copies"

    def validate(self) -> None:
        # The scorer table imports the scorer modules, which import this one: read it here.
        from policies.pruning.budgets import BUDGETS
        from policies.pruning.registry import SCORERS

        check("pruning", "scorer", self.scorer, one_of(tuple(SCORERS)))
        check("pruning", "budget", self.budget, one_of(tuple(BUDGETS)))
        check_fields("pruning", self, PRUNER_RULES)
        # Rows all vote for one patch under these scorers: "adaptive" would keep just it.
        if SCORERS[self.scorer].needs_budget:
            budgeted = Rule(
                lambda v: v != "adaptive", f"keep_tokens or keep_ratio for {self.scorer!r}"
            )
            check("pruning", "budget", self.budget, budgeted)
        self.noise.validate("pruning.noise")

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


def _increasing_sizes(b: Any) -> bool:
    ok = isinstance(b, tuple | list) and all(is_int(x) and x >= 1 for x in b)
    return ok and all(x < y for x, y in zip(b[:-1], b[1:]))


PRUNER_RULES = {
    "enabled": BOOL,
    "temperature": real_above(0),
    "residual_alpha": real_at_least(0),
    "lowrank_rank": int_at_least(1),
    "random_seed": int_at_least(0),
    "keep_tokens": int_at_least(1),
    "keep_ratio": real_in(0, 1, lo_open=True),
    "min_keep": int_at_least(1),
    "buckets": Rule(_increasing_sizes, "strictly increasing integers >= 1"),
    "position_ids": one_of(POSITION_IDS),
    "trim_prompt_padding": BOOL,
    "telemetry": BOOL,
    "score_dtype": one_of(ScoreDtype),
    "keep_loss_weight": real_at_least(0),
    "keep_loss_target": real_in(0, 1, lo_open=True),
    "keep_loss_temperature": real_above(0),
    "train_tokens": one_of(TrainTokens),
    "noise": Rule(lambda v: isinstance(v, NoiseScheduleConfig), "a NoiseScheduleConfig"),
}
