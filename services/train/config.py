"""`TrainConfig`: everything `prunepi train` takes, and the named training presets.

A preset (`TRAIN_PRESETS`) fixes the model size and the recipe (batch, LR schedule,
precision, EMA, checkpointing); every recipe field of `TrainConfig` defaults to None =
"the preset's value", so `--preset pi05_libero --batch-size 64` changes only the batch.
`resolved()` fills the Nones in; `validate()` raises ValueError naming field and value.

The `pi05_libero` recipe is openpi's `pi05_libero` TrainConfig (training/config.py):
batch 256, AdamW(b1 0.9, b2 0.95, eps 1e-8, wd 1e-10), clip 1.0, warmup 10k to 5e-5 then
flat (decay_steps 1M, decay_lr 5e-5), 30k steps, EMA 0.999, bf16 weights, gradient
checkpointing (docs/references.md §1 "Fine-tuning recipe").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.pi05.config import PRESETS as MODEL_PRESETS
from policies.policy import asset_id_problem
from policies.pruning.config import PrunerConfig
from prunepi.checks import (
    BOOL,
    Rule,
    check,
    check_fields,
    int_at_least,
    is_int,
    is_real,
    nonempty,
    one_of,
    optional,
    real_above,
    real_at_least,
    real_in,
)
from prunepi.env import check_address

Precision = Literal["float32", "bfloat16"]
Device = Literal["auto", "cpu", "cuda"]
WandbMode = Literal["offline", "online", "disabled"]


@dataclass(frozen=True)
class TrainPreset:
    """The recipe a preset fixes (every field overridable from TrainConfig)."""

    model: str  # policies.pi05.config preset: model sizes
    steps: int  # optimizer steps
    batch_size: int  # global batch (split evenly over workers, as openpi splits over GPUs)
    lr: float  # peak learning rate
    warmup_steps: int  # linear warmup from lr / (warmup + 1) to lr (openpi)
    decay_steps: int | None  # cosine decay ends here; None: the run's last step
    decay_lr: float  # LR at the end of the cosine
    ema_decay: float | None  # EMA of the weights; None: no EMA
    precision: str  # "float32" | "bfloat16" (openpi's bf16 keep-list)
    gradient_checkpointing: bool  # recompute layer activations in backward
    save_every: int  # checkpoint every K steps (and at the end)
    log_every: int  # log (metrics.jsonl, wandb, Ray report) every K steps
    # leave all-padding prefix slots out of the training pass (policies/pi05/model.py
    # `drop_batch_padding`: the same loss up to summation order, 1.6x faster on the
    # reference's shapes)
    drop_batch_padding: bool = True


TRAIN_PRESETS: dict[str, TrainPreset] = {
    # ~1M parameters, 112 px: trains from scratch on 2 CPU workers in minutes.
    "tiny": TrainPreset(
        model="tiny",
        steps=200,
        batch_size=8,
        lr=1e-3,
        warmup_steps=10,
        decay_steps=None,
        decay_lr=1e-4,
        ema_decay=None,
        precision="float32",
        gradient_checkpointing=False,
        save_every=50,
        log_every=1,
    ),
    # The reference policy (`make reference`, models/reference/): the tiny model on the
    # spatial suite at 112 px, 200 demos a task, trained unpruned on 2 CPU workers in under
    # 90 minutes. A higher LR than `tiny` (the demo measured 1e-3 too slow for short CPU
    # runs), a long cosine to a low final LR (success rose only as the LR fell:
    # reports/reference.md), an EMA of the weights, which openpi evaluates (`pi05_libero`:
    # 0.999), and as many steps as the budget holds: held-out demos score the same loss as
    # the training demos (no overfitting), so recipe 3 spends the 1.6x of drop_batch_padding
    # on steps.
    "reference": TrainPreset(
        model="tiny",
        steps=16_000,
        batch_size=32,
        lr=2e-3,
        warmup_steps=200,
        decay_steps=None,
        decay_lr=5e-5,
        ema_decay=0.999,
        precision="float32",
        gradient_checkpointing=False,
        save_every=1000,
        log_every=25,
    ),
    # openpi `pi05_libero` (training/config.py); openpi saves every 1000 and logs every 100.
    "pi05_libero": TrainPreset(
        model="pi05_libero",
        steps=30_000,
        batch_size=256,
        lr=5e-5,
        warmup_steps=10_000,
        decay_steps=1_000_000,
        decay_lr=5e-5,
        ema_decay=0.999,
        precision="bfloat16",
        gradient_checkpointing=True,
        save_every=1000,
        log_every=100,
    ),
}

# TrainConfig fields whose None means "the preset's value".
PRESET_FIELDS = tuple(f.name for f in dataclasses.fields(TrainPreset) if f.name != "model")


@dataclass(frozen=True)
class TrainConfig:
    """`prunepi train`: fine-tune π0.5 (optionally with the token pruner) on Ray Train."""

    preset: str = "tiny"  # recipe + model sizes: one of TRAIN_PRESETS ("tiny", "pi05_libero")
    data: str = ""  # LeRobot dataset folder (meta/, data/); `prunepi collect` writes one
    out: str = "runs/train"  # RUN folder: checkpoints/<step>/, metrics.jsonl, wandb/
    workers: int = 1  # Ray Train workers (DDP ranks)
    resume: bool = False  # continue RUN from its latest checkpoint (same step, data, noise)
    init_from: str = ""  # openpi checkpoint folder (model.safetensors) to fine-tune; "": scratch
    tokenizer_path: str = ""  # PaliGemma sentencepiece .model; "": fit one on the task strings
    # norm_stats.json (or its folder) to normalize with, e.g. the fine-tuned checkpoint's
    # assets/<asset_id>/ (openpi's AssetsConfig reuses a base checkpoint's); "": computed
    # from `data`
    norm_stats: str = ""
    # -- recipe (None: the preset's value) -----------------------------------------------
    steps: int | None = None  # total optimizer steps
    batch_size: int | None = None  # global batch, divisible by workers
    lr: float | None = None  # peak learning rate
    warmup_steps: int | None = None  # linear warmup steps
    decay_steps: int | None = None  # cosine decay ends at this step (tiny: the run's steps)
    decay_lr: float | None = None  # final learning rate of the cosine decay
    ema_decay: float | None = None  # EMA decay in (0, 1); 0 turns EMA off
    precision: Precision | None = None
    gradient_checkpointing: bool | None = None  # activation checkpointing in the joint layers
    drop_batch_padding: bool | None = None  # leave all-padding prefix slots out (faster)
    save_every: int | None = None  # checkpoint period in steps (the last step always saves)
    log_every: int | None = None  # metrics period in steps (checkpoint steps always log)
    # -- optimizer (openpi `_optimizer.AdamW` defaults) -------------------------------------
    adam_b1: float = 0.9  # AdamW beta1
    adam_b2: float = 0.95  # AdamW beta2
    adam_eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 1e-10  # AdamW decoupled weight decay
    clip_grad_norm: float = 1.0  # global grad-norm clip
    # -- model / data ----------------------------------------------------------------------
    image_size: int | None = None  # override the model's image side (multiple of 14)
    max_token_len: int | None = None  # override the model's prompt slots (tiny: 32, π0.5: 200)
    pruning: PrunerConfig = field(default_factory=PrunerConfig)  # token pruner (enabled=False: off)
    # True: pruning.noise.total_steps := the run's steps (LightVLA decays over the whole
    # run); False: keep pruning.noise.total_steps as given
    noise_steps_from_run: bool = True
    augment: bool = True  # openpi's train-time image augmentation (crop, rotate, colour)
    # checkpoint assets/<asset_id>/ (norm stats, tokenizer); may nest like openpi's ids,
    # e.g. "physical-intelligence/libero" = assets/physical-intelligence/libero/
    asset_id: str = "prunepi"
    seed: int = 0  # weights, data order, augmentation, flow noise and pruner noise
    loader_workers: int = 0  # torch DataLoader processes per Ray worker (0: in-process)
    # -- Ray -------------------------------------------------------------------------------
    device: Device = "auto"  # "auto": cuda when the cluster has GPUs
    cpus_per_worker: float = 1.0  # Ray CPU resources per worker
    # Ray GPU resources per worker when training on GPUs; a fraction packs several runs (Tune
    # trials) on one GPU
    gpus_per_worker: float = 1.0
    threads_per_worker: int = 1  # torch.set_num_threads in each worker
    ray_num_cpus: int = 2  # CPUs of the embedded local Ray (ignored on a cluster)
    # Ray cluster to join (HOST:PORT, "auto", ray://HOST:PORT); None: RAY_ADDRESS if set (as
    # `ray job submit` sets it), else the embedded local Ray; "local": always embedded
    address: str | None = None
    max_failures: int = 2  # Ray FailureConfig: worker-group restarts from the last checkpoint
    keep_checkpoints: int | None = None  # keep only the newest K checkpoints; None: all
    # Ray Train's own `ray.train` log level (worker-group start, restarts); our metrics go to
    # RUN/metrics.jsonl and wandb. The per-report dump is quieted by prunepi.env instead.
    train_log_level: str = "WARNING"
    wandb_mode: WandbMode = "offline"  # "offline": files in RUN/wandb
    wandb_project: str = "prunepi"  # wandb project name
    # -- debugging -------------------------------------------------------------------------
    # end this invocation after this step, with a checkpoint, as a preempted job would; a
    # later resume=True run continues to `steps` (None: run to `steps`)
    stop_after: int | None = None
    fail_at_step: int | None = None  # rank 1 (0 alone) exits once at this step (fault test)

    # ---------------------------------------------------------------------------------------

    def __post_init__(self):
        # Accept the JSON/dict form of the pruner config (Ray Tune and train_state.json pass it).
        if isinstance(self.pruning, dict):
            object.__setattr__(self, "pruning", PrunerConfig.from_dict(self.pruning))

    def resolved(self) -> TrainConfig:
        """This config with every None recipe field set from its preset."""
        if self.preset not in TRAIN_PRESETS:
            raise ValueError(f"preset must be one of {sorted(TRAIN_PRESETS)}, got {self.preset!r}")
        p = TRAIN_PRESETS[self.preset]
        vals: dict[str, Any] = {}
        for name in PRESET_FIELDS:
            if getattr(self, name) is None:
                vals[name] = getattr(p, name)
        cfg = dataclasses.replace(self, **vals)  # idempotent: EMA off stays 0, not None
        if cfg.decay_steps is None:
            cfg = dataclasses.replace(cfg, decay_steps=cfg.steps)
        return cfg

    @property
    def use_ema(self) -> bool:
        return bool(self.ema_decay)

    @property
    def model_preset(self) -> str:
        return TRAIN_PRESETS[self.preset].model

    @property
    def per_worker_batch(self) -> int:
        return self.batch_size // self.workers

    @property
    def last_step(self) -> int:
        """The step this invocation ends at (`stop_after`, else `steps`)."""
        return self.steps if self.stop_after is None else self.stop_after

    def validate(self) -> None:
        """Check a resolved config; ValueError names the field and the value."""
        check("train", "preset", self.preset, one_of(tuple(sorted(TRAIN_PRESETS))))
        if TRAIN_PRESETS[self.preset].model not in MODEL_PRESETS:
            raise ValueError(f"preset {self.preset!r} names an unknown model preset")
        missing = [n for n in PRESET_FIELDS if n != "ema_decay" and getattr(self, n) is None]
        if missing:
            raise ValueError(f"validate() needs a resolved config; unset fields: {missing}")
        check_fields("train", self, TRAIN_RULES)
        divisible = Rule(lambda v: v % self.workers == 0, f"divisible by workers ({self.workers})")
        check("train", "batch_size", self.batch_size, divisible)
        within_run = Rule(
            lambda v: is_int(v) and 1 <= v <= self.steps, f"in [1, steps={self.steps}]"
        )
        for name in ("fail_at_step", "stop_after"):
            if getattr(self, name) is not None:
                check("train", name, getattr(self, name), within_run)
        check_address("train.address", self.address)
        problem = asset_id_problem(self.asset_id)  # nested ids like openpi's allowed
        check("train", "asset_id", self.asset_id, Rule(lambda _: problem is None, str(problem)))
        try:
            self.pruning.validate()
        except ValueError as e:
            raise ValueError(f"train.{e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TrainConfig:
        return TrainConfig(**d)  # __post_init__ rebuilds the nested PrunerConfig


TRAIN_RULES = {
    "data": nonempty("a LeRobot dataset folder"),
    "out": nonempty("a run folder"),
    **dict.fromkeys(("workers", "steps", "batch_size", "save_every", "log_every"), int_at_least(1)),
    **dict.fromkeys(("warmup_steps", "decay_steps", "loader_workers"), int_at_least(0)),
    "lr": real_above(0),
    **dict.fromkeys(("decay_lr", "weight_decay", "adam_eps"), real_at_least(0)),
    **dict.fromkeys(("adam_b1", "adam_b2"), real_in(0, 1, hi_open=True)),
    "clip_grad_norm": real_above(0),
    "ema_decay": optional(Rule(lambda v: is_real(v) and 0 <= v < 1, "in [0, 1) (0: off)")),
    "precision": one_of(Precision),
    "gradient_checkpointing": BOOL,
    "drop_batch_padding": BOOL,
    "image_size": optional(
        Rule(
            lambda v: is_int(v) and v >= 14 and v % 14 == 0,
            "a positive multiple of 14 (SigLIP patch size)",
        )
    ),
    "max_token_len": optional(int_at_least(2)),
    "device": one_of(Device),
    "train_log_level": one_of(("DEBUG", "INFO", "WARNING", "ERROR")),
    "cpus_per_worker": real_at_least(0),
    "gpus_per_worker": real_above(0),
    **dict.fromkeys(("threads_per_worker", "ray_num_cpus"), int_at_least(1)),
    "max_failures": Rule(lambda v: is_int(v) and v >= -1, "an integer >= -1 (-1: unlimited)"),
    "keep_checkpoints": optional(int_at_least(1)),
    "wandb_mode": one_of(WandbMode),
}
