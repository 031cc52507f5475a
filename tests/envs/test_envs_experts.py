"""The scripted experts solve every task (a few episodes here; >= 95% behind `slow`)."""

from __future__ import annotations

import pytest

import envs
from envs.demos import record_expert_episode
from envs.experts import make_expert

pytestmark = pytest.mark.render

TASKS = [(s, t.task_id) for s, tasks in envs.SUITES.items() for t in tasks]


def _success_rate(suite: str, task_id: int, init_states: range) -> tuple[float, list[int]]:
    env = envs.make(suite, task_id, image_size=16)
    expert = make_expert(env)
    try:
        demos = [
            record_expert_episode(env, expert, init_state_id=k, encode=False) for k in init_states
        ]
    finally:
        env.close()
    return sum(d.success for d in demos) / len(demos), [d.length for d in demos]


@pytest.mark.parametrize(("suite", "task_id"), TASKS)
def test_expert_solves_the_task(suite, task_id):
    rate, lengths = _success_rate(suite, task_id, range(2))
    assert rate == 1.0
    assert max(lengths) < 0.6 * envs.MAX_STEPS[suite]  # finishes comfortably within the limit


@pytest.mark.slow
@pytest.mark.parametrize(("suite", "task_id"), TASKS)
def test_expert_success_rate_is_at_least_95_percent(suite, task_id):
    rate, _ = _success_rate(suite, task_id, range(20))
    assert rate >= 0.95


def test_expert_rejects_foreign_envs_and_resets_itself():
    import gymnasium as gym

    with pytest.raises(TypeError, match="env"):
        make_expert(gym.make("CartPole-v1"))
    env = envs.make("goal", 0, image_size=16)
    expert = make_expert(env)
    try:
        env.reset(options={"init_state_id": 0})
        for _ in range(60):
            env.step(expert.act())
            if expert.phase not in ("approach", "descend"):
                break
        assert expert.phase not in ("approach", "descend")
        env.reset(options={"init_state_id": 1})  # no expert.reset(): it notices
        expert.act()
        assert expert.phase == "approach"
    finally:
        env.close()
