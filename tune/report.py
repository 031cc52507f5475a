"""reports/noise_ablation.md: LightVLA's noise ablation and our cures, from real runs.

The ablation chooses nothing, so every variant is quoted on the report block of initial
states (tune/report_block.py re-evaluates all of them); the selection-block rollouts are
only what Tune saw. Late-training telemetry is each trial's last line of RUN/metrics.jsonl,
set beside the user's log of the collapse (docs/problem.md §4 in our words: step 20600 of
a π0.5 LightVLA port, 768 pooled slots).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from prunepi.machine import machine_info
from services.rollout.config import REPORT_BLOCK, SELECTION_BLOCK
from services.rollout.stats import wilson_interval
from tune.config import TuneConfig
from tune.success import success_text
from tune.trial import last_metrics

# The user's log (step 20600, three cameras = 768 pooled slots, no-noise inference).
USER_LOG = {
    "prune/kept_tokens_overall_mean": 2.2963,
    "prune/kept_ratio_overall_mean": 0.0030,
    "prune/argmax_union_mean": 2.54,
    "prune/argmax_top1_share_mean": 0.75,
    "prune/queries_std_mean": 0.0089,
    "prune/patches_std_mean": 0.209,
    "prune/score_top1_gap_det_mean": 0.04,
    "prune/score_abs_max_det_mean": 29.0,
}
TELEMETRY = {  # column -> metrics.jsonl key
    "kept tokens": "prune/kept_tokens_overall_mean",
    "kept / all slots": "prune/kept_ratio_overall_mean",
    "kept / valid": "prune/kept_ratio_valid_mean",
    "union": "prune/argmax_union_mean",
    "top-1 share": "prune/argmax_top1_share_mean",
    "queries std": "prune/queries_std_mean",
    "patches std": "prune/patches_std_mean",
    "top-1 gap": "prune/score_top1_gap_det_mean",
    "max abs score": "prune/score_abs_max_det_mean",
}


def report_text(row: dict[str, Any]) -> str:
    """The report-block success `0.89 [0.84, 0.93] n=200`, else the selection block's."""
    if row.get("report_episodes") is None:
        return success_text(row) + " (selection block)"
    n, k = row["report_episodes"], row["report_successes"]
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.2f} [{lo:.2f}, {hi:.2f}] n={n}"


def _noise(r: dict[str, Any]) -> str:
    return r["schedule"] + ("" if r["schedule"] == "none" else f" {r['noise_scale']:g}")


def _kept(r: dict[str, Any]) -> tuple[float, float]:
    kept = r.get("report_kept_tokens_mean")
    kept = r["kept_tokens_mean"] if kept is None else kept
    return kept, kept / r["total_tokens"]


