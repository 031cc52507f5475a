"""Metric logging: cross-rank averaging, RUN/metrics.jsonl, wandb.

Names are the contract of docs/architecture.md: `prune/*` (policies.pruning.METRIC_NAMES),
`train/loss`, `train/lr`, `train/samples_per_s`, and `step` (optimizer steps done). The same
dict goes to `ray.train.report`, to wandb and, one JSON object per logged step, to
RUN/metrics.jsonl (rank 0 only, appended and flushed). A resumed run first drops the lines
past its starting step, so every step appears exactly once however often it restarts.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from prunepi.files import write_text

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_id.txt"


def mean_across_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average each metric over the DDP ranks (every rank must pass the same keys)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


class MetricsLog:
    """RUN/metrics.jsonl writer (rank 0)."""

    def __init__(self, run: Path):
        self.path = Path(run) / METRICS_FILE
        self._f = None

    def truncate_after(self, step: int) -> int:
        """Keep only the lines with step <= `step` (atomically); returns how many stay."""
        if not self.path.is_file():
            return 0
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a crash mid-write
        write_text(self.path, "".join(line + "\n" for line in kept))
        return len(kept)

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            self._f = open(self.path, "a")  # noqa: SIM115 (kept open for the run)
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class WandbLog:
    """wandb on rank 0: offline by default, files under RUN/wandb, one run id per RUN (kept
    in RUN/wandb_id.txt, so restarts and resumes continue the same wandb run, as openpi's
    `init_wandb` does)."""

    def __init__(self, run: Path, mode: str, project: str, config: dict[str, Any]):
        self.run = None
        if mode == "disabled":
            return
        import wandb

        run = Path(run)
        id_file = run / WANDB_ID_FILE
        if id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
        self.run = wandb.init(
            project=project,
            dir=str(run),
            mode=mode,
            id=run_id,
            resume="allow",
            name=run.name,
            config=config,
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
