"""`prunepi demo`: the whole loop on one embedded local Ray.

collect scripted demos (envs.collect) -> train the tiny π0.5 with the pruner (services.train)
-> serve the checkpoint twice, pruner on and pruner off (services.serve) -> roll both out
through openpi-client (services.rollout) -> per-task success and kept tokens side by side,
OUT/results.json = {"pruned": RESULTS, "unpruned": RESULTS}, and a plot of success against
kept tokens. A rerun with the same OUT reuses the dataset and the finished training run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.pruning.config import PrunerConfig
from prunepi import env
from services.rollout.config import REPORT_BLOCK, RolloutConfig, check_init_block


def _demo_pruner() -> PrunerConfig:
    # The residual scorer (docs/collapse-notes.md) with a fixed budget: half of the valid patches,
    # so kept tokens are comparable across tasks and the pruned model cannot go blind.
    return PrunerConfig(enabled=True, scorer="residual", budget="keep_ratio", keep_ratio=0.5)


@dataclass(frozen=True)
class DemoConfig:
    """Sized to finish within 30 minutes on 2 CPU cores."""

    out: str = "runs/demo"  # data/, train/, rollouts/, results.json, the plot
    suite: str = "goal"  # envs suite to collect, train and evaluate on
    demos_per_task: int = 30  # scripted expert demos kept per task
    # LIBERO-style init regions: each object within +-init_spread m of a fixed home (LIBERO's
    # BDDL regions are a few cm); None = anywhere on the table, far harder for a tiny model.
    init_spread: float | None = 0.03
    # Camera side in px, also the model's input side (multiple of 14): 56 trains 2.3x more
    # samples/s than the tiny preset's 112 on 2 CPUs.
    image_size: int = 56
    train_steps: int = 2000  # optimizer steps of the tiny preset (~9 min on 2 idle CPUs)
    train_workers: int = 2  # Ray Train DDP workers
    batch_size: int = 32  # global batch
    lr: float = 3e-3  # peak learning rate (the tiny preset's 1e-3 learns too slowly here)
    augment: bool = False  # openpi's image augmentation (off: fits faster in a short run)
    pruning: PrunerConfig = field(default_factory=_demo_pruner)  # trained and served pruner
    episodes_per_task: int = 10  # rollout episodes per task and per variant
    max_steps: int | None = None  # policy steps per episode (None: the suite's limit)
    rollout_workers: int = 2  # Ray actors per rollout
    num_cpus: int = 2  # CPUs of the embedded Ray (on a cluster: the CPUs the demo reserves)
    # Ray cluster to join (HOST:PORT, "auto", ray://HOST:PORT); None: RAY_ADDRESS if set (as
    # `ray job submit` sets it), else the embedded local Ray; "local": always embedded. Every
    # stage runs on this one connection.
    address: str | None = None
    seed: int = 0  # collection and training seed (rollouts use openpi's 7)
    fresh: bool = False  # delete OUT first instead of reusing its data and training run

    def validate(self) -> None:
        for f in (
            "demos_per_task",
            "train_steps",
            "train_workers",
            "batch_size",
            "episodes_per_task",
            "rollout_workers",
            "num_cpus",
        ):
            if getattr(self, f) <= 0:
                raise ValueError(f"{f} must be positive, got {getattr(self, f)}")
        if not self.pruning.enabled:
            raise ValueError(f"pruning.enabled must be True for the demo, got {self.pruning}")
        env.check_address("address", self.address)
        check_init_block(self.suite, REPORT_BLOCK, self.episodes_per_task)


def _stage(name: str, t0: float) -> None:
    print(f"[demo] {name} done at {time.monotonic() - t0:.0f} s", flush=True)


def collect(cfg: DemoConfig, out: Path) -> Path:
    from envs.collect import CollectConfig, run_collect

    data = out / "data"
    if (data / "meta" / "info.json").is_file():
        print(f"[demo] reusing dataset {data}")
        return data
    return run_collect(
        CollectConfig(
            suite=cfg.suite,
            episodes_per_task=cfg.demos_per_task,
            out=data,
            image_size=cfg.image_size,
            num_workers=cfg.num_cpus,
            seed=cfg.seed,
            progress=False,
            init_spread=cfg.init_spread,
        )
    )


def train(cfg: DemoConfig, data: Path, out: Path) -> Path:
    """-> the last checkpoint folder (RUN/checkpoints/<step>/)."""
    from services.train.config import TrainConfig
    from services.train.driver import run_train
    from services.train.state import latest_checkpoint

    run = run_train(
        TrainConfig(
            preset="tiny",
            data=str(data),
            out=str(out / "train"),
            workers=cfg.train_workers,
            resume=True,  # a rerun continues (or skips) the same run
            steps=cfg.train_steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            save_every=cfg.train_steps,
            log_every=25,
            image_size=cfg.image_size,
            augment=cfg.augment,
            pruning=cfg.pruning,
            seed=cfg.seed,
            cpus_per_worker=cfg.num_cpus / cfg.train_workers,
            ray_num_cpus=cfg.num_cpus,
            wandb_mode="offline",
        )
    )
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise RuntimeError(f"training finished without a checkpoint in {run}/checkpoints")
    return ckpt


def rollout_config(cfg: DemoConfig, ws_url: str, results: Path, cpus: float) -> RolloutConfig:
    """One variant's rollout: on the report block of initial states, never Tune's selection
    block (services/rollout/config.py REPORT_BLOCK), on `cpus` Ray CPUs in all."""
    return RolloutConfig(
        policy=ws_url,
        suite=cfg.suite,
        episodes_per_task=cfg.episodes_per_task,
        init_state_start=REPORT_BLOCK,
        out=str(results),
        num_workers=cfg.rollout_workers,
        num_cpus_per_worker=cpus / cfg.rollout_workers,
        max_steps=cfg.max_steps,
        image_size=cfg.image_size,
        init_spread=cfg.init_spread,
    )


def evaluate(cfg: DemoConfig, checkpoint: Path, out: Path) -> dict[str, Any]:
    """Serve the checkpoint twice on one Serve, pruner on ("/pruned") and off ("/unpruned"),
    and roll each out through openpi-client."""
    import logging
    import socket

    from services.rollout import run_rollout
    from services.serve import ServeConfig, start_serve

    # Serve's driver-side INFO lines (app ready, "connecting to existing Serve") would bury
    # the results table; warnings and errors still show.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Half the CPUs reserved for the two replicas (one serves at a time), half for the actors.
    share = cfg.num_cpus / 2
    handles = {}
    try:
        for name, prune in (("pruned", None), ("unpruned", False)):
            handles[name] = start_serve(
                ServeConfig(
                    checkpoint=str(checkpoint),
                    port=port,
                    prune=prune,  # None: the checkpoint's pruner; False: same weights, unpruned
                    num_cpus_per_replica=share / 2,
                    app_name=name,
                    log_level="WARNING",  # the results table is what the terminal is for
                    access_log=False,
                    route_prefix=f"/{name}",
                )
            )
        results = {}
        for name, handle in handles.items():
            print(f"[demo] rolling out the {name} policy at {handle.ws_url}", flush=True)
            results[name] = run_rollout(
                rollout_config(cfg, handle.ws_url, out / "rollouts" / f"{name}.json", share)
            )
    finally:
        for handle in reversed(list(handles.values())):  # the first one started Serve
            handle.stop()
    return results


def side_by_side(results: dict[str, Any]) -> str:
    """Per task, each variant's `rate [95% CI] n=N` and kept tokens (format_success)."""
    from services.rollout.driver import format_success

    p, u = results["pruned"], results["unpruned"]
    rows = [
        f"{'task':<56} {'pruned: success':>25} {'kept':>6} | {'unpruned: success':>25} {'kept':>6}"
    ]
    for task in p["tasks"]:
        a, b = p["tasks"][task], u["tasks"][task]
        rows.append(
            f"{task[:56]:<56} {format_success(a):>25} {a['kept_tokens_mean']:>6.1f} | "
            f"{format_success(b):>25} {b['kept_tokens_mean']:>6.1f}"
        )
    rows.append(
        f"{'all':<56} {format_success(p):>25} {p['kept_tokens_mean']:>6.1f} | "
        f"{format_success(u):>25} {u['kept_tokens_mean']:>6.1f}   (of {p['total_tokens']})"
    )
    return "\n".join(rows)


