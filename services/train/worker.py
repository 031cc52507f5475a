"""The per-worker training function that Ray Train's `TorchTrainer` runs on every rank.

Follows openpi scripts/train_pytorch.py `train_loop`: DDP with find_unused_parameters
(the last prefix layer's outputs feed nothing), one `step.Stepper` call per step (LR by
hand, mean MSE, clip, AdamW), metrics averaged over the log interval. Differences: Ray Train
sets up the process group (gloo on CPU, nccl on GPU) and the device; rank 0 checkpoints
through `ray.train.report` so a failed worker group restarts from the last checkpoint
(`ray.train.get_checkpoint()`); the pruner's noise schedule reads `step=global_step`;
randomness is re-seeded every step from (seed, step, rank) so a resumed run draws exactly
what the uninterrupted run drew.

Step numbering: `global_step` (0-indexed) is the step being taken, as in openpi (LR and
noise schedules read it); `step` = global_step + 1 = optimizer steps done, the number
in metrics.jsonl and in checkpoints/<step>/.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointUploadMode
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from policies.normalize import NormStats, load_norm_stats
from policies.pi05.checkpoint import MODEL_FILE, load_openpi_weights
from policies.pi05.config import Pi05Config
from policies.pi05.model import Pi05Model
from policies.policy import PolicyConfig
from prunepi.progress import Progress, say
from services.train.config import TrainConfig
from services.train.data import StepBatches, data_position, open_dataset
from services.train.ema import EMA
from services.train.metrics import MetricsLog, WandbLog, mean_across_ranks
from services.train.state import (
    checkpoint_dir,
    load_train_checkpoint,
    read_state_json,
    save_train_checkpoint,
)
from services.train.step import Stepper, make_optimizer


def maybe_fail(cfg: TrainConfig, run: Path, step: int, rank: int, world: int) -> None:
    """Debug fault: rank 1 (rank 0 when alone) dies once, hard, when about to take `step`.

    The marker file makes it happen once per RUN, so the restarted group goes on.
    """
    if cfg.fail_at_step != step or rank != min(1, world - 1):
        return
    marker = run / f".fail_at_step_{step}.done"
    if marker.exists():
        return
    marker.write_text(str(os.getpid()))
    os._exit(1)


def build_model(model_cfg: Pi05Config, cfg: TrainConfig) -> Pi05Model:
    torch.manual_seed(cfg.seed)  # identical init on every rank (DDP broadcasts rank 0 anyway)
    model = Pi05Model(model_cfg)
    if cfg.init_from:
        path = Path(cfg.init_from)
        # An openpi checkpoint has no pruner weights: a learnable scorer starts fresh.
        load_openpi_weights(model, path / MODEL_FILE if path.is_dir() else path, pruner="init")
    model.gradient_checkpointing = cfg.gradient_checkpointing
    model.drop_batch_padding = cfg.drop_batch_padding
    return model


def progress_line(metrics: dict[str, float], progress: Progress) -> str:
    """One terse line for the terminal every ten log periods (the full set is in
    RUN/metrics.jsonl and wandb): steps, loss, kept tokens, throughput, rate and ETA."""
    kept = metrics.get("prune/kept_tokens_overall_mean")
    return (
        f"[train] {progress.line(int(metrics['step']))}  "
        f"loss {metrics['train/loss']:.4f}  "
        + (f"kept {kept:.1f}  " if kept is not None else "")
        + f"{metrics['train/samples_per_s']:.0f} samples/s"
    )


@dataclass
class Worker:
    """What one rank's loop works with: built once by `setup`, read by every step."""

    cfg: TrainConfig
    run: Path
    rank: int
    world: int
    device: torch.device
    policy_cfg: PolicyConfig
    norm_stats: dict[str, NormStats]
    tokenizer_path: Path
    model: Pi05Model
    opt: torch.optim.Optimizer
    ema: EMA | None
    net: nn.Module  # `model`, or its DDP wrapper
    batches: StepBatches
    start_step: int  # optimizer steps already done (0, or the resumed checkpoint's)


def setup(config: dict[str, Any]) -> Worker:
    """The model, optimizer, EMA and data of this rank, resumed where the run left off."""
    cfg = TrainConfig.from_dict(config["cfg"])
    plan = config["plan"]
    torch.set_num_threads(cfg.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    model_cfg = Pi05Config.from_dict(plan["model"])
    policy_cfg = PolicyConfig(**plan["policy"])
    norm_stats = load_norm_stats(Path(plan["norm_stats"]))
    model = build_model(model_cfg, cfg).to(device)
    opt = make_optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay) if cfg.use_ema else None
    start_step = resume(plan.get("resume_from"), model, opt, ema, rank)
    batches = StepBatches(
        open_dataset(cfg.data, model_cfg.action_horizon),
        model_cfg,
        policy_cfg,
        Path(plan["tokenizer"]),
        norm_stats,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        rank=rank,
        world=world,
    )
    return Worker(
        cfg=cfg, run=Path(plan["run"]), rank=rank, world=world, device=device,
        policy_cfg=policy_cfg, norm_stats=norm_stats, tokenizer_path=Path(plan["tokenizer"]),
        model=model, opt=opt, ema=ema, net=wrap_ddp(model, world), batches=batches,
        start_step=start_step,
    )  # fmt: skip