def report_view(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its report-block rollout as its success and kept tokens (for the plot)."""
    if row.get("report_episodes") is None:
        return row
    n, k = row["report_episodes"], row["report_successes"]
    lo, hi = wilson_interval(k, n)
    return {
        **row,
        "success_rate": k / n,
        "successes": k,
        "episodes": n,
        "success_ci95_low": lo,
        "success_ci95_high": hi,
        "kept_tokens_mean": row["report_kept_tokens_mean"],
    }


def success_table(rows: dict[str, dict[str, Any]], names: tuple[str, ...]) -> list[str]:
    lines = [
        "| variant | scorer | noise | budget | score dtype | success [95% CI] n | kept tokens "
        "| kept / all slots | final loss | trial wall (train + selection rollout) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        r = rows.get(name)
        if r is None:
            lines.append(f"| {name} | | | | | (trial failed or stopped) | | | | |")
            continue
        kept, ratio = _kept(r)
        wall = r.get("time_total_s")
        lines.append(
            f"| {name} | {r['scorer']} | {_noise(r)} | {r['budget']} | "
            f"{r.get('score_dtype', 'float32')} | {report_text(r)} | {kept:.1f} of "
            f"{r['total_tokens']} | {ratio:.3f} | {_f(r['train_loss'])} | "
            f"{'' if wall is None else f'{wall / 60:.1f} min'} |"
        )
    return lines


def telemetry_table(
    rows: dict[str, dict[str, Any]], out: Path, names: tuple[str, ...]
) -> list[str]:
    lines = [
        "| run | step | " + " | ".join(TELEMETRY) + " |",
        "|---|---|" + "---|" * len(TELEMETRY),
        "| the user's port (768 slots) | 20600 | "
        + " | ".join(_f(USER_LOG.get(k)) for k in TELEMETRY.values())
        + " |",
    ]
    for name in names:
        r = rows.get(name)
        if r is None:
            continue
        m = last_metrics(out / "trials" / r["trial_id"])
        lines.append(
            f"| {name} | {m.get('step', '')} | "
            + " | ".join(_f(m.get(k)) for k in TELEMETRY.values())
            + " |"
        )
    return lines


def header(cfg: TuneConfig, wall_s: float | None) -> list[str]:
    n = cfg.rollout.episodes_per_task
    m = cfg.report_episodes_per_task
    origin = "from " + cfg.train.init_from if cfg.train.init_from else "from scratch"
    where = (
        f"then every variant is rolled out on the **report block** of initial states "
        f"({REPORT_BLOCK}-{REPORT_BLOCK + m - 1}, {m} episodes per task)"
        if m
        else f"then rolled out on the selection block ({n} episodes per task)"
    )
    machine = ", ".join(f"{k} {v}" for k, v in machine_info().items())
    return [
        "# Noise ablation: LightVLA's variants and the collapse cures",
        "",
        f"Made by `prunepi tune --experiment noise-ablation` on {time.strftime('%Y-%m-%d')}; "
        f"machine: {machine}."
        + ("" if wall_s is None else f" This invocation's wall time: {wall_s / 60:.1f} min."),
        "",
        f"Each variant fine-tunes the `{cfg.train.preset}` π0.5 {origin} for {cfg.steps} steps "
        f"(seed {cfg.train.seed}) on `{cfg.data}` with its pruner, {where}, with eval-mode "
        f"pruning. Tune itself saw only the selection block ({SELECTION_BLOCK}-"
        f"{SELECTION_BLOCK + n - 1}); the ablation chooses nothing, so nothing below was chosen "
        "on the episodes it quotes. Success: rate, 95 % Wilson interval, episodes n. Kept "
        "tokens: per policy query, of all pooled patch slots (the masked third camera's "
        "slots are never kept).",
        "",
    ]


def write_ablation_report(
    cfg: TuneConfig, rows: list[dict[str, Any]], out: Path, wall_s: float | None = None
) -> Path:
    report_dir = Path(cfg.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    from tune.driver import plot_pareto

    title = "noise ablation" + (" (report block)" if cfg.report_episodes_per_task else "")
    plot_pareto([report_view(r) for r in rows], report_dir / "noise_ablation.png", title)
    by_variant = {r["variant"]: r for r in rows if r.get("variant")}
    names = cfg.ablation_variants
    lines = header(cfg, wall_s) + success_table(by_variant, names)
    lines += [
        "",
        "![success against kept tokens](noise_ablation.png)",
        "",
        "## Late-training telemetry beside the user's log",
        "",
        "Each trial's last logged training step (`prune/*` in RUN/metrics.jsonl, "
        "policies/pruning/telemetry.py): kept tokens and the union are the deterministic "
        "(no-noise) selection; *kept / all slots* divides by every pooled slot as the user's "
        "log does, *kept / valid* by the valid patches; *queries std* is taken before any "
        "residual. The collapse signature is a union of a few patches, a top-1 share near 1 "
        "and queries std near 0.",
        "",
        *telemetry_table(by_variant, out, names),
        "",
        "## How this run was made",
        "",
        "```",
        shlex.join(["prunepi", *sys.argv[1:]]),
        "```",
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
