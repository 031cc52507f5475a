"""Episode results -> RESULTS.json (docs/architecture.md §3.7):

{"success_rate", "kept_tokens_mean", "total_tokens", "episodes",
 "tasks": {task: {"success_rate", "episodes", "kept_tokens_mean", "kept_tokens_min",
                  "kept_tokens_max", "episode_length_mean"}}}

Kept-token statistics are over policy queries (one per action chunk); success rates and
lengths over episodes. Tasks are keyed by their instruction, in task-id order.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from services.rollout.episode import EpisodeResult


def _kept_stats(kept: list[int]) -> tuple[float, int, int]:
    if not kept:
        return 0.0, 0, 0
    return float(np.mean(kept)), int(min(kept)), int(max(kept))


def aggregate(episodes: Iterable[EpisodeResult]) -> dict[str, Any]:
    episodes = sorted(episodes, key=lambda e: (e.task_id, e.episode))
    if not episodes:
        raise ValueError("aggregate needs at least one episode, got none")
    tasks: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(e.task for e in episodes):
        eps = [e for e in episodes if e.task == task]
        kept = [k for e in eps for k in e.kept_tokens]
        mean, lo, hi = _kept_stats(kept)
        tasks[task] = {
            "success_rate": float(np.mean([e.success for e in eps])),
            "episodes": len(eps),
            "kept_tokens_mean": mean,
            "kept_tokens_min": lo,
            "kept_tokens_max": hi,
            "episode_length_mean": float(np.mean([e.length for e in eps])),
        }
    kept_all = [k for e in episodes for k in e.kept_tokens]
    return {
        "success_rate": float(np.mean([e.success for e in episodes])),
        "kept_tokens_mean": _kept_stats(kept_all)[0],
        "total_tokens": max(e.total_tokens for e in episodes),
        "episodes": len(episodes),
        "tasks": tasks,
    }


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    """Atomic write (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, path)
    return path


def validate_results(results: dict[str, Any]) -> None:
    """Raise ValueError if `results` is not in the RESULTS.json format (tests, tune)."""
    top = {"success_rate", "kept_tokens_mean", "total_tokens", "episodes", "tasks"}
    per_task = {
        "success_rate",
        "episodes",
        "kept_tokens_mean",
        "kept_tokens_min",
        "kept_tokens_max",
        "episode_length_mean",
    }
    if set(results) != top:
        raise ValueError(f"results keys must be {sorted(top)}, got {sorted(results)}")
    for task, row in results["tasks"].items():
        if set(row) != per_task:
            raise ValueError(f"tasks[{task!r}] keys must be {sorted(per_task)}, got {sorted(row)}")
        if not 0.0 <= row["success_rate"] <= 1.0:
            raise ValueError(f"tasks[{task!r}].success_rate must be in [0, 1], got {row}")
    if sum(r["episodes"] for r in results["tasks"].values()) != results["episodes"]:
        raise ValueError(f"episodes {results['episodes']} != the sum over tasks")
