"""`prunepi tune`: which pruning settings keep the fewest tokens without losing success?

Two experiments:
  - "search": a multi-objective search (success up, kept tokens down) over the noise
    schedule, noise scale, keep budget, `min_keep` and scorer;
  - "noise-ablation": LightVLA's three variants (no noise, constant, linear decay) plus our
    collapse cures, each trained and rolled out once (reports/noise_ablation.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from prunepi.checks import (
    Rule,
    check,
    check_fields,
    int_at_least,
    is_real,
    nonempty,
    one_of,
    optional,
    real_above,
    real_at_least,
)
from prunepi.env import check_address
from services.train.config import WandbMode

EXPERIMENTS = ("search", "noise-ablation")
SEARCHERS = ("optuna", "random", "pbt")


@dataclass(frozen=True)
class TuneConfig:
    """Ray Tune over pruning settings; every trial = Ray Train fine-tune + rollouts."""

    preset: str = "tiny"  # training preset (services.train TRAIN_PRESETS)
    data: str = ""  # LeRobot dataset folder to train on (`prunepi collect` writes one)
    out: str = "runs/tune"  # TUNE folder: trials.csv/json, pareto.png, best_train_config.json
    experiment: str = "search"  # "search" | "noise-ablation"
    trials: int = 8  # trials of the search (the ablation runs one trial per variant)
    searcher: str = "optuna"  # "optuna" (multi-objective TPE) | "random" | "pbt" (schedule)
    steps: int = 300  # training steps per trial
    rungs: int = 3  # evaluations per trial (train steps/rungs, roll out, report, continue)
    suite: str = "spatial"  # rollout suite (envs.SUITES)
    episodes_per_task: int = 3  # rollout episodes per task at every rung
    rollout_tasks: tuple[int, ...] = ()  # task ids to roll out; () = every task of the suite
    max_rollout_steps: int | None = None  # policy steps per episode; None = the suite's limit
    rollout_workers: int = 1  # Ray actors rolling out each trial's checkpoint
    kept_weight: float = 0.25  # scalarization: score = success_rate - kept_weight * kept_ratio
    max_concurrent_trials: int = 1  # trials in flight (2 local CPUs fit one)
    # logical CPUs of the trial driver (light; Train workers ask their own)
    trial_cpus: float = 0.01
    train_workers: int = 1  # Ray Train workers per trial
    cpus_per_train_worker: float = 0.99  # Ray CPUs per Train worker (leaves trial_cpus room)
    batch_size: int | None = None  # global batch per step; None = the preset's
    lr: float | None = None  # peak learning rate; None = the preset's
    augment: bool = True  # openpi's train-time image augmentation
    gpus_per_worker: float = 0.0  # fractional GPUs per Train worker on a cluster (0: CPU)
    grace_rungs: int = 1  # ASHA: rungs every trial gets before it may be stopped
    seed: int = 0  # searcher and training seed
    resume: bool = True  # restore an interrupted search in `out` (Tuner.restore)
    ray_num_cpus: int = 2  # CPUs of the embedded local Ray (ignored on a cluster)
    # Ray cluster to join (HOST:PORT, "auto", ray://HOST:PORT); None: RAY_ADDRESS if set (as
    # `ray job submit` sets it), else the embedded local Ray; "local": always embedded
    address: str | None = None
    image_size: int | None = None  # override the model's image side (train and rollout)
    # checkpoint folder every trial fine-tunes (e.g. models/reference); "": from scratch
    init_from: str = ""
    # norm_stats.json (or its folder) for the trials; "": init_from's, else from `data`
    norm_stats: str = ""
    # episodes per task re-evaluating each Pareto trial on the REPORT block (0: skip)
    report_episodes_per_task: int = 50
    report_envs_per_worker: int = 4  # lockstep envs per actor in that re-evaluation
    wandb_mode: WandbMode = "offline"  # each trial's training run, as `prunepi train` logs
    report_dir: str = "reports"  # noise-ablation writes noise_ablation.md (+ .png) here

    def validate(self) -> None:
        check_fields("tune", self, TUNE_RULES)
        at_least_rungs = Rule(lambda v: v >= self.rungs, f">= rungs ({self.rungs})")
        check("tune", "steps", self.steps, at_least_rungs)  # a rung is at least one step
        check_address("tune.address", self.address)
        # Trials roll out on the selection block of initial states (tune/trial.py), which
        # must exist in the suite: ours have 200 per task, real LIBERO only its 50.
        from services.rollout.config import SELECTION_BLOCK, check_init_block

        check_init_block(self.suite, SELECTION_BLOCK, self.episodes_per_task, "SELECTION_BLOCK")
        if self.report_episodes_per_task:
            from services.rollout.config import REPORT_BLOCK

            check_init_block(
                self.suite, REPORT_BLOCK, self.report_episodes_per_task, "REPORT_BLOCK"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


TUNE_RULES = {
    "experiment": one_of(EXPERIMENTS),
    "searcher": one_of(SEARCHERS),
    "data": nonempty("a LeRobot dataset folder"),
    **dict.fromkeys(
        (
            "trials",
            "steps",
            "rungs",
            "episodes_per_task",
            "rollout_workers",
            "max_concurrent_trials",
            "train_workers",
            "grace_rungs",
        ),
        int_at_least(1),
    ),
    "kept_weight": real_at_least(0),
    "trial_cpus": Rule(
        lambda v: is_real(v) and v > 0, "> 0 (Ray refuses a trial with no resources)"
    ),
    "cpus_per_train_worker": real_at_least(0),
    "batch_size": optional(int_at_least(1)),
    "lr": optional(real_above(0)),
    "gpus_per_worker": real_at_least(0),
    "report_episodes_per_task": int_at_least(0),
    "report_envs_per_worker": int_at_least(1),
    "wandb_mode": one_of(WandbMode),
}
