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
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointUploadMode
from torch.nn.parallel import DistributedDataParallel

from policies.normalize import load_norm_stats
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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = TrainConfig.from_dict(config["cfg"])
    plan = config["plan"]
    torch.set_num_threads(cfg.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    run = Path(plan["run"])
    model_cfg = Pi05Config.from_dict(plan["model"])
    policy_cfg = PolicyConfig(**plan["policy"])
    norm_stats = load_norm_stats(Path(plan["norm_stats"]))
    tokenizer_path = Path(plan["tokenizer"])

    model = build_model(model_cfg, cfg).to(device)
    opt = make_optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay) if cfg.use_ema else None

    # -- where to start: Ray's latest checkpoint (after a worker-group restart, or when Ray
    # restored RUN's run state), else the one the driver picked for --resume.
    start_step = 0
    ray_ckpt = ray.train.get_checkpoint()
    resume_from = plan.get("resume_from")
    with ray_ckpt.as_directory() if ray_ckpt is not None else nullcontext(None) as ray_folder:
        # A folder Ray remembers may be gone (pruned by keep_checkpoints, replaced by Tune's
        # PBT); one that exists but is broken is an error (read_state_json raises).
        candidates = [Path(p) for p in (ray_folder, resume_from) if p and Path(p).is_dir()]
        if candidates:  # the newer one (Ray may not have registered the driver's pick)
            folder = max(candidates, key=lambda p: read_state_json(p)["step"])
            start_step = load_train_checkpoint(folder, model, opt, ema)["step"]
            if rank == 0:
                say(f"[train] resuming from {folder} at step {start_step}")

    ddp = world > 1
    net = (
        ray.train.torch.prepare_model(
            model, move_to_device=False, parallel_strategy_kwargs={"find_unused_parameters": True}
        )
        if ddp
        else model
    )
    assert (net.module if isinstance(net, DistributedDataParallel) else net) is model

    batches = StepBatches(
        open_dataset(cfg.data, model_cfg.action_horizon),
        model_cfg,
        policy_cfg,
        tokenizer_path,
        norm_stats,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        rank=rank,
        world=world,
    )
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=range(start_step, cfg.last_step),
        num_workers=cfg.loader_workers,
    )

    log = MetricsLog(run) if rank == 0 else None
    wb = None
    if rank == 0:
        log.truncate_after(start_step)
        wb = WandbLog(run, cfg.wandb_mode, cfg.wandb_project, cfg.to_dict())

    model.train()
    stepper = Stepper(cfg, model, net, opt, ema, rank, device)
    acc: dict[str, float] = defaultdict(float)
    n_acc, t_acc = 0, 0.0
    progress = Progress(cfg.last_step, "steps", done0=start_step)
    batch_iter = iter(loader)
    for global_step in range(start_step, cfg.last_step):
        step = global_step + 1
        maybe_fail(cfg, run, step, rank, world)
        t0 = time.perf_counter()
        obs, actions = next(batch_iter)  # this rank's slice: (b, ...) and (b, H, action_dim)
        step_metrics = stepper(obs, actions, global_step)
        t_acc += time.perf_counter() - t0
        for k, v in step_metrics.items():
            acc[k] += v
        n_acc += 1

        save = step % cfg.save_every == 0 or step == cfg.last_step
        if not (save or step % cfg.log_every == 0):
            continue
        metrics = {k: v / n_acc for k, v in acc.items()}
        metrics["train/samples_per_s"] = cfg.batch_size * n_acc / t_acc
        metrics["train/step_s"] = t_acc / n_acc
        metrics = mean_across_ranks(metrics, device)
        metrics["train/lr"] = stepper.lr(global_step)
        metrics["step"] = step
        acc.clear()
        n_acc, t_acc = 0, 0.0

        checkpoint = None
        if save and rank == 0:
            folder = save_train_checkpoint(
                checkpoint_dir(run, step),
                model,
                opt,
                ema,
                policy_cfg,
                tokenizer_path,
                norm_stats,
                {
                    "step": step,
                    "data": {
                        **data_position(batches.num_samples, cfg.batch_size, step),
                        "num_samples": batches.num_samples,
                        "batch_size": cfg.batch_size,
                    },
                    # No generator state lives across steps: every step re-seeds from
                    # SeedSequence([seed, global_step, rank]) (step_seeds).
                    "rng": {"scheme": "SeedSequence([seed, global_step, rank])", "seed": cfg.seed},
                    "world_size": world,
                    "ema_decay": cfg.ema_decay,
                    "train_config": cfg.to_dict(),
                    "metrics": metrics,
                },
            )
            checkpoint = Checkpoint.from_directory(str(folder))
        if rank == 0:
            log.write(metrics)
            wb.log(metrics, step=step)
            if step % (10 * cfg.log_every) == 0 or step == cfg.last_step:
                say(progress_line(metrics, progress))
        # Every rank reports (it is a barrier); rank 0 hands Ray the checkpoint it already
        # wrote inside the run folder, so Ray registers it without copying (NO_UPLOAD).
        ray.train.report(
            metrics,
            checkpoint=checkpoint,
            checkpoint_dir_name=f"checkpoints/{step}" if save else None,
            checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD,
        )

    if rank == 0:
        log.close()
        wb.finish()
