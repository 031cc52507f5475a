"""Trained checkpoints on the curve (issue 13): `--trained LABEL=CKPT` and `--trained-from
TUNE_OUT` add one point each at the checkpoint's own pruner, and the report sets each
beside the training-free points at its kept tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from services.curve.config import (
    TRAINED,
    CurveConfig,
    Point,
    parse_trained,
    point_rollout,
    tune_trials,
)
from services.curve.report import comparison_lines, trained_vs_free, verdict
from services.rollout.config import RolloutConfig
from tests.curve.test_curve_report import _record, synthetic_points

REFERENCE = Path(__file__).resolve().parents[2] / "models" / "reference"


def test_trained_entries_parse_with_and_without_a_label():
    p = parse_trained("lightvla / no noise=runs/abl/trials/t0/checkpoints/1000")
    assert p == Point(TRAINED + "lightvla / no noise", None, "runs/abl/trials/t0/checkpoints/1000")
    assert p.name == "trained-lightvla_no_noise_own"  # file-name safe
    bare = parse_trained("runs/abl/trials/t0/checkpoints/1000")
    assert bare.selector == TRAINED + "t0"  # the run folder names it
    with pytest.raises(ValueError, match="LABEL=CHECKPOINT"):
        parse_trained("=runs/x")


def test_a_tune_folder_gives_each_trial_its_last_checkpoint(tmp_path, tiny_checkpoint):
    for trial, variant in (("t0", "lightvla / linear"), ("t1", None)):
        run = tmp_path / "trials" / trial
        for step in (5, 10):
            shutil.copytree(tiny_checkpoint, run / "checkpoints" / str(step))
        params = {"scorer": "lightvla", **({"variant": variant} if variant else {})}
        (run / "params.json").write_text(json.dumps(params))
    (tmp_path / "trials" / "t2").mkdir()  # a trial that never saved: left out
    entries = tune_trials(str(tmp_path))
    assert entries == [
        f"lightvla / linear={tmp_path}/trials/t0/checkpoints/10",
        f"t1={tmp_path}/trials/t1/checkpoints/10",
    ]
    with pytest.raises(ValueError, match="trained_from must be a `prunepi tune` OUT folder"):
        tune_trials(str(tmp_path / "nothing"))


def test_trained_points_roll_out_their_own_checkpoint_and_pruner(tiny_checkpoint):
    plain = REFERENCE  # the committed reference: no pruner
    base = RolloutConfig(checkpoint=str(plain))
    cfg = CurveConfig(
        rollout=base,
        selectors=("lightvla",),
        budgets=(1.0, 0.5),
        trained=(f"ours={tiny_checkpoint}",),
    )
    points = cfg.points()
    assert [p.name for p in points] == ["unpruned_1", "lightvla_0.5", "trained-ours_own"]
    own = cfg.own_pruner(points[-1])  # the trained checkpoint's, not the curve's
    assert own.enabled and own.keep_ratio == 0.25 and not cfg.own_pruner().enabled
    r = point_rollout(cfg, points[-1], own)
    assert r.checkpoint == str(tiny_checkpoint.resolve()) and r.prune and r.pruning == own
    assert point_rollout(cfg, points[0], cfg.own_pruner()).checkpoint == str(plain)
    cfg.validate()
    dup = CurveConfig(rollout=base, trained=(f"a={tiny_checkpoint}", f"a={tiny_checkpoint}"))
    with pytest.raises(ValueError, match="trained labels must be distinct"):
        dup.points()
    off = CurveConfig(rollout=base, selectors=("lightvla",), trained=(f"off={plain}",))
    with pytest.raises(ValueError, match="has no pruner"):
        off.validate()


def test_each_trained_point_meets_the_best_training_free_point_near_its_tokens():
    pts = synthetic_points()  # random at 64 / 32 / 13 tokens, grid at 64 / 32, adaptive at 3
    pts.append(_record(TRAINED + "ours", None, [24, 23], 30.0))  # 47/50 at 30 tokens
    pts.append(_record(TRAINED + "bad", None, [1, 0], 3.5))  # 1/50 at 3.5 tokens
    rows = {r["trained"]: r for r in trained_vs_free(pts)}
    ours = rows["trained-ours_own"]
    # nearest per selector: random 32, grid 32 (adaptive's 3 is 10x off); grid's 41/50 wins
    assert set(ours["nearest"]) == {"random_0.25", "grid_0.25"}
    assert ours["best_training_free"] == "grid_0.25" and ours["verdict"] == "overlap"
    bad = rows["trained-bad_own"]  # random's 13 and grid's 32 tokens are too far from 3.5
    assert bad["nearest"] == ["lightvla-adaptive_own"] and bad["verdict"] == "overlap"
    pts.append(_record(TRAINED + "alone", None, [1, 1], 200.0))  # nothing within 2x
    assert trained_vs_free(pts)[-1]["verdict"] is None
    hi, lo = pts[0], pts[-1]
    assert verdict(hi, lo) == "higher" and verdict(lo, hi) == "lower"
    md = "\n".join(comparison_lines(pts))
    assert (
        "| ours | 30.0 | 0.94 [0.84, 0.98] | grid 0.25 | 32.0 | 0.82 [0.69, 0.90] | overlap |" in md
    )


def test_no_trained_points_no_comparison():
    assert trained_vs_free(synthetic_points()) == []
    assert "Trained against" not in "\n".join(comparison_lines([]))[40:]  # header only
