"""The demo's report: the side-by-side table, the plot and the config checks (no Ray)."""

from __future__ import annotations

import dataclasses

import pytest

from policies.pruning.config import PrunerConfig
from services.demo import DemoConfig, plot, side_by_side
from services.rollout.results import validate_results


def _results(success: float, kept: float) -> dict:
    row = {
        "success_rate": success,
        "episodes": 2,
        "kept_tokens_mean": kept,
        "kept_tokens_min": int(kept),
        "kept_tokens_max": int(kept),
        "episode_length_mean": 40.0,
    }
    return {
        "success_rate": success,
        "kept_tokens_mean": kept,
        "total_tokens": 192,
        "episodes": 4,
        "tasks": {"put the red block in the bowl": row, "stack the red block": dict(row)},
    }


def test_side_by_side_and_plot(tmp_path):
    results = {"pruned": _results(0.5, 32.0), "unpruned": _results(0.75, 128.0)}
    for r in results.values():
        validate_results(r)
    table = side_by_side(results)
    assert "put the red block in the bowl" in table and "0.50" in table and "128.0" in table
    path = plot(results, tmp_path / "plot.png")
    assert path.stat().st_size > 1000


def test_demo_config_errors_name_the_field():
    with pytest.raises(ValueError, match="train_steps must be positive, got 0"):
        DemoConfig(train_steps=0).validate()
    with pytest.raises(ValueError, match="pruning.enabled must be True"):
        DemoConfig(pruning=PrunerConfig(enabled=False)).validate()
    DemoConfig().validate()
    assert dataclasses.asdict(DemoConfig())["pruning"]["enabled"]
