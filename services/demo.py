"""`prunepi demo`: the whole loop, starting where our users start: from a trained policy.

On one embedded local Ray: collect scripted demos (services.collect) -> fine-tune the committed
reference policy (models/reference/, services/reference.py) with the pruner on Ray Train
DDP workers (services.train) -> serve three policies on one Ray Serve (services.serve):
the fine-tuned one pruned, the same weights unpruned, and the reference with the
training-free `lightvla` selector at the same budget -> roll each out through openpi-client
on LIBERO's 50 episodes per task (services.rollout) -> per-task success with Wilson
intervals and kept tokens side by side, OUT/results.json = {"pruned": RESULTS,
"unpruned": RESULTS, "lightvla": RESULTS}, and a plot of success against kept tokens.
A rerun with the same OUT reuses the dataset and the finished fine-tuning run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policies.pruning.config import PrunerConfig
from prunepi import env
from prunepi.checks import check_fields, int_at_least
from services import reference as ref_recipe
from services.rollout.config import REPORT_BLOCK, ROLLOUT_RULES, RolloutConfig, check_init_block
from services.train.config import TrainConfig

if TYPE_CHECKING:
    from policies.loading import LoadPlan

# Served variants in table order, with their plot marker and face colour: the fine-tuned
# policy pruned, the same weights unpruned, the reference pruned training-free (lightvla).
VARIANTS = {"pruned": ("o", None), "unpruned": ("s", "none"), "lightvla": ("^", "none")}


def _demo_pruner() -> PrunerConfig:
    # The residual scorer (docs/collapse-notes.md) with a fixed budget: half of the valid
    # patches, so kept tokens are comparable across tasks and with the training-free point.
    return PrunerConfig(enabled=True, scorer="residual", budget="keep_ratio", keep_ratio=0.5)


def demo_train() -> TrainConfig:
    """The demo's fine-tune of the reference (`--train.*` overrides a field): the `reference`
    recipe at a fine-tune's LR, 1000 steps on 2 DDP workers, with the pruner; no
    augmentation, as the reference was trained. Data, init weights, norm stats, seed and
    CPUs are the demo's (`train` below)."""
    return TrainConfig(
        preset="reference",
        steps=1000,
        workers=2,
        batch_size=32,
        lr=3e-4,  # a fine-tune, below the reference's 2e-3
        warmup_steps=50,
        decay_lr=3e-5,
        # EMA starts at the reference's weights (services/train/ema.py): the preset's 0.999
        # would still hold 0.999^1000 = 37 % of them, unadapted to pruning, after 1000 steps
        ema_decay=0.99,
        log_every=25,
        augment=False,
        pruning=_demo_pruner(),  # trained and served
        wandb_mode="offline",
    )


def demo_rollout() -> RolloutConfig:
    """How each served variant is rolled out (`--rollout.*`): LIBERO's 50 episodes per task
    from the report block, 4 episodes per actor in lockstep. Suite, init regions, policy URL
    and CPUs are the demo's (`rollout_config` below)."""
    return RolloutConfig(episodes_per_task=50, num_workers=2, envs_per_worker=4)


