"""`prunepi curve` settings: the (selector, budget) points and the rollout of each.

The rollout options are RolloutConfig's own, nested without a prefix (`--checkpoint`,
`--suite`, `--episodes-per-task`, `--num-workers`, `--init-state-start`, the openpi
LoadOptions fields `--preset`, `--tokenizer-path`, ...), so they are declared once, in
services/rollout/config.py; every point is that config with its own pruner
(`dataclasses.replace`, `point_rollout`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from policies.pruning.config import PrunerConfig
from policies.pruning.training_free import SELECTORS, selector_config
from prunepi.env import absolute_path
from services.rollout.config import RolloutConfig

# The checkpoint's own pruner: its scorer at every budget, or exactly as configured.
CHECKPOINT_SELECTORS = ("checkpoint", "checkpoint-own")
ALL_SELECTORS = SELECTORS + CHECKPOINT_SELECTORS
OWN_COUNT = ("lightvla-adaptive", "checkpoint-own")  # one point each, at their own count
UNPRUNED = "unpruned"  # the reference point (budget 1.0): the same weights, pruner off
TRAINED = "trained:"  # selector prefix of a trained checkpoint's point ("trained:LABEL")
DEFAULT_BUDGETS = (1.0, 0.5, 0.25, 0.15, 0.10, 0.05, 0.02)


@dataclass(frozen=True)
class Point:
    """One point of the curve: a selector at a fraction of the valid patches."""

    selector: str  # ALL_SELECTORS, UNPRUNED, or "trained:LABEL"
    budget: float | None  # kept fraction of the valid patches; None: the selector's own count
    checkpoint: str | None = None  # a trained point's own checkpoint (None: the curve's)

    @property
    def name(self) -> str:
        """File-name safe: `lightvla_0.25`, `lightvla-adaptive_own`, `unpruned_1`,
        `trained-lightvla_no_noise_own`."""
        sel = re.sub(r"[^A-Za-z0-9.-]+", "_", self.selector.replace(TRAINED, "trained-"))
        return f"{sel.strip('_')}_{'own' if self.budget is None else f'{self.budget:g}'}"


def parse_trained(entry: str) -> Point:
    """`LABEL=CHECKPOINT` (or a bare CHECKPOINT, labelled by its run folder) -> the point of a
    checkpoint trained with its pruner, rolled out at its own pruner's count."""
    label, sep, path = entry.rpartition("=")
    if not sep:
        path = entry
        parts = Path(path).parts
        label = parts[-3] if len(parts) >= 3 and parts[-2] == "checkpoints" else Path(path).name
    if not label.strip() or not path:
        raise ValueError(f"trained entries must be LABEL=CHECKPOINT or CHECKPOINT, got {entry!r}")
    return Point(TRAINED + label.strip(), None, path)


def tune_trials(tune_out: str) -> list[str]:
    """`LABEL=CHECKPOINT` of every finished trial of a `prunepi tune` OUT folder: the trial's
    last checkpoint, labelled by its ablation variant (else its trial id)."""
    from services.train.state import latest_checkpoint  # torch-free, file listing only

    trials = Path(tune_out) / "trials"
    if not trials.is_dir():
        raise ValueError(f"trained_from must be a `prunepi tune` OUT folder, got {tune_out!r}")
    entries = []
    for run in sorted(p for p in trials.iterdir() if p.is_dir()):
        ckpt = latest_checkpoint(run)
        params = run / "params.json"
        if ckpt is None or not params.is_file():
            continue
        label = json.loads(params.read_text()).get("variant") or run.name
        entries.append(f"{label}={ckpt}")
    if not entries:
        raise ValueError(f"trained_from {tune_out!r} has no trial with a checkpoint")
    return entries


def point_grid(selectors: tuple[str, ...], budgets: tuple[float, ...]) -> list[Point]:
    """The unpruned reference once (when 1.0 is a budget), then every selector at every
    budget below 1 (largest first); own-count selectors once."""
    points = [Point(UNPRUNED, 1.0)] if 1.0 in budgets else []
    fractions = sorted({b for b in budgets if b < 1.0}, reverse=True)
    for s in selectors:
        points += [Point(s, None)] if s in OWN_COUNT else [Point(s, b) for b in fractions]
    return points


def _default_rollout() -> RolloutConfig:
    return RolloutConfig(episodes_per_task=50)  # LIBERO's protocol: 50 per task


