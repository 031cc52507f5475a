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
import math
from dataclasses import dataclass, field
from typing import Any

from policies.pi05.config import PRESETS as MODEL_PRESETS
from policies.policy import asset_id_problem
from policies.pruning.config import PrunerConfig
from prunepi.env import check_address

PRECISIONS = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
WANDB_MODES = ("offline", "online", "disabled")


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
    # spatial suite at 112 px, 200 demos a task, trained unpruned on 2 CPU workers in about 80
    # minutes. A higher LR than `tiny` (the demo measured 1e-3 too slow for short CPU runs), a
    # long cosine to a low final LR (success rose only as the LR fell:
    # reports/reference_attempt_1.md) and an EMA of the weights, which openpi evaluates
    # (`pi05_libero`: 0.999).
    "reference": TrainPreset(
        model="tiny",
        steps=9000,
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
    precision: str | None = None  # "float32" | "bfloat16"
    gradient_checkpointing: bool | None = None  # activation checkpointing in the joint layers
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
    device: str = "auto"  # "auto" (cuda when the cluster has GPUs) | "cpu" | "cuda"
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
    wandb_mode: str = "offline"  # "offline" (files in RUN/wandb) | "online" | "disabled"
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
        if self.preset not in TRAIN_PRESETS:
            raise ValueError(f"preset must be one of {sorted(TRAIN_PRESETS)}, got {self.preset!r}")
        if TRAIN_PRESETS[self.preset].model not in MODEL_PRESETS:
            raise ValueError(f"preset {self.preset!r} names an unknown model preset")
        missing = [n for n in PRESET_FIELDS if n != "ema_decay" and getattr(self, n) is None]
        if missing:
            raise ValueError(f"validate() needs a resolved config; unset fields: {missing}")
        _check(bool(self.data), "data", "a LeRobot dataset folder", self.data)
        _check(bool(self.out), "out", "a run folder", self.out)
        for name in ("workers", "steps", "batch_size", "save_every", "log_every"):
            _check(
                _is_int(getattr(self, name)) and getattr(self, name) >= 1,
                name,
                ">= 1",
                getattr(self, name),
            )
        for name in ("warmup_steps", "decay_steps", "loader_workers"):
            _check(
                _is_int(getattr(self, name)) and getattr(self, name) >= 0,
                name,
                ">= 0",
                getattr(self, name),
            )
        _check(
            self.batch_size % self.workers == 0,
            "batch_size",
            f"divisible by workers ({self.workers})",
            self.batch_size,
        )
        for name in ("lr", "decay_lr", "weight_decay", "adam_eps"):
            v = getattr(self, name)
            _check(_is_real(v) and v >= 0, name, ">= 0", v)
        _check(_is_real(self.lr) and self.lr > 0, "lr", "> 0", self.lr)
        for name in ("adam_b1", "adam_b2"):
            v = getattr(self, name)
            _check(_is_real(v) and 0 <= v < 1, name, "in [0, 1)", v)
        _check(
            _is_real(self.clip_grad_norm) and self.clip_grad_norm > 0,
            "clip_grad_norm",
            "> 0",
            self.clip_grad_norm,
        )
        if self.ema_decay is not None:
            _check(
                _is_real(self.ema_decay) and 0 <= self.ema_decay < 1,
                "ema_decay",
                "in [0, 1) (0: off) or None",
                self.ema_decay,
            )
        _check(self.precision in PRECISIONS, "precision", f"one of {PRECISIONS}", self.precision)
        _check(
            isinstance(self.gradient_checkpointing, bool),
            "gradient_checkpointing",
            "a bool",
            self.gradient_checkpointing,
        )
        if self.image_size is not None:
            _check(
                _is_int(self.image_size) and self.image_size >= 14 and self.image_size % 14 == 0,
                "image_size",
                "a positive multiple of 14 (SigLIP patch size)",
                self.image_size,
            )
        if self.max_token_len is not None:
            _check(
                _is_int(self.max_token_len) and self.max_token_len >= 2,
                "max_token_len",
                ">= 2",
                self.max_token_len,
            )
        _check(self.device in DEVICES, "device", f"one of {DEVICES}", self.device)
        levels = ("DEBUG", "INFO", "WARNING", "ERROR")
        _check(
            self.train_log_level in levels,
            "train_log_level",
            f"one of {levels}",
            self.train_log_level,
        )
        _check(
            _is_real(self.cpus_per_worker) and self.cpus_per_worker >= 0,
            "cpus_per_worker",
            ">= 0",
            self.cpus_per_worker,
        )
        _check(
            _is_real(self.gpus_per_worker) and 0 < self.gpus_per_worker,
            "gpus_per_worker",
            "> 0",
            self.gpus_per_worker,
        )
        for name in ("threads_per_worker", "ray_num_cpus"):
            v = getattr(self, name)
            _check(_is_int(v) and v >= 1, name, ">= 1", v)
        check_address("train.address", self.address)
        _check(
            _is_int(self.max_failures) and self.max_failures >= -1,
            "max_failures",
            ">= -1 (-1: unlimited)",
            self.max_failures,
        )
        if self.keep_checkpoints is not None:
            _check(
                _is_int(self.keep_checkpoints) and self.keep_checkpoints >= 1,
                "keep_checkpoints",
                ">= 1 or None",
                self.keep_checkpoints,
            )
        _check(
            self.wandb_mode in WANDB_MODES, "wandb_mode", f"one of {WANDB_MODES}", self.wandb_mode
        )
        if self.fail_at_step is not None:
            _check(
                _is_int(self.fail_at_step) and 1 <= self.fail_at_step <= self.steps,
                "fail_at_step",
                f"in [1, steps={self.steps}]",
                self.fail_at_step,
            )
        if self.stop_after is not None:
            _check(
                _is_int(self.stop_after) and 1 <= self.stop_after <= self.steps,
                "stop_after",
                f"in [1, steps={self.steps}]",
                self.stop_after,
            )
        problem = asset_id_problem(self.asset_id)  # nested ids like openpi's allowed
        _check(problem is None, "asset_id", problem, self.asset_id)
        try:
            self.pruning.validate()
        except ValueError as e:
            raise ValueError(f"train.{e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TrainConfig:
        return TrainConfig(**d)  # __post_init__ rebuilds the nested PrunerConfig


def _check(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"train.{name} must be {rule}, got {value!r}")


def _is_real(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
