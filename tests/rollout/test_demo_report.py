"""The demo's report: the side-by-side table, the plot and the config checks (no Ray)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from policies.pruning.config import PrunerConfig
from services.demo import DemoConfig, plot, rollout_config, served_variants, side_by_side
from services.rollout.config import REPORT_BLOCK
from services.rollout.driver import episode_jobs
from services.rollout.episode import EpisodeResult
from services.rollout.results import aggregate, validate_results
from services.rollout.stats import wilson_interval


def _results(wins: tuple[int, int], kept: int, n: int = 4) -> dict:
    """RESULTS of two tasks, `wins[i]` successes out of `n` episodes (states 0..n-1)."""
    tasks = ("put the red block in the bowl", "stack the red block")
    episodes = [
        EpisodeResult(task, t, k, k < wins[t], 40, kept_tokens=[kept], total_tokens=192)
        for t, task in enumerate(tasks)
        for k in range(n)
    ]
    return aggregate(episodes)


def test_side_by_side_and_plot(tmp_path):
    results = {
        "pruned": _results((2, 2), 32),
        "unpruned": _results((3, 3), 128),
        "lightvla": _results((1, 0), 32),
    }
    for r in results.values():
        validate_results(r)
    table = side_by_side(results)
    # rates with their Wilson intervals and episode counts: 2/4 -> [0.15, 0.85]
    assert "put the red block in the bowl" in table and "128.0" in table
    lines = table.splitlines()
    assert "pruned: success" in lines[0] and lines[0].index("unpruned") < lines[0].index("lightvla")
    first = lines[1]  # task 0: pruned 2/4, unpruned 3/4, lightvla 1/4, in that order
    cells = [
        first.index(c)
        for c in ("0.50 [0.15, 0.85] n=4", "0.75 [0.30, 0.95] n=4", "0.25 [0.05, 0.70] n=4")
    ]
    assert cells == sorted(cells)
    assert "0.75 [0.41, 0.93] n=8" in lines[-1]  # all tasks, unpruned: 6 of 8
    assert "0.12 [0.02, 0.47] n=8" in lines[-1]  # lightvla: 1 of 8
    path = plot(results, tmp_path / "plot.png")
    assert path.stat().st_size > 1000


def test_plot_draws_the_intervals_as_error_bars(tmp_path, monkeypatch):
    import matplotlib.axes

    bars = []
    real = matplotlib.axes.Axes.errorbar

    def recording(ax, x, y, yerr, **kw):
        bars.append(yerr)
        return real(ax, x, y, yerr, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", recording)
    results = {"pruned": _results((0, 4), 32), "unpruned": _results((1, 4), 128)}
    plot(results, tmp_path / "plot.png")
    assert len(bars) == 6  # 2 tasks x 2 variants + the 2 overall markers
    lo, hi = wilson_interval(0, 4)
    assert bars[0] == [[0.0], [pytest.approx(hi)]]  # 0 of 4: nothing below, up to the bound


def demo_with(train: dict | None = None, rollout: dict | None = None, **over) -> DemoConfig:
    """A DemoConfig overriding fields of its nested train / rollout configs."""
    from services.demo import demo_rollout, demo_train

    return DemoConfig(
        train=dataclasses.replace(demo_train(), **(train or {})),
        rollout=dataclasses.replace(demo_rollout(), **(rollout or {})),
        **over,
    )


def test_demo_rolls_out_on_the_report_block():
    cfg = demo_with(rollout={"episodes_per_task": 7})
    rc = rollout_config(cfg, "ws://127.0.0.1:1/pruned/", Path("r.json"), cpus=1.0)
    assert rc.init_state_start == REPORT_BLOCK == 0 and rc.episodes_per_task == 7
    assert episode_jobs(rc)[:2] == [(0, 0), (0, 1)]
    with pytest.raises(ValueError, match="episodes_per_task=201"):
        demo_with(rollout={"episodes_per_task": 201}).validate()


def test_demo_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="train.steps must be an integer >= 1, got 0"):
        demo_with(train={"steps": 0}).validate()
    with pytest.raises(ValueError, match="demo.rollout.envs_per_worker must be an integer >= 1"):
        demo_with(rollout={"envs_per_worker": 0}).validate()
    with pytest.raises(ValueError, match="train.pruning must be enabled with budget 'keep_ratio'"):
        demo_with(train={"pruning": PrunerConfig(enabled=False)}).validate()
    adaptive = PrunerConfig(enabled=True, budget="adaptive")
    with pytest.raises(ValueError, match="budget='adaptive'"):
        demo_with(train={"pruning": adaptive}).validate()
    with pytest.raises(ValueError, match=str(tmp_path / "none")):
        DemoConfig(reference=str(tmp_path / "none")).check_reference()
    DemoConfig().validate()
    assert dataclasses.asdict(DemoConfig())["train"]["pruning"]["enabled"]


def test_demo_serves_the_training_free_point_at_its_own_budget(tmp_path):
    pruning = PrunerConfig(enabled=True, scorer="residual", budget="keep_ratio", keep_ratio=0.25)
    cfg = demo_with(train={"pruning": pruning}, reference=str(tmp_path / "ref"))
    variants = served_variants(cfg, tmp_path / "ft")
    assert list(variants) == ["pruned", "unpruned", "lightvla"]
    assert variants["pruned"] == {"checkpoint": str(tmp_path / "ft"), "prune": None}
    assert variants["unpruned"]["prune"] is False
    light = variants["lightvla"]
    assert light["checkpoint"] == str((tmp_path / "ref").resolve())
    p = light["pruning"]
    assert (p.enabled, p.scorer, p.budget, p.keep_ratio) == (True, "lightvla", "keep_ratio", 0.25)