@dataclass(frozen=True)
class CurveConfig:
    """Kept visual tokens against closed-loop success: one rollout per (selector, budget)."""

    # Every point's rollout (flags without a prefix). Its `pruning`, when given, is the base
    # of the training-free pruners (position ids, prompt trimming, buckets, random seed);
    # left at its defaults the checkpoint's own pruner is. `out` and `prune` are per point.
    rollout: Annotated[RolloutConfig, tyro.conf.arg(name="")] = field(
        default_factory=_default_rollout
    )
    # random | lightvla | lightvla-adaptive | grid (policies/pruning/training_free.py);
    # checkpoint: the checkpoint's scorer at every budget; checkpoint-own: its own budget
    selectors: tuple[str, ...] = SELECTORS
    # fractions of the valid patches kept; 1.0 = the unpruned reference point (run once)
    budgets: tuple[float, ...] = DEFAULT_BUDGETS
    # checkpoints fine-tuned with their pruner (LABEL=CHECKPOINT or CHECKPOINT), each one point
    # at its own pruner's count beside the training-free ones (issue 13)
    trained: tuple[str, ...] = ()
    # a `prunepi tune` OUT folder: every trial's last checkpoint joins `trained`, labelled by
    # its ablation variant
    trained_from: str | None = None
    out_dir: str = "runs/curve"  # curve.{json,csv,png,md} and points/<point>.json
    latency_warmup: int = 2  # untimed sample_actions calls before timing each point
    latency_repeats: int = 5  # timed calls at batch 1; the median is reported
    latency_device: str = "cpu"  # where latency is measured (the rollout workers run on cpu)
    num_cpus: int = 2  # CPUs of the embedded local Ray when no cluster is joined

    def validate(self) -> None:
        """Raise ValueError naming the offending field and value, before Ray starts."""
        self._check_lists()
        r = self.rollout
        if r.checkpoint is None or r.policy is not None:
            raise ValueError(
                f"checkpoint must be a checkpoint folder (each point loads it in-process with "
                f"its own pruner), got checkpoint={r.checkpoint!r} policy={r.policy!r}"
            )
        if r.out != RolloutConfig.out:
            raise ValueError(
                f"out is each point's results file, written under out_dir/points/: give "
                f"out_dir, got out={r.out!r}"
            )
        if r.prune is not None:
            raise ValueError(f"prune is set per point (unpruned: False), got prune={r.prune!r}")
        for f in ("latency_warmup", "latency_repeats", "num_cpus"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < (1 if f != "latency_warmup" else 0):
                raise ValueError(f"{f} must be an integer >= 1 (warmup: >= 0), got {v!r}")
        own = self.own_pruner()
        for p in self.points():
            point_rollout(self, p, own if p.checkpoint is None else self.own_pruner(p)).validate()

    def _check_lists(self) -> None:
        bad = [s for s in self.selectors if s not in ALL_SELECTORS]
        if not self.selectors or bad or len(set(self.selectors)) != len(self.selectors):
            raise ValueError(
                f"selectors must be distinct names from {ALL_SELECTORS}, got {self.selectors}"
            )
        ok = all(isinstance(b, int | float) and math.isfinite(b) for b in self.budgets)
        if not self.budgets or not ok or not all(0 < b <= 1 for b in self.budgets):
            raise ValueError(f"budgets must be fractions in (0, 1], got {self.budgets}")
        if len(set(self.budgets)) != len(self.budgets):
            raise ValueError(f"budgets must not repeat, got {self.budgets}")

    def points(self) -> list[Point]:
        extra = list(self.trained) + (tune_trials(self.trained_from) if self.trained_from else [])
        trained = [parse_trained(e) for e in extra]
        labels = [p.selector for p in trained]
        if len(set(labels)) != len(labels):
            raise ValueError(f"trained labels must be distinct, got {labels}")
        return point_grid(self.selectors, self.budgets) + trained

    def own_pruner(self, point: Point | None = None) -> PrunerConfig:
        """The pruner config of the curve's checkpoint, or of a trained point's own
        (PrunerConfig() for an openpi folder)."""
        from policies.loading import LoadOptions, plan_load  # torch: only when validating

        ckpt = (
            self.rollout.checkpoint
            if point is None or point.checkpoint is None
            else point.checkpoint
        )
        opts = LoadOptions.of(dataclasses.replace(self.rollout, pruning=PrunerConfig()))
        return plan_load(ckpt, opts).model.pruning


def point_pruner(cfg: CurveConfig, point: Point, own: PrunerConfig) -> PrunerConfig | None:
    """The pruner of `point`; None for the unpruned reference."""
    if point.selector == UNPRUNED:
        return None
    if point.selector in CHECKPOINT_SELECTORS or point.checkpoint is not None:
        if not own.enabled:
            raise ValueError(
                f"selectors has {point.selector!r} but checkpoint "
                f"{point.checkpoint or cfg.rollout.checkpoint} has no pruner "
                f"(pruning.enabled=False in its config)"
            )
        if point.budget is None:
            return own
        return dataclasses.replace(own, budget="keep_ratio", keep_ratio=point.budget, min_keep=1)
    base = own if cfg.rollout.pruning == PrunerConfig() else cfg.rollout.pruning
    return selector_config(point.selector, point.budget, base)


def point_rollout(cfg: CurveConfig, point: Point, own: PrunerConfig) -> RolloutConfig:
    """`cfg.rollout` with the point's pruner (in-process), results file and video folder."""
    pruner = point_pruner(cfg, point, own)
    r = cfg.rollout
    video = None if r.video_dir is None else f"{r.video_dir}/{point.name}"
    return dataclasses.replace(
        r,
        # absolute: the actors open it in another folder (run_curve does the curve's own)
        checkpoint=absolute_path(point.checkpoint) if point.checkpoint else r.checkpoint,
        # unpruned: the checkpoint's own config (PrunerConfig() = none given), pruner off
        pruning=pruner or PrunerConfig(),
        prune=pruner is not None,
        out=f"{cfg.out_dir}/points/{point.name}.json",
        video_dir=video,
    )
