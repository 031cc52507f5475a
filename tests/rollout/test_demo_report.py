"""The demo's report: the side-by-side table, the plot and the config checks (no Ray)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from policies.pruning.config import PrunerConfig
from services.demo import DemoConfig, plot, rollout_config, side_by_side
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
    results = {"pruned": _results((2, 2), 32), "unpruned": _results((3, 3), 128)}
    for r in results.values():
        validate_results(r)
    table = side_by_side(results)
    # rates with their Wilson intervals and episode counts: 2/4 -> [0.15, 0.85]
    assert "put the red block in the bowl" in table and "128.0" in table
    assert "0.50 [0.15, 0.85] n=4" in table and "0.75 [0.30, 0.95] n=4" in table
    assert "0.75 [0.41, 0.93] n=8" in table  # all tasks: 6 of 8
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
    assert len(bars) == 6  # 2 tasks x 2 variants + the 2 overall stars
    lo, hi = wilson_interval(0, 4)
    assert bars[0] == [[0.0], [pytest.approx(hi)]]  # 0 of 4: nothing below, up to the bound


def test_demo_rolls_out_on_the_report_block():
    cfg = DemoConfig(episodes_per_task=7)
    rc = rollout_config(cfg, "ws://127.0.0.1:1/pruned/", Path("r.json"), cpus=1.0)
    assert rc.init_state_start == REPORT_BLOCK == 0 and rc.episodes_per_task == 7
    assert episode_jobs(rc)[:2] == [(0, 0), (0, 1)]
    with pytest.raises(ValueError, match="episodes_per_task=201"):
        DemoConfig(episodes_per_task=201).validate()


def test_demo_config_errors_name_the_field():
    with pytest.raises(ValueError, match="train_steps must be positive, got 0"):
        DemoConfig(train_steps=0).validate()
    with pytest.raises(ValueError, match="pruning.enabled must be True"):
        DemoConfig(pruning=PrunerConfig(enabled=False)).validate()
    DemoConfig().validate()
    assert dataclasses.asdict(DemoConfig())["pruning"]["enabled"]
