"""`prunepi curve` end to end on a real local Ray: 2 selectors x 2 budgets (1.0 is the
unpruned reference, run once), a tiny checkpoint, 2 short episodes of one task per point,
plus the checkpoint as a trained point at its own pruner; all four files. Four rollouts:
each point starts its own actor (about 5 s on idle cores)."""

from __future__ import annotations

import csv
import json

import pytest

from services.curve import CurveConfig, run_curve
from services.curve.report import CURVE_FILES
from services.rollout.config import RolloutConfig

pytestmark = [pytest.mark.ray, pytest.mark.render]


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_curve_rolls_out_every_point_and_writes_the_files(local_ray, tiny_checkpoint, tmp_path):
    rollout = RolloutConfig(
        checkpoint=str(tiny_checkpoint),
        suite="goal",
        tasks=(0,),
        episodes_per_task=2,
        max_steps=5,  # one policy query per episode (replan every 5)
        num_workers=1,
        num_cpus_per_worker=0.5,
    )
    cfg = CurveConfig(
        rollout=rollout,
        selectors=("random", "grid"),
        budgets=(1.0, 0.25),
        trained=(f"tiny={tiny_checkpoint}",),  # its own pruner: lightvla at keep_ratio 0.25
        out_dir=str(tmp_path / "curve"),
        latency_warmup=1,
        latency_repeats=2,
    )
    curve = run_curve(cfg, command="prunepi curve (test)")
    out = tmp_path / "curve"
    assert json.loads((out / "curve.json").read_text()) == curve
    pts = {p["name"]: p for p in curve["points"]}
    assert list(pts) == ["unpruned_1", "random_0.25", "grid_0.25", "trained-tiny_own"]
    # 2 valid cameras x 64 patches of the tiny model; the third camera is never kept
    kept = {n: p["kept_tokens_mean"] for n, p in pts.items()}
    assert kept == {
        "unpruned_1": 128.0,
        "random_0.25": 32.0,
        "grid_0.25": 32.0,
        "trained-tiny_own": 32.0,
    }
    assert pts["trained-tiny_own"]["pruning"]["scorer"] == "lightvla"
    (row,) = curve["trained_vs_training_free"]
    assert row["trained"] == "trained-tiny_own" and set(row["nearest"]) == {
        "random_0.25",
        "grid_0.25",
    }
    for p in pts.values():
        assert p["episodes"] == 2 and 0 <= p["successes"] <= 2
        assert p["ci95"][0] <= p["success_rate"] <= p["ci95"][1]
        assert p["latency_ms"] > 0 and (out / p["results_file"]).is_file()
        assert list(p["tasks"]) == curve["tasks"] and len(curve["tasks"]) == 1
    # the prefix really shrinks: the 128 valid patches + the prompt, unpruned (eval leaves
    # the absent camera's slots out); 32 kept patches + the same prompt, pruned
    assert pts["unpruned_1"]["prefix_len"] - pts["grid_0.25"]["prefix_len"] == 128 - 32
    assert pts["random_0.25"]["prefix_len"] == pts["grid_0.25"]["prefix_len"]
    assert pts["unpruned_1"]["pruning"] is None and pts["grid_0.25"]["pruning"]["scorer"] == "grid"
    with open(out / "curve.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4 * 2  # overall + the one task, per point
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / CURVE_FILES["md"]).read_text()
    assert "prunepi curve (test)" in md and "| grid | 0.25 | 32.0 of 192 |" in md
    assert "Where success leaves the unpruned interval" in md
    assert "## Trained against training-free at equal kept tokens" in md
