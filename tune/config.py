"""`prunepi tune`: which pruning settings keep the fewest tokens without losing success?

Two experiments:
  - "search": a multi-objective search (success up, kept tokens down) over the noise
    schedule, noise scale, keep budget, `min_keep` and scorer;
  - "noise-ablation": LightVLA's three variants (no noise, constant, linear decay) plus our
    collapse cures, each trained and rolled out once (reports/noise_ablation.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prunepi.checks import (
    Rule,
    check,
    check_fields,
    int_at_least,
    is_real,
    one_of,
    real_at_least,
)
from prunepi.env import check_address
from services.rollout.config import (
    REPORT_BLOCK,
    ROLLOUT_RULES,
    SELECTION_BLOCK,
    RolloutConfig,
    check_init_block,
)
from services.train.config import TrainConfig
from tune.space import ABLATION

EXPERIMENTS = ("search", "noise-ablation")
SEARCHERS = ("optuna", "random", "pbt")


def trial_train() -> TrainConfig:
    """What every trial trains, before the search's pruner and the rung's steps: the `tiny`
    preset on one Ray Train worker. `--train.*` overrides any field (`--train.data`,
    `--train.init-from models/reference`, `--train.lr`, ...)."""
    return TrainConfig(
        preset="tiny",
        workers=1,
        cpus_per_worker=0.99,  # leaves trial_cpus room on a CPU
        keep_checkpoints=2,
        wandb_mode="offline",  # RUN/wandb in each trial's folder, as `prunepi train` logs
    )


def trial_rollout() -> RolloutConfig:
    """How every rung rolls a trial out (on the selection block; checkpoint, block and results
    file are the trial's). `--rollout.*` overrides (`--rollout.suite`, `--rollout.tasks`,
    `--rollout.episodes-per-task`, ...)."""
    return RolloutConfig(
        suite="spatial", episodes_per_task=3, num_workers=1, num_cpus_per_worker=0.99, seed=7
    )


@dataclass(frozen=True)
class TuneConfig:
    """Ray Tune over pruning settings; every trial = Ray Train fine-tune + rollouts. The
    trial's training and rollouts are complete configs of their own (`train`, `rollout`),
    overridden here instead of re-declared (issue 11)."""

    train: TrainConfig = field(default_factory=trial_train)
    rollout: RolloutConfig = field(default_factory=trial_rollout)
    out: str = "runs/tune"  # TUNE folder: trials.csv/json, pareto.png, best_train_config.json
    experiment: str = "search"  # "search" | "noise-ablation"
    trials: int = 8  # trials of the search (the ablation runs one trial per variant)
    searcher: str = "optuna"  # "optuna" (multi-objective TPE) | "random" | "pbt" (schedule)
    steps: int = 300  # training steps per trial
    rungs: int = 3  # evaluations per trial (train steps/rungs, roll out, report, continue)
    kept_weight: float = 0.25  # scalarization: score = success_rate - kept_weight * kept_ratio
    max_concurrent_trials: int = 1  # trials in flight (2 local CPUs fit one)
    # logical CPUs of the trial driver (light; Train workers ask their own)
    trial_cpus: float = 0.01
    grace_rungs: int = 1  # ASHA: rungs every trial gets before it may be stopped
    seed: int = 0  # searcher seed (training's is train.seed)
    resume: bool = True  # restore an interrupted search in `out` (Tuner.restore)
    ray_num_cpus: int = 2  # CPUs of the embedded local Ray (ignored on a cluster)
    # Ray cluster to join (HOST:PORT, "auto", ray://HOST:PORT); None: RAY_ADDRESS if set (as
    # `ray job submit` sets it), else the embedded local Ray; "local": always embedded
    address: str | None = None
    # episodes per task re-evaluating each Pareto trial on the REPORT block (0: skip)
    report_episodes_per_task: int = 50
    report_envs_per_worker: int = 4  # lockstep envs per actor in that re-evaluation
    report_workers: int = 2  # rollout actors of that re-evaluation (trials are done by then)
    report_dir: str = "reports"  # noise-ablation writes noise_ablation.md (+ .png) here
    # noise-ablation: the variants to run (names in tune/space.py ABLATION); () runs all
    variants: tuple[str, ...] = ()

    def __post_init__(self):
        # The dict form (Ray hands the trainable `to_dict()`; JSON lists for tuples).
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))
        if isinstance(self.rollout, dict):
            object.__setattr__(self, "rollout", RolloutConfig.from_dict(self.rollout))
        if isinstance(self.variants, list):  # JSON's form of the tuple
            object.__setattr__(self, "variants", tuple(self.variants))

    @property
    def suite(self) -> str:
        return self.rollout.suite

    @property
    def data(self) -> str:
        return self.train.data

    def validate(self) -> None:
        check_fields("tune", self, TUNE_RULES)
        at_least_rungs = Rule(lambda v: v >= self.rungs, f">= rungs ({self.rungs})")
        check("tune", "steps", self.steps, at_least_rungs)  # a rung is at least one step
        check_address("tune.address", self.address)
        # the trial's training as a whole (its pruner and steps come per trial and rung)
        dataclasses.replace(self.train, steps=self.steps).resolved().validate()
        check_fields("tune.rollout", self.rollout, ROLLOUT_RULES)
        # Trials roll out on the selection block of initial states (tune/trial.py), which
        # must exist in the suite: ours have 200 per task, real LIBERO only its 50.
        r = self.rollout
        check_init_block(r.suite, SELECTION_BLOCK, r.episodes_per_task, "SELECTION_BLOCK")
        if self.report_episodes_per_task:
            check_init_block(r.suite, REPORT_BLOCK, self.report_episodes_per_task, "REPORT_BLOCK")

    @property
    def ablation_variants(self) -> tuple[str, ...]:
        """The noise-ablation's variants, in ABLATION's order."""
        return tuple(v for v in ABLATION if not self.variants or v in self.variants)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _known_variants(v: Any) -> bool:
    return isinstance(v, tuple) and all(name in ABLATION for name in v)  # lists: __post_init__


TUNE_RULES = {
    "experiment": one_of(EXPERIMENTS),
    "searcher": one_of(SEARCHERS),
    **dict.fromkeys(
        ("trials", "steps", "rungs", "max_concurrent_trials", "grace_rungs"), int_at_least(1)
    ),
    "kept_weight": real_at_least(0),
    "trial_cpus": Rule(
        lambda v: is_real(v) and v > 0, "> 0 (Ray refuses a trial with no resources)"
    ),
    "report_episodes_per_task": int_at_least(0),
    "variants": Rule(_known_variants, f"names of tune/space.py ABLATION {tuple(ABLATION)}"),
    **dict.fromkeys(("report_envs_per_worker", "report_workers"), int_at_least(1)),
}
