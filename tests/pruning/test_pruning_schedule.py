"""Noise schedules: values at given steps, and what the pruner uses."""

from __future__ import annotations

import math

import pytest

from policies.pruning import NoiseScheduleConfig, PrunerConfig, TokenPruner, make_schedule


def sched(kind, **kw):
    return make_schedule(NoiseScheduleConfig(kind=kind, **kw))


def test_none_and_constant():
    assert [sched("none").scale(s) for s in (0, 5, 10**6)] == [0.0, 0.0, 0.0]
    assert [sched("constant", scale=0.5).scale(s) for s in (0, 5, 10**6)] == [0.5] * 3


def test_linear_is_lightvla_one_minus_step_over_total():
    s = sched("linear", scale=1.0, total_steps=40000)
    assert s.scale(0) == 1.0
    assert s.scale(20600) == pytest.approx(1 - 20600 / 40000)  # docs/problem.md §4: ~0.485
    assert s.scale(40000) == 0.0
    assert s.scale(50000) == 0.0  # held after total_steps
    s = sched("linear", scale=2.0, total_steps=100, final_scale=0.5)
    assert s.scale(0) == 2.0 and s.scale(50) == pytest.approx(1.25) and s.scale(100) == 0.5


def test_cosine():
    s = sched("cosine", scale=1.0, total_steps=100)
    assert s.scale(0) == 1.0
    assert s.scale(50) == pytest.approx(0.5)
    assert s.scale(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert s.scale(100) == pytest.approx(0.0) and s.scale(1000) == pytest.approx(0.0)


def test_gap_is_linear_in_units_of_the_score_gap():
    s = sched("gap", scale=4.0, total_steps=100)
    assert s.scale(0, score_gap=0.04) == pytest.approx(0.16)
    assert s.scale(50, score_gap=0.04) == pytest.approx(0.08)
    assert s.scale(100, score_gap=0.04) == 0.0
    with pytest.raises(ValueError, match="score_gap"):
        s.scale(0)


def test_negative_step_rejected():
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        sched("linear").scale(-1)


def test_pruner_noise_scale_train_only(rand_batch):
    b = rand_batch()
    cfg = PrunerConfig(noise=NoiseScheduleConfig(kind="linear", scale=1.0, total_steps=100))
    pruner = TokenPruner(cfg, 32)
    args = (b.patches, b.patch_valid, b.task, b.task_mask)
    assert pruner(*args, step=25).metrics["prune/noise_scale"] == pytest.approx(0.75)
    assert pruner(*args, step=None).metrics["prune/noise_scale"] == 0.0
    pruner.eval()
    assert pruner(*args, step=25).metrics["prune/noise_scale"] == 0.0


def test_pruner_gap_schedule_reads_the_batch_gap(rand_batch):
    b = rand_batch()
    cfg = PrunerConfig(noise=NoiseScheduleConfig(kind="gap", scale=2.0, total_steps=100))
    m = TokenPruner(cfg, 32)(b.patches, b.patch_valid, b.task, b.task_mask, step=0).metrics
    assert m["prune/noise_scale"] == pytest.approx(2.0 * m["prune/score_top1_gap_det_mean"])