@dataclass(frozen=True)
class DemoConfig:
    """Sized to finish within 30 minutes on 2 CPU cores. The fine-tune and the rollouts are
    whole configs of their own (`train`, `rollout`), overridden here, not re-declared."""

    out: str = "runs/demo"  # data/, train/, rollouts/, results.json, the plot
    # the policy to fine-tune: the committed reference (`make reference` rebuilds it); the
    # suite, init regions and camera size below are the ones it was trained for
    reference: str = ref_recipe.MODEL_DIR
    suite: str = ref_recipe.SUITE  # envs suite to collect, fine-tune and evaluate on
    init_spread: float | None = ref_recipe.INIT_SPREAD  # LIBERO-style init regions (m)
    demos_per_task: int = 50  # scripted expert demos per task for the fine-tuning
    train: TrainConfig = field(default_factory=demo_train)
    rollout: RolloutConfig = field(default_factory=demo_rollout)
    num_cpus: int = 2  # CPUs of the embedded local Ray (on a cluster: the CPUs the demo reserves)
    # Ray cluster to join (HOST:PORT, "auto", ray://HOST:PORT); None: RAY_ADDRESS if set (as
    # `ray job submit` sets it), else the embedded local Ray; "local": always embedded. Every
    # stage runs on this one connection.
    address: str | None = None
    seed: int = 0  # collection and fine-tuning seed (rollouts use openpi's 7)
    fresh: bool = False  # delete OUT first instead of reusing its data and training run

    @property
    def pruning(self) -> PrunerConfig:
        return self.train.pruning

    def validate(self) -> None:
        check_fields("demo", self, dict.fromkeys(("demos_per_task", "num_cpus"), int_at_least(1)))
        # the fine-tune as a whole (its data is collected later)
        dataclasses.replace(self.train, data="data").resolved().validate()
        check_fields("demo.rollout", self.rollout, ROLLOUT_RULES)
        if not self.pruning.enabled or self.pruning.budget != "keep_ratio":
            raise ValueError(
                f"train.pruning must be enabled with budget 'keep_ratio' (the training-free "
                f"point is taken at the same ratio), got enabled={self.pruning.enabled} "
                f"budget={self.pruning.budget!r}"
            )
        env.check_address("address", self.address)
        check_init_block(self.suite, REPORT_BLOCK, self.rollout.episodes_per_task)

    def check_reference(self) -> LoadPlan:
        """The reference folder's LoadPlan (its sizes, norm stats and tokenizer), read once
        before Ray starts so that a missing or broken reference fails at once."""
        from policies.loading import LoadOptions, plan_load

        return plan_load(Path(self.reference), LoadOptions(), prune=False)


def _stage(name: str, t0: float) -> None:
    print(f"[demo] {name} done at {time.monotonic() - t0:.0f} s", flush=True)


def collect(cfg: DemoConfig, out: Path, image_size: int) -> Path:
    """The fine-tuning demos (OUT/data), collected as the reference's are, fewer of them."""
    data = out / "data"
    if (data / "meta" / "info.json").is_file():
        print(f"[demo] reusing dataset {data}")
        return data
    recipe = ref_recipe.ReferenceConfig(
        run=str(out),
        suite=cfg.suite,
        demos_per_task=cfg.demos_per_task,
        image_size=image_size,
        init_spread=cfg.init_spread,
        seed=cfg.seed,
        num_cpus=cfg.num_cpus,
        address=cfg.address,
    )
    return ref_recipe.collect(recipe)


def train(cfg: DemoConfig, data: Path, out: Path, norm_stats: Path) -> Path:
    """Fine-tune the reference with the pruner; -> the last checkpoint folder. The
    reference's norm stats and tokenizer are kept (its weights were trained on them)."""
    from services.train.driver import run_train
    from services.train.state import latest_checkpoint

    ref = Path(cfg.reference).resolve()
    run = run_train(
        dataclasses.replace(
            cfg.train,
            data=str(data),
            out=str(out / "train"),
            init_from=str(ref),
            norm_stats=str(norm_stats),
            resume=True,  # a rerun continues (or skips) the same run
            save_every=cfg.train.steps,
            seed=cfg.seed,
            cpus_per_worker=cfg.num_cpus / cfg.train.workers,
            ray_num_cpus=cfg.num_cpus,
            address=cfg.address,
        )
    )
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise RuntimeError(f"training finished without a checkpoint in {run}/checkpoints")
    return ckpt


def rollout_config(cfg: DemoConfig, ws_url: str, results: Path, cpus: float) -> RolloutConfig:
    """One variant's rollout: on the report block of initial states, never Tune's selection
    block (services/rollout/config.py REPORT_BLOCK), on `cpus` Ray CPUs in all."""
    return dataclasses.replace(
        cfg.rollout,
        policy=ws_url,
        suite=cfg.suite,
        init_state_start=REPORT_BLOCK,
        out=str(results),
        num_cpus_per_worker=cpus / cfg.rollout.num_workers,
        init_spread=cfg.init_spread,
        address=cfg.address,
    )


