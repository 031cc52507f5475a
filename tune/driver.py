"""`run_tune(cfg)`: the Ray Tune driver and what it leaves in TUNE/.

TUNE/trials.csv, TUNE/trials.json   one row per trial: parameters, success, kept tokens
TUNE/pareto.png                     success against kept tokens, Pareto front marked
TUNE/best_train_config.json         the best trial as a training config
                                    (`prunepi train --config-json TUNE/best_train_config.json`)
TUNE/tune/<experiment>/             Ray Tune's experiment state (an interrupted search
                                    resumes from it with Tuner.restore)
TUNE/trials/<trial id>/             each trial's training run and rollout results
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

from prunepi import env
from tune.config import TuneConfig
from tune.objective import pareto_front
from tune.progress import TrialProgress
from tune.report_block import evaluate_front
from tune.space import DEFAULTS, ablation_space, pbt_mutations, search_space, trial_params
from tune.success import success_text, success_yerr
from tune.trial import run_trial, train_config

RESULT_KEYS = (
    "success_rate",
    "successes",
    "episodes",
    "success_ci95_low",
    "success_ci95_high",
    "kept_tokens_mean",
    "total_tokens",
    "kept_ratio",
    "score",
    "step",
    "train_loss",
    "train_kept_tokens",
    "train_argmax_union",
    "train_queries_std",
    "time_total_s",  # Tune's: the trial's wall time, training and selection rollouts
)


def _searcher_and_scheduler(cfg: TuneConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    # An explicit BasicVariantGenerator ignores TuneConfig.max_concurrent_trials: give it here.
    limit = cfg.max_concurrent_trials
    if cfg.experiment == "noise-ablation":
        return BasicVariantGenerator(max_concurrent=limit), FIFOScheduler()
    asha = ASHAScheduler(
        time_attr="training_iteration",
        metric="score",
        mode="max",
        max_t=cfg.rungs,
        grace_period=min(cfg.grace_rungs, cfg.rungs),
    )
    if cfg.searcher == "optuna":
        # Multi-objective TPE over (success up, kept tokens down): a real Pareto search.
        search = OptunaSearch(
            metric=["success_rate", "kept_tokens_mean"], mode=["max", "min"], seed=cfg.seed
        )
        return search, asha
    if cfg.searcher == "random":
        return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=limit), asha
    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        metric="score",
        mode="max",
        perturbation_interval=1,
        hyperparam_mutations=pbt_mutations(),
        # Synchronous PBT: every trial reaches the rung before the bottom quantile copies
        # the top one, so which trial exploits which depends on the scores alone, not on
        # which trial happened to report first (trials here are all the same length).
        synch=True,
    )
    # The whole population must exist for synchronous PBT to compare it at a rung: with
    # trials created one at a time, the first one reaches the rung alone and never exploits
    # anything. Every trial is created at once (max_concurrent=0); the CPUs still decide how
    # many run at a time, and Tune pauses the ones waiting at the rung.
    return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=0), pbt


def build_tuner(cfg: TuneConfig, storage: Path):
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, tune_cfg=cfg.to_dict()), {"cpu": cfg.trial_cpus}
    )
    name = cfg.experiment
    if cfg.resume and tune.Tuner.can_restore(str(storage / name)):
        print(f"[tune] resuming the interrupted search in {storage / name}")
        return tune.Tuner.restore(str(storage / name), trainable, resume_errored=True)
    search, scheduler = _searcher_and_scheduler(cfg)
    ablation = cfg.experiment == "noise-ablation"
    return tune.Tuner(
        trainable,
        param_space=ablation_space(cfg.ablation_variants)
        if ablation
        else search_space(cfg.searcher),
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
            num_samples=1 if ablation else cfg.trials,
            max_concurrent_trials=cfg.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=1,
            callbacks=[TrialProgress(len(cfg.ablation_variants) if ablation else cfg.trials)],
        ),
    )


def collect_rows(results) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        if r.metrics is None or "success_rate" not in r.metrics:
            continue
        params = trial_params(r.config)
        row = {"trial_id": r.metrics.get("trial_id", ""), **params}
        row.update({k: r.metrics.get(k) for k in RESULT_KEYS})
        row["rungs_done"] = r.metrics.get("training_iteration")
        rows.append(row)
    return sorted(rows, key=lambda x: -(x["score"] or 0))


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    (out / "trials.json").write_text(json.dumps(rows, indent=1))
    cols = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("trial_id", "variant"), k))
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def plot_pareto(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = pareto_front(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(
        [r["kept_tokens_mean"] for r in rows],
        [r["success_rate"] for r in rows],
        yerr=success_yerr(rows),
        fmt="o",
        color="tab:blue",
        capsize=3,
        label="trials (bars: 95 % Wilson interval)",
    )
    ax.plot(
        [r["kept_tokens_mean"] for r in front],
        [r["success_rate"] for r in front],
        "o-",
        c="tab:red",
        label="Pareto front",
    )
    for r in rows:
        if r.get("variant"):
            ax.annotate(r["variant"], (r["kept_tokens_mean"], r["success_rate"]), fontsize=7)
    ax.set_xlabel("kept patch tokens (mean per inference)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def export_best(cfg: TuneConfig, rows: list[dict[str, Any]], out: Path) -> Path | None:
    if not rows:
        return None
    best = rows[0]
    params = {k: best[k] for k in DEFAULTS}
    tc = dataclasses.replace(
        train_config(cfg, params, out / "best", cfg.steps),
        resume=False,
        stop_after=None,
        out="runs/train_best",
        save_every=None,
        log_every=None,
        wandb_mode="offline",
        keep_checkpoints=None,
    )
    path = out / "best_train_config.json"
    body = {"train": tc.to_dict(), "trial": best}
    path.write_text(json.dumps(body, indent=1))
    return path


def absolute_paths(cfg: TuneConfig) -> TuneConfig:
    """The trial's data, init_from and norm stats as absolute paths (trials run in other
    folders); the norm stats of `init_from` when none are given (its weights were trained on
    them)."""
    from policies.loading import plan_load

    t = cfg.train
    norm_stats = t.norm_stats
    if t.init_from and not norm_stats:
        norm_stats = str(plan_load(t.init_from).norm_stats)

    def resolved(path: str) -> str:
        return str(Path(path).resolve()) if path else ""

    train = dataclasses.replace(
        t,
        data=resolved(t.data),
        init_from=resolved(t.init_from),
        norm_stats=resolved(norm_stats),
        tokenizer_path=resolved(t.tokenizer_path),
    )
    return dataclasses.replace(cfg, train=train)


def run_tune(cfg: TuneConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg.validate()
    env.apply_defaults()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = absolute_paths(dataclasses.replace(cfg, out=str(out)))
    import ray

    owned = env.connect_ray(cfg.address, num_cpus=cfg.ray_num_cpus)
    try:
        random.seed(cfg.seed)  # PBT draws its exploit/explore choices from Python's random
        results = build_tuner(cfg, out / "tune").fit()
        rows = collect_rows(results)
        evaluate_front(cfg, rows, out)  # the report block: what a report may quote
    finally:
        if owned:
            ray.shutdown()
    write_table(rows, out)
    if rows:
        plot_pareto(rows, out / "pareto.png", f"prunepi tune: {cfg.experiment}")
    best = export_best(cfg, rows, out)
    if cfg.experiment == "noise-ablation":
        from tune.report import write_ablation_report

        write_ablation_report(cfg, rows, out, time.perf_counter() - t0)
    _print(rows)
    return {"rows": rows, "best": str(best) if best else None, "errors": results.num_errors}


def _print(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'trial':<28} {'scorer':<9} {'schedule':<9} {'budget':<11} "
        f"{'success [95% CI] n':>25} {'kept':>7} {'score':>6}"
    )
    for r in rows:
        name = r.get("variant") or r["trial_id"]
        print(
            f"{name[:28]:<28} {r['scorer']:<9} {r['schedule']:<9} {r['budget']:<11} "
            f"{success_text(r):>25} {r['kept_tokens_mean']:>7.1f} {r['score']:>6.3f}"
        )