def resume(
    resume_from: str | None,
    model: Pi05Model,
    opt: torch.optim.Optimizer,
    ema: EMA | None,
    rank: int,
) -> int:
    """Load the newer of Ray's latest checkpoint (after a worker-group restart, or when Ray
    restored RUN's run state) and the one the driver picked for --resume; -> its step (0
    when there is none)."""
    ray_ckpt = ray.train.get_checkpoint()
    with ray_ckpt.as_directory() if ray_ckpt is not None else nullcontext(None) as ray_folder:
        # A folder Ray remembers may be gone (pruned by keep_checkpoints, replaced by Tune's
        # PBT); one that exists but is broken is an error (read_state_json raises).
        candidates = [Path(p) for p in (ray_folder, resume_from) if p and Path(p).is_dir()]
        if not candidates:
            return 0
        folder = max(candidates, key=lambda p: read_state_json(p)["step"])
        step = load_train_checkpoint(folder, model, opt, ema)["step"]
    if rank == 0:
        say(f"[train] resuming from {folder} at step {step}")
    return step


def wrap_ddp(model: Pi05Model, world: int) -> nn.Module:
    """DDP over Ray Train's process group (find_unused_parameters: the last prefix layer's
    outputs feed nothing, as in openpi); the bare model when alone."""
    if world == 1:
        return model
    net = ray.train.torch.prepare_model(
        model, move_to_device=False, parallel_strategy_kwargs={"find_unused_parameters": True}
    )
    assert isinstance(net, DistributedDataParallel) and net.module is model
    return net


@dataclass
class MetricWindow:
    """Step metrics summed over one log interval, then averaged across steps and ranks."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    steps: int = 0
    seconds: float = 0.0

    def add(self, step_metrics: dict[str, float], seconds: float) -> None:
        for k, v in step_metrics.items():
            self.sums[k] += v
        self.steps += 1
        self.seconds += seconds

    def close(self, w: Worker, lr: float, step: int) -> dict[str, float]:
        """-> the interval's metrics (the same on every rank: it all-reduces); resets."""
        metrics = {k: v / self.steps for k, v in self.sums.items()}
        metrics["train/samples_per_s"] = w.cfg.batch_size * self.steps / self.seconds
        metrics["train/step_s"] = self.seconds / self.steps
        metrics = mean_across_ranks(metrics, w.device)
        metrics["train/lr"] = lr
        metrics["step"] = step
        self.sums.clear()
        self.steps, self.seconds = 0, 0.0
        return metrics


def save(w: Worker, step: int, metrics: dict[str, float]) -> Checkpoint:
    """Rank 0 writes RUN/checkpoints/<step>/ (services/train/state.py) -> Ray's handle."""
    cfg = w.cfg
    state = {
        "step": step,
        "data": {
            **data_position(w.batches.num_samples, cfg.batch_size, step),
            "num_samples": w.batches.num_samples,
            "batch_size": cfg.batch_size,
        },
        # No generator state lives across steps: every step re-seeds from
        # SeedSequence([seed, global_step, rank]) (step_seeds).
        "rng": {"scheme": "SeedSequence([seed, global_step, rank])", "seed": cfg.seed},
        "world_size": w.world,
        "ema_decay": cfg.ema_decay,
        "train_config": cfg.to_dict(),
        "metrics": metrics,
    }
    folder = save_train_checkpoint(
        checkpoint_dir(w.run, step), w.model, w.opt, w.ema, w.policy_cfg, w.tokenizer_path,
        w.norm_stats, state,
    )  # fmt: skip
    return Checkpoint.from_directory(str(folder))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    w = setup(config)
    cfg = w.cfg
    loader = torch.utils.data.DataLoader(
        w.batches,
        batch_size=None,
        sampler=range(w.start_step, cfg.last_step),
        num_workers=cfg.loader_workers,
    )
    log, wb = None, None
    if w.rank == 0:
        log = MetricsLog(w.run)
        log.truncate_after(w.start_step)
        wb = WandbLog(w.run, cfg.wandb_mode, cfg.wandb_project, cfg.to_dict())
    w.model.train()
    stepper = Stepper(cfg, w.model, w.net, w.opt, w.ema, w.rank, w.device)
    window = MetricWindow()
    progress = Progress(cfg.last_step, "steps", done0=w.start_step)
    batch_iter = iter(loader)
    for global_step in range(w.start_step, cfg.last_step):
        step = global_step + 1
        maybe_fail(cfg, w.run, step, w.rank, w.world)
        t0 = time.perf_counter()
        obs, actions = next(batch_iter)  # this rank's slice: (b, ...) and (b, H, action_dim)
        window.add(stepper(obs, actions, global_step), time.perf_counter() - t0)
        saving = step % cfg.save_every == 0 or step == cfg.last_step
        if not (saving or step % cfg.log_every == 0):
            continue
        metrics = window.close(w, stepper.lr(global_step), step)
        checkpoint = save(w, step, metrics) if saving and w.rank == 0 else None
        if w.rank == 0:
            log.write(metrics)
            wb.log(metrics, step=step)
            if step % (10 * cfg.log_every) == 0 or step == cfg.last_step:
                say(progress_line(metrics, progress))
        # Every rank reports (it is a barrier); rank 0 hands Ray the checkpoint it already
        # wrote inside the run folder, so Ray registers it without copying (NO_UPLOAD).
        ray.train.report(
            metrics,
            checkpoint=checkpoint,
            checkpoint_dir_name=f"checkpoints/{step}" if saving else None,
            checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD,
        )
    if w.rank == 0:
        log.close()
        wb.finish()
