"""The collapse of docs/problem.md §4 reproduced on synthetic embeddings, and which scorers escape.

Run with `-s` to see the table (also: `python -m policies.pruning.synthetic`).
"""

from __future__ import annotations

import pytest

from policies.pruning.synthetic import (
    HEALTHY_UNION,
    VARIANTS,
    collapse_table,
    format_table,
    main,
    make_embeddings,
)

WIDTH = 2048  # the user's width; the signature (and the residual cure) depend on D
TESTED = (
    "lightvla",
    "no_query_norm",
    "temperature t=0.02",
    "residual a=0.2",
    "lowrank r=16 a=0.2 (init)",
    "centered",
)


@pytest.fixture(scope="module")
def table():
    # B = 1 and only the variants asserted below: fast on two shared CPU cores
    variants = tuple((label, cfg) for label, cfg in VARIANTS if label in TESTED)
    rows = collapse_table(width=WIDTH, batch=1, seed=0, variants=variants)
    print("\n" + format_table(rows))
    return {r["scorer"]: r for r in rows}


def test_synthetic_statistics_match_the_user_log(table):
    b = make_embeddings(batch=4, width=64, seed=0)
    assert b.patches.shape == (4, 768, 64) and b.task.shape == (4, 200, 64)
    assert b.task_mask.sum(1).tolist() == [87] * 4 and b.patch_valid.all()
    m = table["lightvla"]  # D = 2048, user's log in the comments (docs/problem.md §4)
    assert m["task_valid_len"] == 87
    assert m["patches_std"] == pytest.approx(0.209, abs=0.03)  # user: 0.209
    assert m["task_std"] == pytest.approx(0.296, abs=0.03)  # user: 0.296
    assert m["queries_std"] < 0.01  # user: 0.0089
    assert 20 < m["score_abs_max"] < 35  # user: ~29
    assert m["gap"] < 0.1  # user: ~0.04
    # the collapse itself: 2.3 of 768 tokens kept in the user's log
    assert m["union"] <= 3
    assert m["top1_share"] >= 0.75
    assert m["kept_tokens"] <= 3


def test_lightvla_collapses_and_norm_or_temperature_do_not_cure_it(table):
    for label in ("lightvla", "no_query_norm"):
        assert table[label]["union"] <= 3
        assert table[label]["queries_std"] < 0.01
        assert table[label]["top1_share"] >= 0.75
    assert table["no_query_norm"]["union"] == table["lightvla"]["union"]
    assert table["temperature t=0.02"]["union"] < HEALTHY_UNION


def test_patch_aware_scorers_escape_the_union_collapse_not_the_query_collapse(table):
    """The residual adds each patch's own identity to its score, so rows stop voting alike;
    the cross-attention queries themselves stay as alike as LightVLA's (queries std is read
    before the residual: policies/pruning/telemetry.py)."""
    for label in ("residual a=0.2", "lowrank r=16 a=0.2 (init)"):
        assert table[label]["union"] >= HEALTHY_UNION
        assert table[label]["top1_share"] < table["lightvla"]["top1_share"]
        assert table[label]["queries_std"] < 2 * table["lightvla"]["queries_std"]
    assert table["residual a=0.2"]["queries_std"] == pytest.approx(table["lightvla"]["queries_std"])
    assert table["centered"]["union"] > 700  # diverse but not selective: keeps everything
    assert set(table) == set(TESTED)


def test_table_script_prints(capsys):
    main(["--width", "64", "--batch", "1", "--patches", "128"])
    out = capsys.readouterr().out
    for label, _ in VARIANTS:
        assert f"| {label} |" in out
