"""RESULTS.json with intervals and its block of initial states, the rollout table, and the
mapping of episodes to initial-state ids (no Ray, no rendering)."""

from __future__ import annotations

import copy

import pytest

import envs
from services.rollout.config import (
    BLOCK_EPISODES,
    REPORT_BLOCK,
    SELECTION_BLOCK,
    RolloutConfig,
    check_init_block,
)
from services.rollout.driver import episode_jobs, format_table
from services.rollout.episode import EpisodeResult
from services.rollout.results import aggregate, validate_results
from services.rollout.stats import wilson_interval

TASKS = ("put the red block in the bowl", "stack the red block on the blue block")


def _episodes(start: int, n: int, wins: tuple[int, ...]) -> list[EpisodeResult]:
    """Task t succeeds in its first wins[t] of n episodes, from states start..start+n-1."""
    return [
        EpisodeResult(
            task, t, start + k, k < wins[t], 30 + k, kept_tokens=[16, 18], total_tokens=32
        )
        for t, task in enumerate(TASKS)
        for k in range(n)
    ]


def test_aggregate_counts_successes_with_wilson_intervals_and_the_block():
    results = aggregate(_episodes(start=100, n=10, wins=(8, 0)))
    validate_results(results)
    a, b = (results["tasks"][t] for t in TASKS)
    assert (a["successes"], a["episodes"], a["success_rate"]) == (8, 10, 0.8)
    assert a["success_ci95"] == pytest.approx([0.4902, 0.9433], abs=1e-4)  # Brown et al.
    assert (b["successes"], b["success_ci95"][0]) == (0, 0.0) and b["success_ci95"][1] > 0.2
    assert (results["successes"], results["episodes"], results["success_rate"]) == (8, 20, 0.4)
    assert results["success_ci95"] == list(wilson_interval(8, 20))
    assert results["init_states"] == {"start": 100, "count": 10}
    assert a["kept_tokens_mean"] == 17.0 and a["episode_length_mean"] == 34.5


def test_aggregate_refuses_tasks_on_different_states():
    eps = _episodes(start=0, n=3, wins=(1, 1))
    eps[-1].episode = 7  # task 1 ran states 0, 1, 7
    with pytest.raises(ValueError, match="one block of initial states per task"):
        aggregate(eps)


def test_validate_results_rejects_files_without_or_with_wrong_intervals():
    good = aggregate(_episodes(start=0, n=5, wins=(2, 5)))
    validate_results(good)
    old = copy.deepcopy(good)  # the format before intervals
    for row in (old, *old["tasks"].values()):
        del row["successes"], row["success_ci95"]
    del old["init_states"]
    with pytest.raises(ValueError, match="results keys must be"):
        validate_results(old)
    no_ci = copy.deepcopy(good)
    del no_ci["tasks"][TASKS[0]]["success_ci95"]
    with pytest.raises(ValueError, match=r"tasks\['put the red block in the bowl'\] keys"):
        validate_results(no_ci)
    normal = copy.deepcopy(good)  # p +- 1.96 sqrt(p(1-p)/n): zero width at 5 of 5
    normal["tasks"][TASKS[1]]["success_ci95"] = [1.0, 1.0]
    with pytest.raises(ValueError, match="success_ci95 must be the Wilson interval"):
        validate_results(normal)
    lying = copy.deepcopy(good)
    lying["tasks"][TASKS[0]]["successes"] = 3
    with pytest.raises(ValueError, match="success_rate must be successes / episodes"):
        validate_results(lying)
    short = copy.deepcopy(good)
    short["init_states"]["count"] = 4
    with pytest.raises(ValueError, match=r"episodes must be init_states.count \(4\)"):
        validate_results(short)


def test_format_table_shows_rate_interval_and_episodes():
    results = aggregate(_episodes(start=0, n=50, wins=(42, 25)))
    table = format_table(results)
    assert "0.84 [0.71, 0.92] n=50" in table  # 42 of 50
    assert "0.50 [0.37, 0.63] n=50" in table
    assert "0.67 [0.57, 0.75] n=100" in table  # all tasks: 67 of 100
    assert "all (init states 0-49)" in table and "of 32 tokens" in table


