"""The driver: `run_train(cfg) -> RUN`. Prepares what every worker shares, then runs Ray
Train's `TorchTrainer` over `worker.train_loop_per_worker`.

Once, in the driver (openpi computes norm stats in a separate script,
scripts/compute_norm_stats.py, before training):
  - the model config (preset, image size, precision, pruner; sizes from `init_from`),
  - norm stats of the dataset's state and actions -> RUN/assets/<asset_id>/norm_stats.json,
  - the tokenizer: the user's PaliGemma .model, an init_from prunepi checkpoint's own, or
    (from scratch only) sentencepiece fitted on the task strings
    -> RUN/assets/<asset_id>/tokenizer.model (copied into every checkpoint),
  - for --resume: the latest checkpoint, verified (CheckpointError names the file/key).

Ray (prunepi.env.connect_ray): with `--address`, inside `ray job submit` (RAY_ADDRESS is
set) or with RAY_ADDRESS exported, join that cluster; else start an embedded Ray on 127.0.0.1
and shut it down afterwards. Ray's run folder IS the RUN
folder (storage_path = RUN's parent, name = RUN's name), so the checkpoints rank 0 writes
to RUN/checkpoints/<step>/ are Ray-managed checkpoints: FailureConfig restarts resume from
them, CheckpointConfig(num_to_keep) prunes them. A multi-node cluster therefore needs RUN
on storage every node sees (NFS), as Ray requires of a local storage_path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from policies.loading import (
    PALIGEMMA_TOKENIZER,
    check_tokenizer_fits,
    checkpoint_tokenizer,
    norm_stats_file,
)
from policies.normalize import NormStats, load_norm_stats, save_norm_stats
from policies.pi05.checkpoint import MODEL_FILE, config_from_checkpoint
from policies.pi05.config import Pi05Config, from_openpi_fixture_config, get_preset
from policies.policy import CONFIG_FILE, SAMPLER_FIELDS, PolicyConfig
from policies.tokenizer import PromptTokenizer, train_sentencepiece
from prunepi import env
from services.train.config import TrainConfig
from services.train.data import compute_norm_stats, open_dataset, task_strings
from services.train.state import list_checkpoints, prune_checkpoints, verify_checkpoint

RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train V2's run state in RUN/
CONFIG_SNAPSHOT = "train_config.json"


def init_config(path: Path, base: Pi05Config) -> Pi05Config:
    """Model sizes of the checkpoint to fine-tune: its config.json when it has one (a prunepi
    checkpoint's, or an openpi fixture's: exact, head counts included), else read off
    openpi's model.safetensors (`config_from_checkpoint`: head counts come from `base`, the
    preset, so pick the preset of the checkpoint's family, e.g. pi05_libero)."""
    folder = path if path.is_dir() else path.parent
    cfg_file = folder / CONFIG_FILE
    if cfg_file.is_file():
        try:
            raw = json.loads(cfg_file.read_text())
            if "model" in raw:  # ours: {"model": Pi05Config, "policy": ...}
                return Pi05Config.from_dict(raw["model"])
            if "paligemma" in raw and "vision" in raw:  # the openpi fixtures' format
                return dataclasses.replace(from_openpi_fixture_config(raw), pruning=base.pruning)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"train.init_from: {cfg_file} is not a model config ({e})") from e
    return config_from_checkpoint(folder / MODEL_FILE if path.is_dir() else path, base)


def init_sampler(cfg: TrainConfig) -> dict[str, Any]:
    """The sampler fields of `init_from`'s prunepi config.json; {} for none (openpi's): a
    fine-tune samples as the checkpoint it starts from (the reference's noise_seed was chosen
    on the selection block after training, reports/reference.md)."""
    if not cfg.init_from:
        return {}
    path = Path(cfg.init_from)
    cfg_file = (path if path.is_dir() else path.parent) / CONFIG_FILE
    if not cfg_file.is_file():
        return {}
    policy = json.loads(cfg_file.read_text()).get("policy", {})
    return {k: policy[k] for k in SAMPLER_FIELDS if k in policy}


def model_config(cfg: TrainConfig) -> Pi05Config:
    """Preset sizes (or `init_from`'s), image size, prompt slots, precision, and the pruner
    with its noise schedule spanning the run (LightVLA: `1 - step / max_steps`)."""
    mc = get_preset(cfg.model_preset)
    if cfg.init_from:  # overrides below that disagree with it fail when the weights load
        mc = init_config(Path(cfg.init_from), mc)
    if cfg.image_size is not None:
        vision = dataclasses.replace(mc.vision, image_size=cfg.image_size)
        mc = dataclasses.replace(mc, vision=vision)
    if cfg.max_token_len is not None:
        mc = dataclasses.replace(mc, max_token_len=cfg.max_token_len)
    pruning = cfg.pruning
    if cfg.noise_steps_from_run:
        pruning = dataclasses.replace(
            pruning, noise=dataclasses.replace(pruning.noise, total_steps=cfg.steps)
        )
    mc = dataclasses.replace(mc, dtype=cfg.precision, pruning=pruning)
    mc.validate()
    return mc


