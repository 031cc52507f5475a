"""The Pareto front, re-evaluated on the report block (issue 13: "settings are chosen on
one block of initial states and reported on another"). The noise ablation chooses nothing:
each of its variants is a row of reports/noise_ablation.md, so all of them are re-evaluated.

Trials roll out on the selection block (states 100-149, tune/trial.py); the numbers a
report may quote come from here: each front trial's last checkpoint rolled out on states
0-49 (REPORT_BLOCK), `report_episodes_per_task` a task, with the Wilson interval. Written to
TUNE/pareto_report.json, and merged into the rows as report_* columns. A rerun of the same
search reuses a trial's report rollout when its file holds the same block and episode count
(the trial's checkpoint is final, so the episodes are the same ones).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envs.dataset import dataset_init_spread
from services.rollout.config import REPORT_BLOCK, RolloutConfig
from services.rollout.driver import run_rollout
from services.rollout.results import validate_results
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
        num_workers=cfg.report_workers,
    )


def reusable(path: Path, rollout: RolloutConfig, tasks: int) -> dict[str, Any] | None:
    """The results in `path` when they are this rollout's: same block, same episodes, and
    written after the checkpoint's weights (a retrained checkpoint is rolled out again)."""
    weights = Path(rollout.checkpoint) / "model.safetensors"
    if not path.is_file() or path.stat().st_mtime < weights.stat().st_mtime:
        return None
    results = json.loads(path.read_text())
    validate_results(results)
    block = {"start": rollout.init_state_start, "count": rollout.episodes_per_task}
    same = results["init_states"] == block and len(results["tasks"]) == tasks
    return results if same else None


def report_results(cfg: TuneConfig, ckpt: Path, path: Path) -> dict[str, Any]:
    import envs

    rollout = report_rollout(cfg, ckpt, path)
    tasks = len(rollout.tasks or envs.suite_tasks(rollout.suite))
    found = reusable(path, rollout, tasks)
    if found is not None:
        print(f"[tune] reusing the report rollout {path}")
        return found
    return run_rollout(rollout)


def evaluate_front(cfg: TuneConfig, rows: list[dict[str, Any]], out: Path) -> list[dict]:
    """Roll out every front trial's last checkpoint (every trial's, for the noise ablation) on
    the report block (Ray connected);
    -> the report rows (also merged into `rows`). Nothing when report_episodes_per_task is 0."""
    if cfg.report_episodes_per_task == 0:
        return []
    report = []
    chosen = rows if cfg.experiment == "noise-ablation" else pareto_front(rows)
    for row in chosen:
        ckpt = out / "trials" / row["trial_id"] / "checkpoints" / str(cfg.steps)
        results = report_results(cfg, ckpt, out / "report" / f"{row['trial_id']}.json")
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
