"""`prunepi curve` without Ray: the point grid, each point's rollout config, the
leave-the-interval rule and the JSON / CSV / Markdown / PNG writers on synthetic results."""

from __future__ import annotations

import csv
import json

import pytest

from policies.pruning.config import PrunerConfig
from prunepi.cli import parse
from services.curve.config import (
    DEFAULT_BUDGETS,
    CurveConfig,
    Point,
    point_grid,
    point_pruner,
    point_rollout,
)
from services.curve.driver import write_curve
from services.curve.report import CURVE_FILES, leaves_interval, point_record, success_row
from services.rollout.config import RolloutConfig
from services.rollout.stats import wilson_interval

TASKS = ("put the red block in the bowl", "stack the red block on the blue block")


def test_point_grid_runs_the_reference_once_and_own_counts_once():
    pts = point_grid(("random", "lightvla", "lightvla-adaptive", "grid"), DEFAULT_BUDGETS)
    names = [p.name for p in pts]
    assert names[0] == "unpruned_1" and names.count("unpruned_1") == 1
    assert names[1:7] == [f"random_{b:g}" for b in (0.5, 0.25, 0.15, 0.1, 0.05, 0.02)]
    assert [p for p in pts if p.selector == "lightvla-adaptive"] == [
        Point("lightvla-adaptive", None)
    ]
    assert len(pts) == 1 + 3 * 6 + 1 and len(set(names)) == len(names)
    # no 1.0: no reference; budgets are run largest first whatever their order
    assert [p.name for p in point_grid(("grid",), (0.1, 0.5))] == ["grid_0.5", "grid_0.1"]


def _synthetic_results(successes: list[int], n: int, kept: float) -> dict:
    tasks = {
        t: {"success_rate": k / n, "episodes": n, "kept_tokens_mean": kept}
        for t, k in zip(TASKS, successes)
    }
    total = sum(successes)
    return {
        "success_rate": total / (n * len(TASKS)),
        "successes": total,
        "episodes": n * len(TASKS),
        "kept_tokens_mean": kept,
        "total_tokens": 192,
        "tasks": tasks,
    }


def _record(selector: str, budget: float | None, successes: list[int], kept: float) -> dict:
    point = Point(selector, budget)
    return point_record(
        point,
        _synthetic_results(successes, 25, kept),
        latency_ms=12.5,
        prefix_len=int(kept) + 9,
        pruning=None if selector == "unpruned" else {"scorer": selector},
        results_file=f"points/{point.name}.json",
    )


def synthetic_points() -> list[dict]:
    # unpruned 45/50: Wilson [0.786, 0.957]
    return [
        _record("unpruned", 1.0, [23, 22], 128.0),
        _record("random", 0.5, [22, 21], 64.0),  # 43/50, inside
        _record("random", 0.25, [16, 14], 32.0),  # 30/50, hi 0.72 < 0.786: leaves
        _record("random", 0.1, [5, 5], 13.0),  # 10/50, leaves too (smaller budget)
        _record("grid", 0.5, [23, 21], 64.0),
        _record("grid", 0.25, [21, 20], 32.0),  # 41/50, hi 0.90: never leaves
        _record("lightvla-adaptive", None, [2, 1], 3.0),  # own count, leaves
    ]


def test_success_rows_take_the_keys_they_find_else_compute_the_interval():
    row = success_row({"success_rate": 0.8, "episodes": 10, "kept_tokens_mean": 4.0})
    assert row["successes"] == 8 and row["ci95"] == list(wilson_interval(8, 10))
    given = {"success_rate": 0.8, "episodes": 10, "kept_tokens_mean": 4.0, "successes": 8}
    row = success_row({**given, "success_ci95": [0.1, 0.9]})
    assert row["ci95"] == [0.1, 0.9] and row["success_rate"] == 0.8


def test_leave_the_unpruned_interval_rule():
    pts = synthetic_points()
    ref_low = pts[0]["ci95"][0]
    assert ref_low == pytest.approx(0.786, abs=1e-3)
    leaves = leaves_interval(pts)
    assert {s: (p and p["name"]) for s, p in leaves.items()} == {
        "random": "random_0.25",  # the largest budget below, not the smallest
        "grid": None,
        "lightvla-adaptive": "lightvla-adaptive_own",
    }
    assert leaves_interval(pts[1:]) == {}  # no reference point: no rule