def served_variants(cfg: DemoConfig, checkpoint: Path) -> dict[str, dict[str, Any]]:
    """ServeConfig fields of each variant: the fine-tuned checkpoint with its pruner on and
    off, and the reference pruned by the parameter-free scorer at the demo's keep ratio."""
    from policies.pruning.training_free import selector_config

    lightvla = selector_config("lightvla", cfg.pruning.keep_ratio, PrunerConfig())
    return {
        "pruned": {"checkpoint": str(checkpoint), "prune": None},  # the checkpoint's pruner
        "unpruned": {"checkpoint": str(checkpoint), "prune": False},
        "lightvla": {"checkpoint": str(Path(cfg.reference).resolve()), "pruning": lightvla},
    }


def evaluate(cfg: DemoConfig, checkpoint: Path, out: Path) -> dict[str, Any]:
    """Serve the variants as apps of one Serve ("/pruned", "/unpruned", "/lightvla") and
    roll each out through openpi-client."""
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
    # Half the CPUs reserved for the replicas (one serves at a time), half for the actors.
    share = cfg.num_cpus / 2
    variants = served_variants(cfg, checkpoint)
    handles = {}
    try:
        for name, fields in variants.items():
            handles[name] = start_serve(
                ServeConfig(
                    **fields,
                    port=port,
                    num_cpus_per_replica=share / len(variants),
                    max_batch_size=cfg.rollout.envs_per_worker * cfg.rollout.num_workers,
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

    names = [n for n in VARIANTS if n in results]
    first = results[names[0]]
    head = " | ".join(f"{n + ': success':>25} {'kept':>6}" for n in names)
    rows = [f"{'task':<56} {head}"]

    def cells(pick) -> str:
        return " | ".join(
            f"{format_success(pick(results[n])):>25} {pick(results[n])['kept_tokens_mean']:>6.1f}"
            for n in names
        )

    for task in first["tasks"]:
        rows.append(f"{task[:56]:<56} {cells(lambda r, t=task: r['tasks'][t])}")
    rows.append(f"{'all':<56} {cells(lambda r: r)}   (of {first['total_tokens']})")
    return "\n".join(rows)


def _yerr(rows: list[dict[str, Any]]) -> list[list[float]]:
    """matplotlib's asymmetric error bars [[below...], [above...]] from the Wilson intervals."""
    return [
        [r["success_rate"] - r["success_ci95"][0] for r in rows],
        [r["success_ci95"][1] - r["success_rate"] for r in rows],
    ]


def plot(results: dict[str, Any], path: Path) -> Path:
    """Success against kept tokens, each point with its 95 % Wilson interval as error bar:
    per task a line through its variants, overall a black marker per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = [n for n in VARIANTS if n in results]
    first = results[names[0]]
    bar = dict(capsize=3, elinewidth=1)
    for i, task in enumerate(first["tasks"]):
        rows = [results[n]["tasks"][task] for n in names]
        xs, ys = [r["kept_tokens_mean"] for r in rows], [r["success_rate"] for r in rows]
        ax.plot(xs, ys, "-", color=f"C{i}", alpha=0.4)
        for k, (name, row) in enumerate(zip(names, rows)):
            fmt, mfc = VARIANTS[name]
            label = task[:48] if k == 0 else None
            ax.errorbar(
                xs[k], ys[k], _yerr([row]), fmt=fmt, color=f"C{i}", mfc=mfc, label=label, **bar
            )
    for name in names:
        r, (fmt, mfc) = results[name], VARIANTS[name]
        ax.errorbar(
            r["kept_tokens_mean"],
            r["success_rate"],
            _yerr([r]),
            fmt="k" + fmt,
            ms=11,
            mfc=mfc,
            label=f"all tasks: {name}",
            **bar,
        )
    ax.set_xlabel(f"visual tokens kept (of {first['total_tokens']})")
    ax.set_ylabel("success rate (bars: 95 % Wilson interval)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(
        f"{' / '.join(names)}, {first['init_states']['count']} episodes per task", fontsize=9
    )
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    cfg.validate()
    ref = cfg.check_reference()
    out = Path(cfg.out).resolve()
    if cfg.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    t0 = time.monotonic()
    started = env.connect_ray(cfg.address, num_cpus=cfg.num_cpus)
    try:
        data = collect(cfg, out, ref.model.vision.image_size)
        _stage(f"collect ({data})", t0)
        checkpoint = train(cfg, data, out, ref.norm_stats)
        _stage(f"fine-tune ({checkpoint})", t0)
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
