"""reports/noise_ablation.md: LightVLA's noise ablation and our cures, from real runs."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from services.rollout.config import SELECTION_BLOCK
from tune.config import TuneConfig
from tune.space import ABLATION
from tune.success import success_text


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = f"{platform.machine()} {platform.processor() or ''}".strip()
    return f"{cpu}, {os.cpu_count()} CPUs, {gpu}"


def write_ablation_report(cfg: TuneConfig, rows: list[dict[str, Any]], out: Path) -> Path:
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    plot = report_dir / "noise_ablation.png"
    if (out / "pareto.png").is_file():
        shutil.copyfile(out / "pareto.png", plot)
    by_variant = {r["variant"]: r for r in rows if r.get("variant")}
    n = cfg.rollout.episodes_per_task
    lines = [
        "# Noise ablation: LightVLA's variants and the collapse cures",
        "",
        f"Made by `prunepi tune --experiment noise-ablation` on {time.strftime('%Y-%m-%d')}, "
        f"machine: {_machine()}.",
        f"Each variant fine-tunes the `{cfg.train.preset}` π0.5 "
        f"{'from ' + cfg.train.init_from if cfg.train.init_from else 'from scratch'} for "
        f"{cfg.steps} steps (seed {cfg.train.seed}) on `{cfg.data}`, then is rolled out on suite "
        f"`{cfg.suite}` ({n} episodes per task from the selection block of fixed initial "
        f"states, {SELECTION_BLOCK}-{SELECTION_BLOCK + n - 1}) with "
        "eval-mode pruning. Success is the rate over all rolled-out episodes, its 95 % Wilson "
        "interval and the episode count n. Kept tokens are per inference, of all pooled patch "
        "slots (the masked third camera's slots are never kept).",
        "",
        "| variant | scorer | noise | budget | success [95% CI] n | kept tokens | kept ratio | "
        "train union (late) | train queries std | final loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ABLATION:
        r = by_variant.get(name)
        if r is None:
            lines.append(f"| {name} | | | | (trial failed or stopped) | | | | | |")
            continue
        noise = r["schedule"] + ("" if r["schedule"] in ("none",) else f" {r['noise_scale']:g}")
        lines.append(
            f"| {name} | {r['scorer']} | {noise} | {r['budget']} | {success_text(r)} | "
            f"{r['kept_tokens_mean']:.1f} | {r['kept_ratio']:.3f} | "
            f"{_f(r['train_argmax_union'])} | {_f(r['train_queries_std'])} | "
            f"{_f(r['train_loss'])} |"
        )
    lines += [
        "",
        "![success against kept tokens](noise_ablation.png)",
        "",
        "Columns: *success* and *kept tokens* come from closed-loop rollouts of the final "
        "checkpoint; *train union (late)* is `prune/argmax_union_mean` at the last logged "
        "training step (the collapse signature is a union of a few patches); *train queries "
        "std* is `prune/queries_std_mean` (near zero when every patch's query is the same "
        "vector, docs/problem.md §4).",
        "",
        "The run's configuration (`TuneConfig`):",
        "",
        "```json",
        json.dumps(cfg.to_dict(), indent=1),
        "```",
    ]
    path = report_dir / "noise_ablation.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"[tune] wrote {path}")
    return path


def _f(x) -> str:
    return "" if x is None else f"{x:.3g}"
