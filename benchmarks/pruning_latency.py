"""Eval-mode `sample_actions` with and without pruning, and the pruner's training overhead.

Kept counts are the π0.5 ones (768, 384, 192, 78, 32 of 768) scaled to the preset's pool
(tiny: 192 patches -> 192, 96, 48, 20, 8), with all three cameras valid and a full prompt
(as docs/references.md §3 measures); `+trim` rows also drop prompt padding to 25% of the slots.
Ratios are against the unpruned model in the same run.

    python benchmarks/pruning_latency.py                 # tiny on CPU (+ pi05 on CUDA)
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from benchmarks.common import print_table, time_ms, write_json
from policies.pi05.config import get_preset
from policies.pi05.model import Pi05Model
from policies.pruning import PrunerConfig
from prunepi.quickstart import random_observation

PI05_KEEPS = (768, 384, 192, 78, 32)


def observation(cfg, batch: int, device: str, prompt_fill: float):
    obs = random_observation(cfg, batch, torch.Generator().manual_seed(0))
    obs.image_masks = {k: torch.ones_like(v) for k, v in obs.image_masks.items()}
    n = max(1, int(cfg.max_token_len * prompt_fill))
    obs.tokenized_prompt_mask = torch.arange(cfg.max_token_len)[None].expand(batch, -1) < n
    return obs.to(device)


def build(preset: str, device: str, keep: int | None, trim: bool) -> Pi05Model:
    cfg = get_preset(preset)
    if device == "cuda":
        cfg = dataclasses.replace(cfg, dtype="bfloat16")
    if keep is not None:
        pr = PrunerConfig(
            enabled=True,
            budget="keep_tokens",
            keep_tokens=keep,
            trim_prompt_padding=trim,
            telemetry=False,
        )
        cfg = dataclasses.replace(cfg, pruning=pr)
    torch.manual_seed(0)
    with torch.device(device):
        return Pi05Model(cfg).eval()


def eval_rows(preset: str, device: str, iters: int) -> list[dict]:
    rows = []
    n_total = get_preset(preset).num_patches_total
    keeps = sorted({max(1, round(k * n_total / 768)) for k in PI05_KEEPS}, reverse=True)
    for batch in (1, 8):
        base = None
        variants = [("unpruned", None, False)] + [(f"keep {k}", k, False) for k in keeps]
        variants.append((f"keep {keeps[-2]} +trim", keeps[-2], True))
        for name, keep, trim in variants:
            model = build(preset, device, keep, trim)
            obs = observation(model.config, batch, device, prompt_fill=0.25 if trim else 1.0)
            r = time_ms(
                lambda m=model, o=obs: m.sample_actions(o),
                warmup=1,
                iters=iters,
                cuda=device == "cuda",
            )
            base = r["median_ms"] if base is None else base
            rows.append(
                {
                    "preset": preset,
                    "device": device,
                    "batch": batch,
                    "variant": name,
                    "kept": keep or n_total,
                    "median_ms": r["median_ms"],
                    "ratio": r["median_ms"] / base,
                }
            )
            del model
    return rows


def train_overhead(preset: str, device: str, iters: int) -> list[dict]:
    rows = []
    for name, keep in (("no pruner", None), ("pruner (lightvla)", 0)):
        cfg = get_preset(preset)
        if keep is not None:
            cfg = dataclasses.replace(cfg, pruning=PrunerConfig(enabled=True))
        torch.manual_seed(0)
        with torch.device(device):
            model = Pi05Model(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        obs = observation(cfg, 8, device, 1.0)
        actions = torch.randn(8, cfg.action_horizon, cfg.action_dim, device=device)

        def step(m=model, o=obs, a=actions, opt=opt):
            opt.zero_grad()
            m.forward(o, a, step=0).loss.mean().backward()
            opt.step()

        r = time_ms(step, warmup=1, iters=iters, cuda=device == "cuda")
        rows.append(
            {"preset": preset, "device": device, "variant": name, "train_step_ms": r["median_ms"]}
        )
    rows[1]["ratio"] = rows[1]["train_step_ms"] / rows[0]["train_step_ms"]
    rows[0]["ratio"] = 1.0
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="pruning_latency.json")
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    runs = [("tiny", "cpu")]
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        runs.append(("pi05", "cuda"))
    rows, train = [], []
    for preset, device in runs:
        rows += eval_rows(preset, device, args.iters)
        train += train_overhead(preset, device, args.iters)
    print_table(rows, ["preset", "device", "batch", "variant", "kept", "median_ms", "ratio"])
    print()
    print_table(train, ["preset", "device", "variant", "train_step_ms", "ratio"])
    print(
        "\nreference (docs/references.md §3, pi05 on one H100, bf16, CUDA graphs): keep 78 = "
        "0.77x at batch 1, 0.52x at batch 8; +trim to 48 prompt slots 0.73x / 0.43x"
    )
    write_json(
        args.out,
        {
            "eval": rows,
            "train": train,
            "reference_h100": {
                "keep78_b1": 0.77,
                "keep78_b8": 0.52,
                "keep78_trim_b1": 0.73,
                "keep78_trim_b8": 0.43,
            },
        },
    )


if __name__ == "__main__":
    main()