def init_weights(path: Path) -> Path:
    """`init_from` is a checkpoint folder or its model.safetensors."""
    return path / MODEL_FILE if path.is_dir() else path


def tokenizer_source(cfg: TrainConfig) -> Path | None:
    """The sentencepiece model to copy into RUN; None: fit one on the task strings.

    Fitting is right only from scratch: an `init_from` checkpoint's token embedding was
    trained on its own tokenizer's ids (PaliGemma's, for openpi's π0.5 and PaliGemma), which
    fitted ids would index at unrelated rows. A prunepi checkpoint carries its tokenizer.
    """
    if cfg.tokenizer_path:
        return Path(cfg.tokenizer_path)
    if not cfg.init_from:
        return None
    path = Path(cfg.init_from)
    own = checkpoint_tokenizer(path if path.is_dir() else path.parent)
    if own is not None:
        return own
    raise ValueError(
        f"train.tokenizer_path is empty and train.init_from {cfg.init_from} is not a prunepi "
        f"checkpoint carrying its own tokenizer (assets/<asset_id>/tokenizer.model): a "
        f"sentencepiece model fitted on the task strings would give ids that index unrelated "
        f"rows of its token embedding. Pass tokenizer_path: {PALIGEMMA_TOKENIZER}"
    )


def given_norm_stats(cfg: TrainConfig, ds) -> dict[str, NormStats] | None:
    """`cfg.norm_stats` read and checked against the dataset's widths; None when not given."""
    if not cfg.norm_stats:
        return None
    path = norm_stats_file(cfg.norm_stats, "train.norm_stats")
    stats = load_norm_stats(path)
    for key, width in (("state", ds.state_dim), ("actions", ds.action_dim)):
        got = len(stats[key].mean) if key in stats else None
        if got != width:
            raise ValueError(
                f"train.norm_stats {path}: {key!r} has {got} dims, the dataset {cfg.data} "
                f"has {width}"
            )
    return stats


def prepare_assets(
    cfg: TrainConfig, run: Path, model_cfg: Pi05Config, reuse: bool = True
) -> tuple[PolicyConfig, Path, Path]:
    """-> policy config, norm_stats.json, tokenizer.model. `reuse`: keep the ones RUN has
    (a resumed run must normalize and tokenize exactly as its checkpoints did)."""
    data = Path(cfg.data)
    ds = open_dataset(data, model_cfg.action_horizon)
    state_dim, action_dim = ds.state_dim, ds.action_dim
    if action_dim > model_cfg.action_dim:
        raise ValueError(
            f"dataset actions have {action_dim} dims, more than model action_dim "
            f"{model_cfg.action_dim}"
        )
    policy_cfg = PolicyConfig(
        asset_id=cfg.asset_id,
        state_dim=state_dim,
        env_action_dim=action_dim,
        **init_sampler(cfg),
    )
    assets = run / "assets" / cfg.asset_id
    if not reuse:
        shutil.rmtree(assets, ignore_errors=True)
    tok_path = assets / policy_cfg.tokenizer_file
    # Decided before the (slow) norm stats, so a refused tokenizer fails at once.
    tok_source = None if tok_path.is_file() else tokenizer_source(cfg)
    stats_path = assets / "norm_stats.json"
    if not stats_path.is_file():
        save_norm_stats(given_norm_stats(cfg, ds) or compute_norm_stats(data), stats_path)
    if not tok_path.is_file():
        assets.mkdir(parents=True, exist_ok=True)
        if tok_source is not None:
            shutil.copyfile(tok_source, tok_path)
        else:
            train_sentencepiece(task_strings(data), tok_path, model_cfg.vocab_size)
    if cfg.init_from:  # its embedding rows, from the safetensors header
        check_tokenizer_fits(tok_source or tok_path, init_weights(Path(cfg.init_from)))
    vocab = PromptTokenizer(tok_path, model_cfg.max_token_len).vocab_size
    if vocab > model_cfg.vocab_size:
        raise ValueError(
            f"tokenizer {cfg.tokenizer_path or tok_path} has {vocab} pieces, more than the "
            f"model's vocab_size {model_cfg.vocab_size}"
        )
    return policy_cfg, stats_path, tok_path