def test_writers_json_csv_markdown_png(tmp_path):
    pts = synthetic_points()
    header = {
        "suite": "goal",
        "checkpoint": "/ckpt",
        "command": "prunepi curve --checkpoint /ckpt",
        "episodes_per_task": 25,
        "episodes_per_point": 50,
        "init_state_start": 0,
        "latency_device": "cpu",
        "latency_repeats": 5,
        "machine": {"cpu": "x86_64", "cpu_count": 2},
        "config": {},
    }
    curve = write_curve(tmp_path, header, pts, wall_s=61.0)
    assert json.loads((tmp_path / "curve.json").read_text()) == curve
    assert curve["tasks"] == list(TASKS) and curve["leaves_unpruned"]["grid"] is None
    with open(tmp_path / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(pts) * (1 + len(TASKS))
    first = rows[0]
    assert (first["name"], first["task"], first["successes"], first["episodes"]) == (
        "unpruned_1",
        "all",
        "45",
        "50",
    )
    assert float(first["ci95_low"]) == pytest.approx(pts[0]["ci95"][0])
    assert {r["budget"] for r in rows if r["selector"] == "lightvla-adaptive"} == {""}
    md = (tmp_path / CURVE_FILES["md"]).read_text()
    assert "| random | 0.25 | 32.0 of 192 | 41 | 12.5 | 0.60 [0.46, 0.72] | 30/50 |" in md
    assert "- `random`: budget 0.25 (32.0 tokens)" in md
    assert "- `grid`: never" in md
    assert "- `lightvla-adaptive`: its own count (3.0 tokens)" in md
    assert "wall time: 61 s" in md and "prunepi curve --checkpoint /ckpt" in md
    assert "cpu_count 2" in md and f"- task 1: {TASKS[1]}" in md
    png = (tmp_path / "curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_point_rollouts_carry_each_pruner(tiny_checkpoint):
    ckpt = str(tiny_checkpoint)
    base = RolloutConfig(checkpoint=ckpt, pruning=PrunerConfig(position_ids="compact"))
    cfg = CurveConfig(rollout=base, selectors=("lightvla", "checkpoint", "checkpoint-own"))
    own = cfg.own_pruner()  # the tiny checkpoint's: lightvla, keep_ratio 0.25
    assert own.enabled and own.keep_ratio == 0.25
    ref = point_rollout(cfg, Point("unpruned", 1.0), own)
    assert ref.prune is False and ref.pruning == PrunerConfig()
    assert ref.out == "runs/curve/points/unpruned_1.json"
    lv = point_rollout(cfg, Point("lightvla", 0.1), own)
    assert lv.prune is True and lv.pruning.position_ids == "compact"  # the given base
    assert (lv.pruning.scorer, lv.pruning.budget, lv.pruning.keep_ratio) == (
        "lightvla",
        "keep_ratio",
        0.1,
    )
    assert point_rollout(cfg, Point("checkpoint", 0.5), own).pruning.keep_ratio == 0.5
    assert point_rollout(cfg, Point("checkpoint-own", None), own).pruning == own
    cfg.validate()  # every point's RolloutConfig validates (plan_load, no tensors)
    with pytest.raises(ValueError, match="has no pruner"):
        point_pruner(cfg, Point("checkpoint", 0.5), PrunerConfig())


def test_curve_config_errors_name_the_field(tiny_checkpoint):
    ok = RolloutConfig(checkpoint=str(tiny_checkpoint))
    cases = [
        (dict(rollout=RolloutConfig()), "checkpoint must be a checkpoint folder"),
        (dict(selectors=("fastv",)), "selectors must be distinct names"),
        (dict(selectors=("grid", "grid")), "selectors must be distinct names"),
        (dict(budgets=(1.0, 0.0)), r"budgets must be fractions in \(0, 1\]"),
        (dict(budgets=(0.5, 0.5)), "budgets must not repeat"),
        (dict(latency_repeats=0), "latency_repeats must be an integer >= 1"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            CurveConfig(**{"rollout": ok, **kw}).validate()
    with pytest.raises(ValueError, match="out is each point's results file"):
        CurveConfig(rollout=RolloutConfig(checkpoint="x", out="r.json")).validate()
    with pytest.raises(ValueError, match="prune is set per point"):
        CurveConfig(rollout=RolloutConfig(checkpoint="x", prune=True)).validate()


def test_cli_flags_reach_the_nested_rollout():
    cfg = parse(
        "curve",
        ["--checkpoint", "ck", "--suite", "spatial", "--selectors", "random", "grid"]
        + ["--budgets", "1", "0.3", "--num-workers", "3", "--out-dir", "o"],
    )
    assert isinstance(cfg, CurveConfig)
    assert (cfg.rollout.checkpoint, cfg.rollout.suite, cfg.rollout.num_workers) == (
        "ck",
        "spatial",
        3,
    )
    assert cfg.rollout.episodes_per_task == 50  # the curve's default
    assert cfg.selectors == ("random", "grid") and cfg.budgets == (1.0, 0.3)
    assert cfg.out_dir == "o"


def test_the_plot_draws_each_selector_with_its_intervals_and_the_unpruned_band(
    tmp_path, monkeypatch
):
    """What curve.png shows, checked on the calls that draw it (not its file size)."""
    import matplotlib.axes

    from services.curve.plot import plot_curve

    bars, bands = [], []
    real_errorbar, real_axhspan = matplotlib.axes.Axes.errorbar, matplotlib.axes.Axes.axhspan

    def errorbar(ax, x, y, yerr=None, **kw):
        bars.append((ax.get_title(), kw["label"], list(x), list(y), yerr))
        return real_errorbar(ax, x, y, yerr, **kw)

    def axhspan(ax, lo, hi, **kw):
        bands.append((lo, hi))
        return real_axhspan(ax, lo, hi, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    monkeypatch.setattr(matplotlib.axes.Axes, "axhspan", axhspan)
    pts = synthetic_points()
    plot_curve(pts, list(TASKS), tmp_path / "curve.png")
    assert len(bars) == 3 * (1 + len(TASKS))  # random, grid, lightvla-adaptive per panel
    _, label, xs, ys, yerr = bars[0]  # the overall panel's first selector
    assert label == "random" and xs == [13.0, 32.0, 64.0]  # by kept tokens
    assert ys == [p["success_rate"] for p in (pts[3], pts[2], pts[1])]
    assert yerr[0][0] == pytest.approx(pts[3]["success_rate"] - pts[3]["ci95"][0])
    assert bands[0] == tuple(pts[0]["ci95"])  # the unpruned interval, overall
