"""The openpi-style Policy: raw observation dicts -> input transforms -> π0.5 -> actions.

Also the checkpoint directory contract (docs/architecture.md §3.3):
  CKPT/model.safetensors               openpi-loadable weights (policies/pi05/checkpoint.py)
  CKPT/pruner.safetensors              learnable pruner weights, when the scorer has any
  CKPT/config.json                     {"model": Pi05Config, "policy": PolicyConfig}
  CKPT/assets/<asset_id>/norm_stats.json   openpi's format
  CKPT/assets/<asset_id>/tokenizer.model   sentencepiece model used for prompts
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.normalize import NormStats, load_norm_stats, save_norm_stats
from policies.pi05.checkpoint import (
    MODEL_FILE,
    load_openpi_weights,
    save_openpi_weights,
)
from policies.pi05.config import Pi05Config
from policies.pi05.model import Observation, Pi05Model
from policies.tokenizer import PromptTokenizer
from policies.transforms import (
    IMAGE_KEYS,
    PROMPT_KEY,
    STATE_KEY,
    check_keys,
    parse_image,
    parse_prompt,
    parse_state,
    resize_with_pad,
)
from prunepi.files import umask_mode, write_text

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class PolicyConfig:
    """Data-side settings stored with a checkpoint."""

    asset_id: str = "prunepi"  # assets/<asset_id>/ holds norm stats and tokenizer
    state_dim: int = 8  # raw state width (LIBERO: eef pos 3, axis-angle 3, gripper 2)
    env_action_dim: int = 7  # actions returned to the env (LIBERO: 7)
    tokenizer_file: str = "tokenizer.model"  # inside assets/<asset_id>/
    num_steps: int = 10  # Euler steps in sample_actions (openpi default)
    noise_seed: int | None = 0  # per-request noise seed (deterministic, batch-invariant)
    # The flow's starting point is noise_scale x N(0, I) (a sampling temperature): 1.0 is
    # openpi's sampler; 0.0 starts every chunk from the Gaussian's mean, one deterministic
    # action chunk per observation whatever the seed (reports/reference.md: the reference's
    # success moved 0.87-0.94 with the seed of its one fixed draw).
    noise_scale: float = 1.0

    def validate(self) -> None:
        for f in ("state_dim", "env_action_dim", "num_steps"):
            if getattr(self, f) <= 0:
                raise ValueError(f"policy.{f} must be positive, got {getattr(self, f)}")
        scale, seed = self.noise_scale, self.noise_seed
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale >= 0:
            raise ValueError(f"policy.noise_scale must be a real >= 0, got {scale!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(
                f"policy.noise_seed must be an int >= 0, got {seed!r} (None: a fresh draw a call)"
            )
        if (problem := asset_id_problem(self.asset_id)) is not None:
            raise ValueError(f"policy.asset_id must be {problem}, got {self.asset_id!r}")


# How a policy samples, not what it learned: the PolicyConfig fields a fine-tune keeps from
# the checkpoint it starts from (services/train/driver.py `init_sampler`).
SAMPLER_FIELDS = ("num_steps", "noise_seed", "noise_scale")


# What an asset id may be (openpi's are like "physical-intelligence/libero").
ASSET_ID_RULE = "a relative path of non-empty names, none of them '.' or '..'"


def asset_id_problem(asset_id: object) -> str | None:
    """None if `asset_id` names a folder under assets/, else the rule it breaks.

    openpi's asset ids are data repo ids, so they nest: `physical-intelligence/libero` is
    the folder assets/physical-intelligence/libero/ (openpi training/checkpoints.py
    `save_state` writes `directory / data_config.asset_id`). Anything that could leave
    assets/ (an absolute path, '..') is refused.
    """
    if not isinstance(asset_id, str) or not asset_id or asset_id.startswith(("/", "\\")):
        return ASSET_ID_RULE
    parts = asset_id.split("/")
    if any(p in ("", ".", "..") or "\\" in p or p != p.strip() for p in parts):
        return ASSET_ID_RULE
    return None


def build_observation(
    samples: Sequence[dict[str, Any]],
    model_cfg: Pi05Config,
    policy_cfg: PolicyConfig,
    tokenizer: PromptTokenizer,
    norm_stats: dict[str, NormStats],
) -> Observation:
    """Validate and transform raw observation dicts into one batched model Observation.

    Raises ObservationError naming the bad field of the first bad sample.
    """
    size = model_cfg.vision.image_size
    B = len(samples)
    imgs = {cam: [] for cam in IMAGE_KEYS.values()}
    states, toks, masks = [], [], []
    for raw in samples:
        check_keys(raw)
        for key, cam in IMAGE_KEYS.items():
            imgs[cam].append(resize_with_pad(parse_image(raw[key], key), size))
        state = norm_stats["state"].normalize(parse_state(raw[STATE_KEY], policy_cfg.state_dim))
        padded = np.zeros(model_cfg.action_dim, dtype=np.float32)
        padded[: min(len(state), model_cfg.action_dim)] = state[: model_cfg.action_dim]
        states.append(padded)
        t, m = tokenizer.encode(parse_prompt(raw[PROMPT_KEY]))
        toks.append(t), masks.append(m)
    images, image_masks = {}, {}
    for cam in model_cfg.camera_names:
        if cam in imgs:
            u8 = torch.from_numpy(np.stack(imgs[cam]))  # (B, H, W, 3) uint8
            images[cam] = u8.permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
            image_masks[cam] = torch.ones(B, dtype=torch.bool)
        else:  # openpi LiberoInputs: absent camera -> zeros, mask False
            images[cam] = torch.zeros(B, 3, size, size)
            image_masks[cam] = torch.zeros(B, dtype=torch.bool)
    return Observation(
        images=images,
        image_masks=image_masks,
        state=torch.from_numpy(np.stack(states)),
        tokenized_prompt=torch.from_numpy(np.stack(toks)),
        tokenized_prompt_mask=torch.from_numpy(np.stack(masks)),
    )


class Policy:
    """An eval-mode π0.5 behind openpi's observation/action contract."""

    def __init__(
        self,
        model: Pi05Model,
        policy_cfg: PolicyConfig,
        tokenizer: PromptTokenizer,
        norm_stats: dict[str, NormStats],
        device: str | torch.device = "cpu",
    ):
        policy_cfg.validate()
        for k in ("state", "actions"):
            if k not in norm_stats:
                raise ValueError(f"norm_stats must have {k!r}, got keys {sorted(norm_stats)}")
        self.model = model.to(device).eval()
        self.config = policy_cfg
        self.tokenizer = tokenizer
        self.norm_stats = norm_stats
        self.device = torch.device(device)
        self.prune: bool | None = None  # None: as the checkpoint's pruning config says

    @property
    def metadata(self) -> dict[str, Any]:
        """Sent as the first websocket frame (openpi's server sends its policy metadata)."""
        mc = self.model.config
        return {
            "action_horizon": mc.action_horizon,
            "action_dim": self.config.env_action_dim,
            "image_size": mc.vision.image_size,
            "total_tokens": mc.num_patches_total,
            "pruning": mc.pruning.enabled and self.prune is not False,
        }

    def _noise(self, B: int) -> torch.Tensor | None:
        mc = self.model.config
        shape = (mc.action_horizon, mc.action_dim)
        if self.config.noise_scale == 0:
            return torch.zeros(B, *shape, device=self.device)
        if self.config.noise_seed is None:  # a fresh draw per call, scaled
            return self.config.noise_scale * torch.randn(B, *shape, device=self.device)
        # Same draw for every request: a sample's actions cannot depend on its batch.
        g = torch.Generator().manual_seed(self.config.noise_seed)
        one = self.config.noise_scale * torch.randn(*shape, generator=g)
        return one.expand(B, -1, -1).contiguous().to(self.device)

    def infer_batch(self, samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        obs = build_observation(
            samples, self.model.config, self.config, self.tokenizer, self.norm_stats
        ).to(self.device)
        out = self.model.sample(
            obs, self._noise(len(samples)), self.config.num_steps, prune=self.prune
        )
        actions = out.actions.float().cpu().numpy()  # (B, H, action_dim)
        actions = self.norm_stats["actions"].unnormalize(actions[..., : self.config.env_action_dim])
        ms = (time.perf_counter() - t0) * 1000
        kept = out.kept_tokens.cpu().tolist()
        return [
            {
                "actions": actions[i],
                "pruning": {"kept_tokens": int(kept[i]), "total_tokens": int(out.total_tokens)},
                "policy_timing": {"infer_ms": ms},
            }
            for i in range(len(samples))
        ]

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        return self.infer_batch([obs])[0]

    @staticmethod
    def from_checkpoint(
        folder: str | Path, device: str = "cpu", prune: bool | None = None
    ) -> Policy:
        model, pcfg, tok, stats = load_checkpoint(folder)
        policy = Policy(model, pcfg, tok, stats, device)
        policy.prune = prune
        return policy


def load_checkpoint(
    folder: str | Path,
) -> tuple[Pi05Model, PolicyConfig, PromptTokenizer, dict[str, NormStats]]:
    folder = Path(folder)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"checkpoint {folder} has no {CONFIG_FILE}")
    try:
        raw = json.loads(cfg_path.read_text())
        model_cfg = Pi05Config.from_dict(raw["model"])
        pcfg = PolicyConfig(**raw.get("policy", {}))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg_path} is not a prunepi checkpoint config: {e}") from e
    model = Pi05Model(model_cfg)
    load_openpi_weights(model, folder / MODEL_FILE)
    assets = folder / "assets" / pcfg.asset_id
    stats = load_norm_stats(assets / "norm_stats.json")
    tok = PromptTokenizer(assets / pcfg.tokenizer_file, model_cfg.max_token_len)
    return model.eval(), pcfg, tok, stats


