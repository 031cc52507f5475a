"""Rollouts skip rendering observations nobody reads (`TabletopEnv.step_unobserved`).

Only the step before a policy query renders its cameras (services/rollout/episode.py); the
physics, rewards and the observations the policy does see must be those of stepping with
`env.step` every time.
"""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs.tabletop_env import PROMPT_KEY
from services.rollout.episode import EpisodeRun

pytestmark = pytest.mark.render


class ChunkRecorder:
    """A policy answering fixed random chunks and keeping every observation it was shown."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.seen: list[dict] = []

    def infer(self, obs: dict) -> dict:
        self.seen.append({k: np.array(v) for k, v in obs.items() if k != PROMPT_KEY})
        return {"actions": self.rng.uniform(-1.0, 1.0, (10, 7)).astype(np.float32)}


class RenderEveryStep:
    """The same env seen only through `step` and `reset` (no `step_unobserved`)."""

    def __init__(self, env):
        self.env = env
        self.steps = 0

    def __getattr__(self, name):
        if name == "step_unobserved":
            raise AttributeError(name)
        return getattr(self.env, name)

    def step(self, action):
        self.steps += 1
        return self.env.step(action)


def _run(env, policy) -> EpisodeRun:
    run = EpisodeRun(env, task_id=0, episode=3, max_steps=23, replan_steps=5, num_warmup_steps=2)
    while not run.done:
        if run.needs_chunk:
            run.give(policy.infer(run.obs))
        run.step()
    return run


def test_unobserved_steps_change_nothing_the_policy_sees():
    fast_env = envs.make("goal", 0, image_size=32).unwrapped
    slow_env = RenderEveryStep(envs.make("goal", 0, image_size=32).unwrapped)
    fast, slow = ChunkRecorder(0), ChunkRecorder(0)
    observe, renders = fast_env._observation, []
    fast_env._observation = lambda: renders.append(1) or observe()
    a, b = _run(fast_env, fast), _run(slow_env, slow)

    # reset, the last warm-up step, and the steps before the 4 later queries; the first
    # warm-up step and the other 19 render nothing
    assert len(renders) == 1 + 1 + 4

    assert slow_env.steps == 2 + 23  # warm-up and every policy step rendered
    assert (a.result.length, a.result.success) == (b.result.length, b.result.success)
    assert len(fast.seen) == len(slow.seen) == 5  # queries at steps 0, 5, 10, 15, 20
    for x, y in zip(fast.seen, slow.seen):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    np.testing.assert_array_equal(fast_env.data.qpos, slow_env.env.data.qpos)
    np.testing.assert_array_equal(fast_env.data.qvel, slow_env.env.data.qvel)
    fast_env.close()
    slow_env.env.close()


def test_step_unobserved_matches_step():
    one = envs.make("spatial", 1, image_size=32).unwrapped
    two = envs.make("spatial", 1, image_size=32).unwrapped
    one.reset(options={"init_state_id": 0})
    two.reset(options={"init_state_id": 0})
    action = np.array([0.3, -0.2, -0.5, 0.0, 0.0, 0.2, 1.0])
    _, r1, t1, tr1, info1 = one.step(action)
    r2, t2, tr2, info2 = two.step_unobserved(action)
    assert (r1, t1, tr1, info1) == (r2, t2, tr2, info2)
    np.testing.assert_array_equal(one.data.qpos, two.data.qpos)
    one.close()
    two.close()