def _yerr(rows: list[dict[str, Any]]) -> list[list[float]]:
    """matplotlib's asymmetric error bars [[below...], [above...]] from the Wilson intervals."""
    return [
        [r["success_rate"] - r["success_ci95"][0] for r in rows],
        [r["success_ci95"][1] - r["success_rate"] for r in rows],
    ]


def plot(results: dict[str, Any], path: Path) -> Path:
    """Success against kept tokens, each point with its 95 % Wilson interval as error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    p, u = results["pruned"], results["unpruned"]
    bar = dict(capsize=3, elinewidth=1)
    for i, task in enumerate(p["tasks"]):
        a, b = p["tasks"][task], u["tasks"][task]
        xs = [a["kept_tokens_mean"], b["kept_tokens_mean"]]
        ys = [a["success_rate"], b["success_rate"]]
        ax.plot(xs, ys, "-", color=f"C{i}", alpha=0.5)
        ax.errorbar(xs[0], ys[0], _yerr([a]), fmt="o", color=f"C{i}", label=task[:48], **bar)
        ax.errorbar(xs[1], ys[1], _yerr([b]), fmt="s", color=f"C{i}", mfc="none", **bar)
    for r, mfc, label in ((p, "k", "all tasks, pruned"), (u, "none", "all, unpruned")):
        x, y = r["kept_tokens_mean"], r["success_rate"]
        ax.errorbar(x, y, _yerr([r]), fmt="k*", ms=14, mfc=mfc, label=label, **bar)
    block = p["init_states"]
    ax.set_xlabel(f"visual tokens kept (of {p['total_tokens']})")
    ax.set_ylabel("success rate (bars: 95 % Wilson interval)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(
        f"pruned (filled) vs the same policy unpruned (open), {block['count']} episodes per task"
    )
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    cfg.validate()
    out = Path(cfg.out).resolve()
    if cfg.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    t0 = time.monotonic()
    started = env.connect_ray(cfg.address, num_cpus=cfg.num_cpus)
    try:
        data = collect(cfg, out)
        _stage(f"collect ({data})", t0)
        checkpoint = train(cfg, data, out)
        _stage(f"train ({checkpoint})", t0)
        results = evaluate(cfg, checkpoint, out)
        _stage("serve + rollouts", t0)
    finally:
        if started:
            import ray

            ray.shutdown()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    figure = plot(results, out / "success_vs_kept_tokens.png")
    print(side_by_side(results))
    print(f"[demo] {out / 'results.json'}, {figure} ({time.monotonic() - t0:.0f} s)")
    return results
