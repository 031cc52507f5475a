"""Training data: LeRobot dataset -> openpi input transforms -> per-rank batches.

Order (openpi data_loader.py shuffles per epoch; we make it a pure function of the step):
  epoch e = step // steps_per_epoch visits `permutation(seed, e)` of the dataset in global
  batches of `batch_size`; rank r of W takes slice [r*b, (r+1)*b) of each global batch
  (b = batch_size / W). So every rank's shard is disjoint and deterministic, a resumed
  run sees exactly the batches the uninterrupted run would have, and the global batch at
  a step does not depend on the number of workers. The last partial batch of an epoch is
  dropped (openpi's loader drops it too).

Transforms: `policies.policy.build_observation` (resize with pad, quantile-normalized
state padded to action_dim, tokenized prompt); actions are quantile-normalized with the
dataset's stats then zero-padded to action_dim (openpi Normalize + PadActions).
Augmentation (openpi preprocessing, train=True) runs afterwards on the worker's device
with a seeded generator (`augment_observation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.normalize import NormStats
from policies.pi05.config import Pi05Config
from policies.pi05.model import Observation
from policies.policy import PolicyConfig, build_observation
from policies.tokenizer import PromptTokenizer
from policies.transforms import augment_images

# A dataset this small on disk is held whole in each worker's memory (its episodes as
# stored: PNG bytes, vectors). Random batches touch a new episode for nearly every sample,
# and re-reading parquet was about a tenth of a reference step (cProfile, 800 demos).
CACHE_ALL_BYTES = 1 << 30


def open_dataset(root: str | Path, action_horizon: int):
    """The LeRobot reader of envs/ (one sample: raw observation dict + `actions` (H, 7))."""
    from envs.dataset import LeRobotDataset

    size = sum(f.stat().st_size for f in Path(root).rglob("*.parquet"))
    cache = 1 << 20 if size <= CACHE_ALL_BYTES else 16
    return LeRobotDataset(root, action_horizon=action_horizon, cache_episodes=cache)


def read_column(root: str | Path, feature: str) -> np.ndarray:
    """Our feature ("state" | "actions") over every frame of the episodes the metadata lists:
    (T, D) float32, read from the parquet files (no image or video decoding), any LeRobot
    version envs.dataset reads. LeRobot's names ("observation.state", "action") resolve as
    envs.dataset resolves them."""
    return open_dataset(root, 1).column(feature)


def task_strings(root: str | Path) -> list[str]:
    """The dataset's task instructions (meta/tasks.jsonl, v3.0 meta/tasks.parquet)."""
    return sorted(set(open_dataset(root, 1).tasks.values()))


def compute_norm_stats(root: str | Path) -> dict[str, NormStats]:
    """Quantile stats of state (T, 8) and actions (T, 7) over every frame (openpi
    scripts/compute_norm_stats.py; exact quantiles instead of its histogram)."""
    return {k: NormStats.from_data(read_column(root, k)) for k in ("state", "actions")}


# ---------------------------------------------------------------------------------------
# Order


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    if num_samples < batch_size:
        raise ValueError(
            f"train.batch_size ({batch_size}) must not exceed the dataset's {num_samples} samples"
        )
    return num_samples // batch_size


def global_batch(num_samples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Dataset indices of the global batch at 0-indexed `step`: (batch_size,) int64."""
    spe = steps_per_epoch(num_samples, batch_size)
    epoch, k = divmod(step, spe)
    perm = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return perm[k * batch_size : (k + 1) * batch_size]


def rank_batch(
    num_samples: int, batch_size: int, seed: int, step: int, rank: int, world: int
) -> np.ndarray:
    """This rank's disjoint slice of the global batch: (batch_size // world,)."""
    b = batch_size // world
    return global_batch(num_samples, batch_size, seed, step)[rank * b : (rank + 1) * b]


def data_position(num_samples: int, batch_size: int, step: int) -> dict[str, int]:
    """Where `step` (next step to run) is in the data, for train_state.json."""
    spe = steps_per_epoch(num_samples, batch_size)
    return {"epoch": step // spe, "batch_in_epoch": step % spe, "steps_per_epoch": spe}


# ---------------------------------------------------------------------------------------
# Batches


def normalize_actions(actions: np.ndarray, stats: NormStats, action_dim: int) -> torch.Tensor:
    """(B, H, A_env) raw -> (B, H, action_dim) quantile-normalized, zero-padded."""
    a = stats.normalize(np.asarray(actions, dtype=np.float32))
    out = np.zeros((*a.shape[:-1], action_dim), dtype=np.float32)
    out[..., : a.shape[-1]] = a
    return torch.from_numpy(out)


class StepBatches(torch.utils.data.Dataset):
    """Map-style: item `step` -> this rank's (Observation, actions) for that global step.

    Used with a sequential sampler over range(start_step, total_steps), so a torch
    DataLoader can prefetch in worker processes without changing the order.
    """

    def __init__(
        self,
        dataset: Any,  # envs.dataset.LeRobotDataset (len, [i] -> raw dict + "actions")
        model_cfg: Pi05Config,
        policy_cfg: PolicyConfig,
        tokenizer_path: str | Path,
        norm_stats: dict[str, NormStats],
        *,
        batch_size: int,
        seed: int,
        rank: int,
        world: int,
    ):
        self.dataset = dataset
        self.model_cfg = model_cfg
        self.policy_cfg = policy_cfg
        self.tokenizer_path = str(tokenizer_path)
        self.tokenizer: PromptTokenizer | None = None  # built lazily (per process)
        self.norm_stats = norm_stats
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.num_samples = len(dataset)
        steps_per_epoch(self.num_samples, batch_size)  # raises if the dataset is too small

    def indices(self, step: int) -> np.ndarray:
        return rank_batch(self.num_samples, self.batch_size, self.seed, step, self.rank, self.world)

    def __getitem__(self, step: int) -> tuple[Observation, torch.Tensor]:
        if self.tokenizer is None:
            self.tokenizer = PromptTokenizer(self.tokenizer_path, self.model_cfg.max_token_len)
        samples = [self.dataset[int(i)] for i in self.indices(step)]
        obs = build_observation(
            samples, self.model_cfg, self.policy_cfg, self.tokenizer, self.norm_stats
        )
        actions = np.stack([s["actions"] for s in samples])  # (b, H, A_env)
        H = self.model_cfg.action_horizon
        if actions.shape[1] != H:
            raise ValueError(
                f"dataset gives {actions.shape[1]} actions per sample, model action_horizon={H}"
            )
        acts = normalize_actions(actions, self.norm_stats["actions"], self.model_cfg.action_dim)
        return obs, acts  # actions (b, H, action_dim)

    def __len__(self) -> int:  # the sampler, not len(), bounds the steps
        raise TypeError("StepBatches is indexed by global step; iterate it with a sampler")


def augment_observation(obs: Observation, generator: torch.Generator) -> Observation:
    """openpi train-time augmentation on the cameras that are present (mask True for the
    batch); the absent LIBERO right-wrist camera stays zeros (it is masked anyway)."""
    present = {c: img for c, img in obs.images.items() if bool(obs.image_masks[c].any())}
    images = dict(obs.images)
    images.update(augment_images(present, generator))
    return Observation(
        images=images,
        image_masks=obs.image_masks,
        state=obs.state,
        tokenized_prompt=obs.tokenized_prompt,
        tokenized_prompt_mask=obs.tokenized_prompt_mask,
    )
