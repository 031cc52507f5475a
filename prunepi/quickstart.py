"""`prunepi demo` until the full loop lands: build a preset, sample one action chunk."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from policies.pi05.config import get_preset
from policies.pi05.model import Observation, Pi05Model


@dataclass(frozen=True)
class QuickstartConfig:
    preset: str = "tiny"  # model preset: tiny | pi05 | pi05_libero
    batch_size: int = 1  # observations per call
    seed: int = 0  # torch seed for weights and inputs


def random_observation(cfg, batch: int, generator: torch.Generator) -> Observation:
    s = cfg.vision.image_size
    L = cfg.max_token_len
    lengths = torch.randint(1, L + 1, (batch,), generator=generator)
    mask = torch.arange(L)[None] < lengths[:, None]
    tokens = torch.randint(1, cfg.vocab_size, (batch, L), generator=generator) * mask
    return Observation(
        images={
            c: torch.rand(batch, 3, s, s, generator=generator) * 2 - 1 for c in cfg.camera_names
        },
        image_masks={
            c: torch.full((batch,), i < 2, dtype=torch.bool) for i, c in enumerate(cfg.camera_names)
        },
        state=torch.zeros(batch, cfg.action_dim),
        tokenized_prompt=tokens,
        tokenized_prompt_mask=mask,
    )


def run_quickstart(cfg: QuickstartConfig) -> dict:
    torch.manual_seed(cfg.seed)
    mcfg = get_preset(cfg.preset)
    model = Pi05Model(mcfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    obs = random_observation(mcfg, cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    model.sample_actions(obs)  # warm-up
    t0 = time.perf_counter()
    actions = model.sample_actions(obs)
    ms = (time.perf_counter() - t0) * 1000
    print(f"preset={cfg.preset} params={n_params / 1e6:.2f}M batch={cfg.batch_size}")
    print(f"actions shape={tuple(actions.shape)} sample_actions={ms:.1f} ms")
    return {"params": n_params, "shape": tuple(actions.shape), "ms": ms}