def config_text(body: dict[str, Any]) -> str:
    """config.json's bytes: every writer formats alike, so a rebuild compares bit for bit."""
    return json.dumps(body, indent=1)


def set_policy_fields(folder: str | Path, fields: Mapping[str, Any]) -> None:
    """Replace `fields` of a checkpoint's PolicyConfig in its config.json (atomically): the
    sampler a recipe chose after training, such as noise_seed (services/reference.py)."""
    path = Path(folder) / CONFIG_FILE
    raw = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(PolicyConfig)}
    if unknown := sorted(set(fields) - known):
        raise ValueError(f"export policy fields must be PolicyConfig fields, got {unknown}")
    policy = {**raw.get("policy", {}), **fields}
    PolicyConfig(**policy).validate()
    write_text(path, config_text({**raw, "policy": policy}))


def save_checkpoint(
    folder: str | Path,
    model: Pi05Model,
    policy_cfg: PolicyConfig,
    tokenizer_path: str | Path,
    norm_stats: dict[str, NormStats],
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a complete checkpoint folder atomically (temp dir, then rename)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", suffix=".tmp", dir=folder.parent))
    try:
        os.chmod(tmp, umask_mode(0o777))  # mkdtemp's 0700 would hide it from other users
        save_openpi_weights(model, tmp)
        body = {"model": model.config.to_dict(), "policy": dataclasses.asdict(policy_cfg)}
        (tmp / CONFIG_FILE).write_text(config_text(body))
        assets = tmp / "assets" / policy_cfg.asset_id
        save_norm_stats(norm_stats, assets / "norm_stats.json")
        shutil.copyfile(tokenizer_path, assets / policy_cfg.tokenizer_file)
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        if folder.exists():
            old = folder.with_name(folder.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
