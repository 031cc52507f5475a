"""The Pareto front, re-evaluated on the report block (issue 13: "settings are chosen on
one block of initial states and reported on another").

Trials roll out on the selection block (states 100-149, tune/trial.py); the numbers a
report may quote come from here: each front trial's last checkpoint rolled out on states
0-49 (REPORT_BLOCK), `report_episodes_per_task` a task, with the Wilson interval. Written to
TUNE/pareto_report.json, and merged into the rows as report_* columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envs.dataset import dataset_init_spread
from services.rollout.config import REPORT_BLOCK, RolloutConfig
from services.rollout.driver import run_rollout
from tune.config import TuneConfig
from tune.objective import pareto_front
from tune.trial import rollout_config

REPORT_FILE = "pareto_report.json"


def report_rollout(cfg: TuneConfig, ckpt: Path, out: Path) -> RolloutConfig:
    """The trial's rollout config, moved to the report block."""
    return rollout_config(
        cfg,
        ckpt,
        out,
        dataset_init_spread(cfg.data),
        episodes_per_task=cfg.report_episodes_per_task,
        init_state_start=REPORT_BLOCK,
        envs_per_worker=cfg.report_envs_per_worker,
    )


def evaluate_front(cfg: TuneConfig, rows: list[dict[str, Any]], out: Path) -> list[dict]:
    """Roll out every front trial's last checkpoint on the report block (Ray connected);
    -> the report rows (also merged into `rows`). Nothing when report_episodes_per_task is 0."""
    if cfg.report_episodes_per_task == 0:
        return []
    report = []
    for row in pareto_front(rows):
        ckpt = out / "trials" / row["trial_id"] / "checkpoints" / str(cfg.steps)
        results = run_rollout(report_rollout(cfg, ckpt, out / "report" / f"{row['trial_id']}.json"))
        lo, hi = results["success_ci95"]
        entry = {
            "report_success_rate": results["success_rate"],
            "report_successes": results["successes"],
            "report_episodes": results["episodes"],
            "report_ci95_low": lo,
            "report_ci95_high": hi,
            "report_kept_tokens_mean": results["kept_tokens_mean"],
            "report_init_states": results["init_states"],
        }
        row.update(entry)
        report.append({"trial_id": row["trial_id"], "checkpoint": str(ckpt), **entry})
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return report
