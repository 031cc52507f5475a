"""The collapse of problem.md §4, reproduced on synthetic embeddings, and which scorers escape.

Run with `-s` to see the table (also: `python -m policies.pruning.synthetic`).
"""

from __future__ import annotations

import pytest

from policies.pruning import PrunerConfig
from policies.pruning.synthetic import (
    HEALTHY_UNION,
    VARIANTS,
    build_pruner,
    collapse_table,
    format_table,
    main,
    make_embeddings,
)

WIDTH = 2048  # the user's width; the signature (and the residual cure) depend on D


@pytest.fixture(scope="module")
def table():
    rows = collapse_table(width=WIDTH, batch=4, seed=0)
    print("\n" + format_table(rows))
    return {r["scorer"]: r for r in rows}


def test_synthetic_statistics_match_the_user_log():
    b = make_embeddings(batch=4, width=WIDTH, seed=0)
    assert b.patches.shape == (4, 768, WIDTH) and b.task.shape == (4, 200, WIDTH)
    assert b.task_mask.sum(1).tolist() == [87] * 4
    r = build_pruner(PrunerConfig(), WIDTH)(b.patches, b.patch_valid, b.task, b.task_mask)
    m = r.metrics
    assert m["prune/task_valid_len_mean"] == 87
    assert m["prune/patches_std_mean"] == pytest.approx(0.209, abs=0.03)  # user: 0.209
    assert m["prune/task_std_mean"] == pytest.approx(0.296, abs=0.03)  # user: 0.296
    assert m["prune/queries_std_mean"] < 0.01  # user: 0.0089
    assert 20 < m["prune/score_abs_max_det_mean"] < 35  # user: ~29
    assert m["prune/score_top1_gap_det_mean"] < 0.1  # user: ~0.04
    # the collapse itself: 2.3 of 768 tokens kept in the user's log
    assert m["prune/argmax_union_mean"] <= 3
    assert m["prune/argmax_top1_share_mean"] >= 0.75
    assert m["prune/kept_tokens_overall_mean"] <= 3


def test_lightvla_collapses_and_norm_or_temperature_do_not_cure_it(table):
    for label in ("lightvla", "no_query_norm"):
        assert table[label]["union"] <= 3
        assert table[label]["queries_std"] < 0.01
        assert table[label]["top1_share"] >= 0.75
    assert table["no_query_norm"]["union"] == table["lightvla"]["union"]
    for label in ("temperature t=0.1", "temperature t=0.02"):
        assert table[label]["union"] < HEALTHY_UNION


def test_patch_aware_scorers_escape_the_signature(table):
    for label in ("residual a=0.2", "lowrank r=16 a=0.2 (init)"):
        assert table[label]["union"] >= HEALTHY_UNION
        assert table[label]["queries_std"] > 5 * table["lightvla"]["queries_std"]
        assert table[label]["top1_share"] < table["lightvla"]["top1_share"]
    assert table["centered"]["union"] > 700  # diverse but not selective: keeps everything
    assert len(table) == len(VARIANTS)


def test_table_script_prints(capsys):
    main(["--width", "64", "--batch", "1"])
    out = capsys.readouterr().out
    for label, _ in VARIANTS:
        assert f"| {label} |" in out
