"""One Tune trial: fine-tune with one pruning setting, judged by closed-loop rollouts.

Ray's recommended Train-inside-Tune pattern (Ray Train V2 user guide, "Hyperparameter
Tuning with Ray Tune"): the trial function is a light driver that launches a Ray Train run
(`services.train.run_train` -> `TorchTrainer`) and reports to Tune. We train in `rungs`
segments (`stop_after`, then `resume`) over ONE schedule spanning all `steps`; after each
segment the newest checkpoint is rolled out on the suite's selection block of initial
states (never the report block, services/rollout/config.py) and the trial reports success
with its Wilson interval and kept tokens. Tune's scheduler can stop a trial after any rung
(early stopping on intermediate results), and PBT can hand a trial another trial's checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from envs.dataset import dataset_init_spread
from policies.pruning.telemetry import kept_ratio
from services.rollout.config import SELECTION_BLOCK, RolloutConfig
from services.rollout.driver import run_rollout
from services.train.config import TrainConfig
from services.train.driver import run_train
from services.train.state import checkpoint_dir, list_checkpoints, read_state_json
from tune.config import TuneConfig
from tune.objective import scalarize
from tune.space import pruner_config, trial_params


def rung_steps(steps: int, rungs: int) -> list[int]:
    """Step at which each rung ends: evenly spaced, the last at `steps`."""
    return sorted({max(1, round(steps * (r + 1) / rungs)) for r in range(rungs)})


def train_config(cfg: TuneConfig, params: dict[str, Any], run: Path, stop: int) -> TrainConfig:
    """The trial's training (`cfg.train`) for the rung that ends at `stop`, with the
    search's pruner; resumed from the trial's last rung."""
    return dataclasses.replace(
        cfg.train,
        out=str(run),
        resume=True,
        steps=cfg.steps,
        stop_after=stop,
        save_every=stop,  # only rung ends are kept for evaluation
        log_every=max(1, cfg.steps // 50),
        pruning=pruner_config(params, cfg.steps),
        noise_steps_from_run=True,  # the schedule spans the whole trial, not one rung
    )


def rollout_config(
    cfg: TuneConfig,
    ckpt: Path,
    results: Path,
    init_spread: float | None,
    **over: Any,
) -> RolloutConfig:
    """A rung's rollout (`cfg.rollout`), on the selection block of initial states: the states
    the search chooses on are never the ones reports quote (services/rollout/config.py).
    `over` replaces fields (tune/report_block.py: the report block)."""
    fields = {
        "checkpoint": str(ckpt),
        "init_state_start": SELECTION_BLOCK,
        "out": str(results),
        "init_spread": init_spread,
    }
    return dataclasses.replace(cfg.rollout, **{**fields, **over})


def success_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """Overall success of a RESULTS dict with its 95 % Wilson interval, as flat Tune metrics."""
    lo, hi = results["success_ci95"]
    return {
        "success_rate": results["success_rate"],
        "successes": results["successes"],
        "episodes": results["episodes"],
        "success_ci95_low": lo,
        "success_ci95_high": hi,
    }


def last_metrics(run: Path) -> dict[str, float]:
    """The last logged training metrics of a run (train/loss, prune/*)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


LINEAGE_FILE = "lineage.jsonl"  # one line per PBT exploit: which checkpoint RUN continued


def adopt_checkpoint(src: Path, run: Path) -> bool:
    """PBT exploit: continue from another trial's checkpoint, copied into this RUN as
    checkpoints/<its step>/; -> False when `src` is this trial's own (a paused or restored
    trial gets its last checkpoint back, already in RUN).

    Tune hands over its persisted copy (STORAGE/<experiment>/<trial>/checkpoint_00000k), so
    the step and the source trial come from the checkpoint's train_state.json (its step and
    its training run's folder, trials/<trial id>), not from the path. Each exploit is
    recorded in RUN/lineage.jsonl: a PBT trial's weights are not its own history alone.
    """
    state = read_state_json(src)
    source = Path(state["train_config"]["out"]).resolve()
    if source == run.resolve():
        return False
    for _, folder in list_checkpoints(run):
        shutil.rmtree(folder)
    dst = checkpoint_dir(run, int(state["step"]))
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst)
    record = {"step": int(state["step"]), "trial": source.name, "checkpoint": str(src)}
    with open(run / LINEAGE_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
    return True


def run_trial(config: dict[str, Any], tune_cfg: dict[str, Any]) -> None:
    """Tune function trainable (wrapped with `tune.with_parameters`)."""
    from ray import tune
    from ray.tune import Checkpoint

    cfg = TuneConfig(**tune_cfg)  # __post_init__ rebuilds the nested configs
    params = trial_params(config)
    ctx = tune.get_context()
    run = Path(cfg.out).resolve() / "trials" / ctx.get_trial_id()
    run.mkdir(parents=True, exist_ok=True)
    (run / "params.json").write_text(json.dumps(params, indent=1))
    given = tune.get_checkpoint()
    if given is not None:  # PBT exploit, or this trial's own checkpoint back after a pause
        with given.as_directory() as d:
            adopt_checkpoint(Path(d), run)
    done = max((s for s, _ in list_checkpoints(run)), default=0)
    init_spread = dataset_init_spread(cfg.data)  # roll out from the demos' init regions
    for stop in rung_steps(cfg.steps, cfg.rungs):
        if stop <= done:
            continue
        run_train(train_config(cfg, params, run, stop))
        ckpt = run / "checkpoints" / str(stop)
        results = run_rollout(rollout_config(cfg, ckpt, run / f"rollout_{stop}.json", init_spread))
        train = last_metrics(run)
        metrics = {
            "step": stop,
            **success_metrics(results),
            "kept_tokens_mean": results["kept_tokens_mean"],
            "total_tokens": results["total_tokens"],
            "kept_ratio": kept_ratio(results["kept_tokens_mean"], results["total_tokens"]),
            "train_loss": train.get("train/loss", float("nan")),
            "train_kept_tokens": train.get("prune/kept_tokens_overall_mean", float("nan")),
            "train_argmax_union": train.get("prune/argmax_union_mean", float("nan")),
            "train_queries_std": train.get("prune/queries_std_mean", float("nan")),
        }
        metrics["score"] = scalarize(metrics, cfg.kept_weight)
        report_ckpt = Checkpoint.from_directory(str(ckpt)) if cfg.searcher == "pbt" else None
        tune.report(metrics, checkpoint=report_ckpt)