def test_episode_jobs_map_episodes_to_absolute_state_ids():
    cfg = RolloutConfig(policy="ws://x:1", suite="goal", tasks=(1, 3), episodes_per_task=3)
    assert episode_jobs(cfg) == [(1, 0), (1, 1), (1, 2), (3, 0), (3, 1), (3, 2)]
    sel = RolloutConfig(
        policy="ws://x:1", suite="goal", tasks=(2,), episodes_per_task=4, init_state_start=100
    )
    assert episode_jobs(sel) == [(2, 100), (2, 101), (2, 102), (2, 103)]
    last = RolloutConfig(policy="ws://x:1", suite="goal", tasks=(0,), init_state_start=150)
    assert episode_jobs(last)[-1] == (0, 199)  # the default 50 episodes end at the last state


def test_a_block_past_the_suite_states_is_refused_naming_the_field():
    over = RolloutConfig(policy="ws://x:1", suite="goal", init_state_start=151)
    with pytest.raises(ValueError, match=r"init_state_start \+ episodes_per_task must be <= 200"):
        episode_jobs(over)
    with pytest.raises(ValueError, match="init_state_start=151 \\+ episodes_per_task=50 = 201"):
        over.validate()
    with pytest.raises(ValueError, match="init_state_start must be an int >= 0, got -1"):
        RolloutConfig(policy="ws://x:1", init_state_start=-1).validate()
    # Real LIBERO has its 50 states per task only: the report block fits, selection does not.
    libero = RolloutConfig(checkpoint="c", suite="libero_goal", init_state_start=SELECTION_BLOCK)
    with pytest.raises(ValueError, match=r"<= 50 \(the initial states per task of suite"):
        episode_jobs(libero)
    assert episode_jobs(RolloutConfig(checkpoint="c", suite="libero_goal"))[-1] == (9, 49)


def test_report_and_selection_blocks_are_disjoint_and_fit_our_suites():
    assert RolloutConfig().episodes_per_task == BLOCK_EPISODES == 50  # LIBERO's protocol
    assert RolloutConfig().init_state_start == REPORT_BLOCK
    report = set(range(REPORT_BLOCK, REPORT_BLOCK + BLOCK_EPISODES))
    selection = set(range(SELECTION_BLOCK, SELECTION_BLOCK + BLOCK_EPISODES))
    assert not report & selection
    for suite in envs.SUITES:
        check_init_block(suite, SELECTION_BLOCK, BLOCK_EPISODES)
        check_init_block(suite, REPORT_BLOCK, BLOCK_EPISODES)
    check_init_block("libero_spatial", REPORT_BLOCK, BLOCK_EPISODES)


@pytest.mark.parametrize(
    ("start", "count", "ok"),
    [(0, 100, True), (0, 150, False), (50, 60, False), (99, 2, False), (100, 100, True)],
)
def test_a_run_reaching_into_both_blocks_is_refused_naming_both_ranges(start, count, ok):
    cfg = RolloutConfig(
        checkpoint="c", suite="spatial", init_state_start=start, episodes_per_task=count
    )
    if ok:
        assert len(episode_jobs(cfg)) == 4 * count
        return
    end = start + count - 1
    match = (
        rf"init_state_start={start} with episodes_per_task={count} runs initial states "
        rf"{start}-{end}, which overlap both the report block \(states 0-99\) and the "
        r"selection block \(states 100-199\)"
    )
    with pytest.raises(ValueError, match=match):
        episode_jobs(cfg)


def test_the_demo_refuses_a_report_reaching_the_selection_block():
    from services.demo import DemoConfig

    DemoConfig().validate()
    demo = DemoConfig(rollout=RolloutConfig(episodes_per_task=150))
    with pytest.raises(ValueError, match=r"states 0-149, which overlap both the report"):
        demo.validate()
