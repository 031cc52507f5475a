"""A tiny search on a real local Ray: Tune trials that fine-tune (Ray Train inside the
trial) and roll out, then the trials table, Pareto plot and best config; and a restore."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tune.config import TuneConfig
from tune.objective import pareto_front, scalarize
from tune.space import ABLATION, pruner_config, trial_params
from tune.trial import rung_steps

pytestmark = pytest.mark.ray


def test_rung_steps_end_at_total():
    assert rung_steps(300, 3) == [100, 200, 300]
    assert rung_steps(2, 3) == [1, 2]


def test_pareto_front_and_scalarization():
    rows = [
        {"success_rate": 0.9, "kept_tokens_mean": 100.0},
        {"success_rate": 0.8, "kept_tokens_mean": 20.0},
        {"success_rate": 0.7, "kept_tokens_mean": 50.0},  # dominated by the second
        {"success_rate": 0.2, "kept_tokens_mean": 2.0},
    ]
    front = pareto_front(rows)
    assert [r["kept_tokens_mean"] for r in front] == [2.0, 20.0, 100.0]
    assert scalarize({"success_rate": 0.8, "kept_ratio": 0.4}, 0.25) == pytest.approx(0.7)


def test_every_ablation_variant_is_a_valid_pruner():
    for name in ABLATION:
        cfg = pruner_config(trial_params({"variant": name}), total_steps=10)
        assert cfg.enabled


def test_the_ablation_runs_the_chosen_variants_in_ablation_order():
    masked = "lightvla / keep-ratio loss / masked"
    assert pruner_config(trial_params({"variant": masked}), 10).train_tokens == "masked"
    chosen = tune_with(variants=(masked, "lightvla / no noise"))
    chosen.validate()
    assert chosen.ablation_variants == ("lightvla / no noise", masked)
    assert tune_with().ablation_variants == tuple(ABLATION)
    with pytest.raises(ValueError, match=r"tune.variants must be names of .*got \('linear',\)"):
        tune_with(variants=("linear",)).validate()


def tune_with(train: dict | None = None, rollout: dict | None = None, **over) -> TuneConfig:
    """A TuneConfig overriding fields of its nested train / rollout configs."""
    from tune.config import trial_rollout, trial_train

    t = dataclasses.replace(trial_train(), **{"data": "x", **(train or {})})
    return TuneConfig(
        train=t, rollout=dataclasses.replace(trial_rollout(), **(rollout or {})), **over
    )


def test_a_report_block_reaching_the_selection_block_is_refused():
    tune_with(report_episodes_per_task=100).validate()
    with pytest.raises(ValueError, match=r"REPORT_BLOCK=0 .* states 0-149, which overlap both"):
        tune_with(report_episodes_per_task=150).validate()


def test_validation_names_field():
    with pytest.raises(ValueError, match="tune.searcher"):
        tune_with(searcher="grid").validate()
    with pytest.raises(ValueError, match=r"tune.steps must be >= rungs \(2\), got 1"):
        tune_with(steps=1, rungs=2).validate()
    with pytest.raises(ValueError, match="train.lr must be > 0, got 0.0"):
        tune_with(train={"lr": 0.0}).validate()
    with pytest.raises(ValueError, match="train.batch_size"):
        tune_with(train={"batch_size": 0}).validate()
    with pytest.raises(ValueError, match="train.data must be a LeRobot dataset folder"):
        tune_with(train={"data": ""}).validate()
    with pytest.raises(ValueError, match="tune.rollout.episodes_per_task must be an integer >= 1"):
        tune_with(rollout={"episodes_per_task": 0}).validate()


def test_the_nested_configs_survive_the_ray_round_trip():
    cfg = tune_with(
        train={"lr": 1e-3},
        rollout={"tasks": (1, 2), "suite": "goal"},
        variants=("lightvla / no noise",),
    )
    again = TuneConfig(**json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.rollout.tasks == (1, 2)


def test_trials_select_on_the_selection_block_never_the_report_block():
    from services.rollout.config import REPORT_BLOCK, SELECTION_BLOCK
    from services.rollout.driver import episode_jobs
    from tune.trial import rollout_config

    cfg = tune_with(rollout={"suite": "goal", "tasks": (1,), "episodes_per_task": 3})
    rc = rollout_config(cfg, Path("ckpt"), Path("rollout_2.json"), init_spread=0.03)
    assert rc.init_state_start == SELECTION_BLOCK != REPORT_BLOCK
    assert episode_jobs(rc) == [(1, 100), (1, 101), (1, 102)]
    assert (rc.checkpoint, rc.init_spread, rc.seed) == ("ckpt", 0.03, 7)
    # real LIBERO has no selection block (its 50 states are the report block)
    with pytest.raises(ValueError, match=r"SELECTION_BLOCK \+ episodes_per_task must be <= 50"):
        tune_with(rollout={"suite": "libero_goal"}).validate()


def _row(name: str, wins: int, n: int, kept: float) -> dict:
    from services.rollout.stats import wilson_interval

    lo, hi = wilson_interval(wins, n)
    return {
        "trial_id": name,
        "variant": name,
        "scorer": "residual",
        "schedule": "linear",
        "noise_scale": 1.0,
        "budget": "keep_ratio",
        "success_rate": wins / n,
        "successes": wins,
        "episodes": n,
        "success_ci95_low": lo,
        "success_ci95_high": hi,
        "kept_tokens_mean": kept,
        "total_tokens": 48,
        "kept_ratio": kept / 48,
        "score": wins / n - 0.25 * kept / 48,
        "train_loss": 0.5,
        "train_argmax_union": 3.0,
        "train_queries_std": 0.1,
    }


def test_tune_outputs_show_the_interval_and_episodes(tmp_path, capsys, monkeypatch):
    from tune.driver import _print, plot_pareto
    from tune.report import write_ablation_report
    from tune.success import success_text, success_yerr

    rows = [_row("lightvla / linear", 2, 3, 20.0), _row("lightvla / no noise", 3, 3, 48.0)]
    assert success_text(rows[0]) == "0.67 [0.21, 0.94] n=3"
    assert success_text({"success_rate": 0.5}) == "0.50"  # a row restored from before
    below, above = success_yerr(rows)
    assert below[1] == pytest.approx(1 - 0.4385, abs=1e-4) and above[1] == 0.0
    _print(rows)
    assert "0.67 [0.21, 0.94] n=3" in capsys.readouterr().out
    from types import SimpleNamespace

    from tune.progress import TrialProgress

    line = TrialProgress(2)._line(SimpleNamespace(trial_id="t1", last_result=rows[0]), "done")
    assert "success_rate 0.667 [0.21, 0.94] n=3  kept_tokens_mean 20" in line
    import matplotlib.axes

    drawn = {}
    real_errorbar, real_plot = matplotlib.axes.Axes.errorbar, matplotlib.axes.Axes.plot

    def errorbar(ax, x, y, yerr=None, **kw):
        drawn["trials"] = (list(x), list(y), yerr)
        return real_errorbar(ax, x, y, yerr=yerr, **kw)

    def plot(ax, x, y, *args, **kw):
        drawn["front"] = (list(x), list(y))
        return real_plot(ax, x, y, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    plot_pareto(rows, tmp_path / "pareto.png", "t")
    assert (tmp_path / "pareto.png").is_file()
    assert drawn["trials"][:2] == ([20.0, 48.0], [2 / 3, 1.0])
    assert drawn["trials"][2] == [list(below), list(above)]  # the Wilson bars
    # neither trial dominates the other (fewer tokens / higher success): both on the front
    assert sorted(zip(*drawn["front"])) == [(20.0, 2 / 3), (48.0, 1.0)]
    cfg = tune_with(rollout={"episodes_per_task": 3}, report_dir=str(tmp_path / "reports"))
    text = write_ablation_report(cfg, rows, tmp_path).read_text()
    # without report-block rollouts the selection block's numbers, said so
    assert "| 0.67 [0.21, 0.94] n=3 (selection block) |" in text and "(100-102)" in text


def test_the_ablation_report_quotes_the_report_block_and_the_late_telemetry(tmp_path):
    from tune.report import write_ablation_report

    row = _row("lightvla / no noise", 1, 3, 6.0)
    row.update(trial_id="t0", report_episodes=200, report_successes=150)
    row.update(report_kept_tokens_mean=12.0, time_total_s=600.0)
    run = tmp_path / "trials" / "t0"
    run.mkdir(parents=True)
    lines = [
        {"step": 10, "prune/argmax_union_mean": 9.0},
        {"step": 20, "prune/argmax_union_mean": 4.25, "prune/queries_std_mean": 0.0123},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = tune_with(rollout={"episodes_per_task": 3}, report_dir=str(tmp_path / "reports"))
    text = write_ablation_report(cfg, [row], tmp_path, wall_s=90.0).read_text()
    # 150/200 on the report block (Wilson [0.686, 0.805]), 12 of 48 slots kept
    assert "| 0.75 [0.69, 0.80] n=200 | 12.0 of 48 | 0.250 | 0.5 | 10.0 min |" in text
    assert "report block** of initial states (0-49, 50 episodes per task)" in text
    assert "| the user's port (768 slots) | 20600 | 2.3 | 0.003 |" in text
    # the last logged step, not the first; missing metrics stay empty
    assert "| lightvla / no noise | 20 |  |  |  | 4.25 |  | 0.0123 |" in text
    assert "| lightvla / linear | | | | | (trial failed or stopped) |" in text
    only = dataclasses.replace(cfg, variants=("lightvla / no noise",))
    text = write_ablation_report(only, [row], tmp_path, wall_s=90.0).read_text()
    assert "| lightvla / no noise |" in text and "lightvla / linear" not in text
    assert "wall time: 1.5 min" in text
    from tune.report import report_view

    view = report_view(row)  # what noise_ablation.png draws: the report block
    assert (view["successes"], view["episodes"], view["kept_tokens_mean"]) == (150, 200, 12.0)
    assert view["success_ci95_low"] == pytest.approx(0.686, abs=1e-3)
    assert report_view(_row("x", 1, 3, 6.0))["episodes"] == 3  # no report rollout: as it is
    assert (tmp_path / "reports" / "noise_ablation.png").is_file()


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from services.collect import CollectConfig, run_collect

    out = tmp_path_factory.mktemp("tune_data") / "demos"
    return run_collect(
        CollectConfig(
            suite="spatial", episodes_per_task=1, out=str(out), image_size=64, num_workers=1, seed=0
        )
    )


def tiny_search(demos, out, **over) -> TuneConfig:
    """2 trials of 2 steps, 5-step rollouts of one task at 28 px."""
    wandb_mode = over.pop("wandb_mode", "disabled")
    base = dict(
        out=str(out),
        trials=2,
        steps=2,
        report_dir=str(out.parent / "reports"),
        report_episodes_per_task=1,
    )
    return tune_with(
        train={"data": str(demos), "image_size": 28, "wandb_mode": wandb_mode},
        rollout={"suite": "spatial", "episodes_per_task": 1, "tasks": (0,), "max_steps": 5},
        **{**base, **over},
    )


def test_tiny_search_then_restore(demos, tmp_path):
    from tune.driver import run_tune

    # The default searcher: multi-objective TPE (success up, kept tokens down).
    cfg = tiny_search(demos, tmp_path / "tune", searcher="optuna", rungs=1, wandb_mode="offline")
    out = run_tune(cfg)
    rows = out["rows"]
    assert len(rows) == 2 and out["errors"] == 0
    for r in rows:
        assert 0.0 <= r["success_rate"] <= 1.0 and r["kept_tokens_mean"] > 0
        assert r["step"] == 2
        assert r["episodes"] == 1 and r["successes"] == round(r["success_rate"])
        assert r["success_ci95_low"] <= r["success_rate"] <= r["success_ci95_high"]
    table = json.loads((tmp_path / "tune" / "trials.json").read_text())
    assert len(table) == 2
    for trial in (tmp_path / "tune" / "trials").iterdir():  # chosen on the selection block
        rollout = json.loads((trial / "rollout_2.json").read_text())
        assert rollout["init_states"] == {"start": 100, "count": 1}
        assert any((trial / "wandb").glob("offline-run-*"))  # trials log like training does
    # ...and the Pareto front re-evaluated on the report block, with its interval
    report = json.loads((tmp_path / "tune" / "pareto_report.json").read_text())
    assert report and all(e["report_init_states"] == {"start": 0, "count": 1} for e in report)
    front = {e["trial_id"] for e in report}
    for r in rows:
        if r["trial_id"] in front:
            assert r["report_episodes"] == 1
            assert r["report_ci95_low"] <= r["report_success_rate"] <= r["report_ci95_high"]
    assert (tmp_path / "tune" / "trials.csv").read_text().count("\n") == 3
    assert (tmp_path / "tune" / "pareto.png").stat().st_size > 0
    best = json.loads((tmp_path / "tune" / "best_train_config.json").read_text())
    assert best["train"]["pruning"]["enabled"] is True
    # The same command again restores the finished experiment instead of starting over:
    # the same trials and results, and no trial trains or rolls out again.
    trials = sorted((tmp_path / "tune" / "trials").iterdir())
    before = {t.name: sorted((f.name, f.stat().st_mtime_ns) for f in t.iterdir()) for t in trials}
    again = run_tune(cfg)
    key = ("trial_id", "success_rate", "kept_tokens_mean", "step")
    assert sorted(tuple(r[k] for k in key) for r in again["rows"]) == sorted(
        tuple(r[k] for k in key) for r in rows
    )
    after = {t.name: sorted((f.name, f.stat().st_mtime_ns) for f in t.iterdir()) for t in trials}
    assert after == before


def test_tiny_pbt_hands_checkpoints_between_trials(demos, tmp_path):
    """The population-based option: 2 trials, 2 rungs; after the first rung (synchronous
    PBT) the worse trial continues from the better one's step-1 checkpoint, and both still
    finish every step."""
    from tune.driver import run_tune
    from tune.trial import LINEAGE_FILE

    cfg = tiny_search(demos, tmp_path / "pbt", searcher="pbt", rungs=2)
    out = run_tune(cfg)
    assert out["errors"] == 0 and len(out["rows"]) == 2
    assert all(r["step"] == 2 and r["rungs_done"] == 2 for r in out["rows"])
    trials = {t.name: t for t in (tmp_path / "pbt" / "trials").iterdir()}
    for trial in trials.values():
        assert (trial / "checkpoints" / "2" / "model.safetensors").is_file()
    handed = {
        name: [json.loads(line) for line in (t / LINEAGE_FILE).read_text().splitlines()]
        for name, t in trials.items()
        if (t / LINEAGE_FILE).is_file()
    }
    assert len(handed) == 1, handed  # the bottom half (one trial) exploited the top half
    ((taker, records),) = handed.items()
    giver = next(n for n in trials if n != taker)
    handoffs = [(r["trial"], r["step"]) for r in records]
    # at the first rung from the better trial (and again at the last one, where PBT
    # perturbs once more before the trial ends)
    assert handoffs[0] == (giver, 1) and {t for t, _ in handoffs} == {giver}


def test_a_rerun_reuses_a_report_rollout_only_when_it_is_this_ones(tmp_path):
    import os

    from services.rollout.episode import EpisodeResult
    from services.rollout.results import aggregate, write_results
    from tune.report_block import report_rollout, reusable

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"weights")  # only its time is read
    os.utime(ckpt / "model.safetensors", (1e9, 1e9))
    eps = [EpisodeResult("t", 0, k, k % 2 == 0, 10, [4], 48) for k in range(2)]
    path = write_results(aggregate(eps), tmp_path / "report" / "t0.json")
    cfg = tune_with(report_episodes_per_task=2, rollout={"suite": "spatial"})
    rollout = report_rollout(cfg, ckpt, path)
    assert rollout.init_state_start == 0 and rollout.num_workers == cfg.report_workers
    assert reusable(path, rollout, tasks=1)["successes"] == 1
    assert reusable(path, rollout, tasks=4) is None  # another task list
    more = dataclasses.replace(rollout, episodes_per_task=3)
    assert reusable(path, more, tasks=1) is None  # another episode count
    later = path.stat().st_mtime + 10  # the checkpoint retrained after the rollout
    os.utime(ckpt / "model.safetensors", (later, later))
    assert reusable(path, rollout, tasks=1) is None
    assert reusable(tmp_path / "none.json", rollout, tasks=1) is None
