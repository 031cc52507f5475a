"""Episode results -> RESULTS.json (docs/architecture.md §3.7):

{"success_rate", "successes", "success_ci95", "kept_tokens_mean", "total_tokens", "episodes",
 "init_states": {"start", "count"},
 "tasks": {task: {"success_rate", "successes", "episodes", "success_ci95", "kept_tokens_mean",
                  "kept_tokens_min", "kept_tokens_max", "episode_length_mean"}}}

Kept-token statistics are over policy queries (one per action chunk); success rates and
lengths over episodes. `success_ci95` is the 95 % Wilson interval [low, high]
(services/rollout/stats.py). Every task ran the same block of initial states, ids
start..start+count-1. Tasks are keyed by their instruction, in task-id order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from prunepi.files import write_text
from services.rollout.episode import EpisodeResult
from services.rollout.stats import wilson_interval

TOP_KEYS = frozenset(
    {
        "success_rate",
        "successes",
        "success_ci95",
        "kept_tokens_mean",
        "total_tokens",
        "episodes",
        "init_states",
        "tasks",
    }
)
TASK_KEYS = frozenset(
    {
        "success_rate",
        "successes",
        "episodes",
        "success_ci95",
        "kept_tokens_mean",
        "kept_tokens_min",
        "kept_tokens_max",
        "episode_length_mean",
    }
)


def _kept_stats(kept: list[int]) -> tuple[float, int, int]:
    if not kept:
        return 0.0, 0, 0
    return float(np.mean(kept)), int(min(kept)), int(max(kept))


def _success(eps: list[EpisodeResult]) -> dict[str, Any]:
    wins = sum(bool(e.success) for e in eps)
    return {
        "success_rate": wins / len(eps),
        "successes": wins,
        "episodes": len(eps),
        "success_ci95": list(wilson_interval(wins, len(eps))),
    }


def _init_block(episodes: list[EpisodeResult]) -> dict[str, int]:
    """{"start", "count"}: the one block of initial state ids every task ran."""
    ids = sorted({e.episode for e in episodes})
    block = list(range(ids[0], ids[0] + len(ids)))
    for task in dict.fromkeys(e.task for e in episodes):
        ran = sorted(e.episode for e in episodes if e.task == task)
        if ran != block:
            raise ValueError(
                f"episodes must run one block of initial states per task (ids {ids[0]}.."
                f"{ids[0] + len(ids) - 1}), got task {task!r} with ids {ran}"
            )
    return {"start": ids[0], "count": len(ids)}


def aggregate(episodes: Iterable[EpisodeResult]) -> dict[str, Any]:
    episodes = sorted(episodes, key=lambda e: (e.task_id, e.episode))
    if not episodes:
        raise ValueError("aggregate needs at least one episode, got none")
    init_states = _init_block(episodes)
    tasks: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(e.task for e in episodes):
        eps = [e for e in episodes if e.task == task]
        kept = [k for e in eps for k in e.kept_tokens]
        mean, lo, hi = _kept_stats(kept)
        tasks[task] = {
            **_success(eps),
            "kept_tokens_mean": mean,
            "kept_tokens_min": lo,
            "kept_tokens_max": hi,
            "episode_length_mean": float(np.mean([e.length for e in eps])),
        }
    kept_all = [k for e in episodes for k in e.kept_tokens]
    # Overall: Wilson over the pooled episodes. With equal episodes per task the pooled rate
    # is the task-mean, and its binomial variance is at least the stratified one (tasks
    # differ in difficulty), so the interval errs on the wide side.
    return {
        **_success(episodes),
        "kept_tokens_mean": _kept_stats(kept_all)[0],
        "total_tokens": max(e.total_tokens for e in episodes),
        "init_states": init_states,
        "tasks": tasks,
    }


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    """Atomic write (temp file, then rename)."""
    return write_text(path, json.dumps(results, indent=1))


def _check_success(where: str, row: dict[str, Any]) -> None:
    n, wins = row["episodes"], row["successes"]
    if not (isinstance(n, int) and n > 0 and isinstance(wins, int) and 0 <= wins <= n):
        raise ValueError(f"{where}: successes must be in [0, episodes], got {wins} of {n}")
    if not math.isclose(row["success_rate"], wins / n, abs_tol=1e-9):
        raise ValueError(f"{where}.success_rate must be successes / episodes, got {row}")
    ci = row["success_ci95"]
    want = wilson_interval(wins, n)
    if not (len(ci) == 2 and all(math.isclose(c, w, abs_tol=1e-9) for c, w in zip(ci, want))):
        raise ValueError(
            f"{where}.success_ci95 must be the Wilson interval {list(want)} of {wins}/{n}, got {ci}"
        )


def validate_results(results: dict[str, Any]) -> None:
    """Raise ValueError if `results` is not in the RESULTS.json format (tests, tune)."""
    if set(results) != TOP_KEYS:
        raise ValueError(f"results keys must be {sorted(TOP_KEYS)}, got {sorted(results)}")
    block = results["init_states"]
    if set(block) != {"count", "start"} or block["start"] < 0 or block["count"] < 1:
        raise ValueError(f"init_states must be {{start >= 0, count >= 1}}, got {block}")
    for task, row in results["tasks"].items():
        if set(row) != TASK_KEYS:
            raise ValueError(f"tasks[{task!r}] keys must be {sorted(TASK_KEYS)}, got {sorted(row)}")
        _check_success(f"tasks[{task!r}]", row)
        if row["episodes"] != block["count"]:
            raise ValueError(
                f"tasks[{task!r}].episodes must be init_states.count ({block['count']}), "
                f"got {row['episodes']}"
            )
    _check_success("results", results)
    if sum(r["episodes"] for r in results["tasks"].values()) != results["episodes"]:
        raise ValueError(f"episodes {results['episodes']} != the sum over tasks")
    if sum(r["successes"] for r in results["tasks"].values()) != results["successes"]:
        raise ValueError(f"successes {results['successes']} != the sum over tasks")
