"""Search space over pruning settings, and the noise-ablation variants.

A trial's parameters are a flat dict of plain values (what Tune samples and what the
trials table shows); `pruner_config` turns them into a `PrunerConfig`.
"""

from __future__ import annotations

from typing import Any

from policies.pruning.budgets import BUDGETS as PRUNER_BUDGETS
from policies.pruning.config import NoiseScheduleConfig, PrunerConfig
from policies.pruning.registry import searched_scorers

SCHEDULES = ("none", "constant", "linear", "gap")
BUDGETS = tuple(PRUNER_BUDGETS)  # every budget of policies/pruning/budgets.py
SCORERS = searched_scorers()  # policies/pruning/registry.py: `searched=True`


def search_space(searcher: str) -> dict[str, Any]:
    """Tune distributions. PBT mutates only the noise scale/schedule (its 'hyperparameter
    schedule'); the others are sampled once per trial."""
    from ray import tune

    return {
        "schedule": tune.choice(SCHEDULES),
        "noise_scale": tune.loguniform(0.05, 2.0),
        "budget": tune.choice(BUDGETS),
        "keep_ratio": tune.uniform(0.05, 0.5),
        "keep_tokens": tune.randint(4, 64),
        "min_keep": tune.choice([1, 4, 8]),
        "scorer": tune.choice(SCORERS),
    }


def pbt_mutations() -> dict[str, Any]:
    from ray import tune

    return {"noise_scale": tune.loguniform(0.05, 2.0), "schedule": list(SCHEDULES)}


# LightVLA's ablation (docs/references.md §2: no noise, constant, linear decay) on its faithful
# scorer, then the cures docs/problem.md §4 proposes: patch-aware queries, learned low-rank
# projections, noise calibrated to the score gap, and an explicit budget.
ABLATION: dict[str, dict[str, Any]] = {
    "lightvla / no noise": {"scorer": "lightvla", "schedule": "none"},
    "lightvla / constant 0.5": {"scorer": "lightvla", "schedule": "constant", "noise_scale": 0.5},
    "lightvla / linear": {"scorer": "lightvla", "schedule": "linear"},
    "residual / linear": {"scorer": "residual", "schedule": "linear"},
    "lowrank / linear": {"scorer": "lowrank", "schedule": "linear"},
    "lightvla / gap x2": {"scorer": "lightvla", "schedule": "gap", "noise_scale": 2.0},
    # LightVLA's own score precision (issue 13): its rms_norm casts back to bf16, so score
    # rows tie and argmax hands all of them the lowest index (policies/pruning/scorers.py).
    "lightvla / linear / bf16 scores": {
        "scorer": "lightvla",
        "schedule": "linear",
        "score_dtype": "bfloat16",
    },
    "lightvla / keep_ratio 0.5": {
        "scorer": "lightvla",
        "schedule": "linear",
        "budget": "keep_ratio",
        "keep_ratio": 0.5,
    },
    "lightvla / keep_ratio 0.15": {
        "scorer": "lightvla",
        "schedule": "linear",
        "budget": "keep_ratio",
        "keep_ratio": 0.15,
    },
    # A cure through the objective (policies/pruning/objectives.py, DynamicViT's ratio loss):
    # the faithful scorer and schedule, adaptive budget, pulled towards 25 % of the patches.
    "lightvla / keep-ratio loss": {
        "scorer": "lightvla",
        "schedule": "linear",
        "keep_loss_weight": 1.0,
    },
    # The same, trained on eval's sequence (pruning.train_tokens "masked"): each kept patch
    # once, the rest masked out of attention (DynamicViT's attention masking) instead of
    # LightVLA's copies, which benchmarks/train_eval_gap.py measured costing 1.2-2.2x in eval.
    "lightvla / keep-ratio loss / masked": {
        "scorer": "lightvla",
        "schedule": "linear",
        "keep_loss_weight": 1.0,
        "train_tokens": "masked",
    },
}

DEFAULTS: dict[str, Any] = {
    "schedule": "linear",
    "noise_scale": 1.0,
    "budget": "adaptive",
    "keep_ratio": 0.15,
    "keep_tokens": 16,
    "min_keep": 1,
    "scorer": "lightvla",
    "keep_loss_weight": 0.0,
    "keep_loss_target": 0.25,
    "score_dtype": "float32",
    "train_tokens": "copies",
}


def ablation_space(variants: tuple[str, ...]) -> dict[str, Any]:
    """One trial per variant (`TuneConfig.ablation_variants`: names of ABLATION)."""
    from ray import tune

    return {"variant": tune.grid_search(list(variants))}


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's full parameter set: defaults <- ablation variant <- sampled values."""
    params = dict(DEFAULTS)
    if "variant" in config:
        params.update(ABLATION[config["variant"]])
        params["variant"] = config["variant"]
    params.update({k: v for k, v in config.items() if k in DEFAULTS})
    return params


def pruner_config(params: dict[str, Any], total_steps: int) -> PrunerConfig:
    cfg = PrunerConfig(
        enabled=True,
        scorer=params["scorer"],
        budget=params["budget"],
        keep_ratio=float(params["keep_ratio"]),
        keep_tokens=int(params["keep_tokens"]),
        min_keep=int(params["min_keep"]),
        keep_loss_weight=float(params["keep_loss_weight"]),
        keep_loss_target=float(params["keep_loss_target"]),
        score_dtype=params["score_dtype"],
        train_tokens=params["train_tokens"],
        noise=NoiseScheduleConfig(
            kind=params["schedule"],
            scale=float(params["noise_scale"]),
            total_steps=max(1, total_steps),
        ),
    )
    cfg.validate()
    return cfg