def prepare_resume(cfg: TrainConfig, run: Path, model_cfg: Pi05Config) -> dict[str, Any] | None:
    """Pick (and verify) the checkpoint to resume from; refuse to overwrite a run."""
    found = list_checkpoints(run)
    if found and not cfg.resume:
        raise ValueError(
            f"train.out {run} already holds checkpoints (latest: step {found[-1][0]}); pass "
            f"resume=True to continue that run, or choose another out"
        )
    if not found:
        if cfg.resume:
            print(f"[train] resume: {run} has no checkpoint yet; starting at step 0", flush=True)
        # A fresh run: forget Ray state and fault markers left by an earlier attempt.
        (run / RAY_SNAPSHOT).unlink(missing_ok=True)
        for marker in run.glob(".fail_at_step_*.done"):
            marker.unlink()
        return None
    folder = found[-1][1]
    state = verify_checkpoint(folder, model_cfg, ema=cfg.use_ema)
    old = state.get("train_config", {})
    changed = [k for k in ("batch_size", "seed", "data") if k in old and old[k] != getattr(cfg, k)]
    if changed:
        print(f"[train] resume: {changed} changed since the checkpoint: the data order differs")
    return {"path": str(folder), "step": state["step"]}


def use_gpu(cfg: TrainConfig) -> bool:
    import ray

    if cfg.device == "cpu":
        return False
    if cfg.device == "cuda":
        return True
    return ray.cluster_resources().get("GPU", 0) >= cfg.workers * cfg.gpus_per_worker


def absolute(cfg: TrainConfig) -> TrainConfig:
    """Workers run in other folders (a job's working dir, Ray's session dir)."""

    def ab(p: str) -> str:
        return str(Path(p).expanduser().resolve()) if p else p

    return dataclasses.replace(
        cfg,
        data=ab(cfg.data),
        out=ab(cfg.out),
        init_from=ab(cfg.init_from),
        tokenizer_path=ab(cfg.tokenizer_path),
    )


# Ray Train V2 answers each `ray.train.report` on its controller's poll, every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s): measured here, 10 reports took 1.8 s each
# at the default and 0.12 s at 0.1. Ray propagates the variable from this driver to the
# controller and workers, on a local Ray and inside `ray job submit` alike.
REPORT_POLL_S = "0.1"


def run_train(cfg: TrainConfig) -> Path:
    """Train; returns the RUN folder (checkpoints/<step>/, metrics.jsonl, wandb/)."""
    env.apply_defaults()
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", REPORT_POLL_S)
    cfg = absolute(cfg.resolved())
    cfg.validate()
    for name in ("data", "init_from", "tokenizer_path"):
        path = getattr(cfg, name)
        if path and not Path(path).exists():
            raise FileNotFoundError(f"train.{name} does not exist: {path}")
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    model_cfg = model_config(cfg)
    resume = prepare_resume(cfg, run, model_cfg)
    if resume is not None and resume["step"] >= cfg.last_step:
        print(f"[train] {run} is already at step {resume['step']} >= {cfg.last_step}")
        return run
    policy_cfg, stats_path, tok_path = prepare_assets(cfg, run, model_cfg, reuse=resume is not None)
    (run / CONFIG_SNAPSHOT).write_text(
        json.dumps({"train": cfg.to_dict(), "model": model_cfg.to_dict()}, indent=1)
    )
    plan = {
        "run": str(run),
        "model": model_cfg.to_dict(),
        "policy": dataclasses.asdict(policy_cfg),
        "norm_stats": str(stats_path),
        "tokenizer": str(tok_path),
        "resume_from": resume["path"] if resume else None,
    }

    import ray

    owned = env.connect_ray(cfg.address, num_cpus=cfg.ray_num_cpus)
    try:
        result = build_trainer(cfg, run, plan).fit()
        if result.error is not None:
            raise result.error
    finally:
        if owned:
            ray.shutdown()
    prune_checkpoints(run, cfg.keep_checkpoints)
    return run


def build_trainer(cfg: TrainConfig, run: Path, plan: dict[str, Any]):
    """Ray Train's TorchTrainer over `worker.train_loop_per_worker`: DDP ranks on CPUs
    (gloo) or GPUs (nccl), restarts from the last checkpoint on failure, Ray's run state
    beside RUN."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from services.train.worker import train_loop_per_worker

    gpu = use_gpu(cfg)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "plan": plan},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers,
            use_gpu=gpu,
            resources_per_worker={
                "CPU": cfg.cpus_per_worker,
                **({"GPU": cfg.gpus_per_worker} if gpu else {}),
            },
        ),
        run_config=ray.train.RunConfig(
            name=run.name,
            storage_path=str(run.parent),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            logging_config=ray.train.LoggingConfig(log_level=cfg.train_log_level),
        ),
    )


__all__ = ["model_config", "run_train"]
