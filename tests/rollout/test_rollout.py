"""Closed-loop rollouts: the openpi LIBERO loop alone, then on Ray actors through the served
policy (openpi-client) and in-process, each writing a valid RESULTS.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.rollout import RolloutConfig, run_rollout
from services.rollout.episode import run_episode
from services.rollout.results import aggregate, validate_results

pytestmark = [pytest.mark.ray, pytest.mark.render]


class CountingPolicy:
    """Returns a fixed chunk and counts queries."""

    def __init__(self, horizon: int = 10):
        self.calls = 0
        self.horizon = horizon

    def infer(self, obs: dict) -> dict:
        assert set(obs) >= {"observation/image", "observation/state", "prompt"}
        self.calls += 1
        actions = np.zeros((self.horizon, 7), np.float32)
        actions[:, 6] = -1.0
        return {"actions": actions, "pruning": {"kept_tokens": self.calls, "total_tokens": 9}}


class ScriptedEnv:
    """Succeeds on the `succeed_at`-th step (warm-up included); records what it was given."""

    num_init_states = 3
    instruction = "do the thing"

    def __init__(self, succeed_at: int | None):
        self.succeed_at, self.steps, self.init_ids = succeed_at, 0, []

    def _obs(self) -> dict:
        return {
            "observation/image": np.zeros((4, 4, 3), np.uint8),
            "observation/state": np.zeros(8, np.float32),
            "prompt": self.instruction,
        }

    def reset(self, options):
        self.steps = 0
        self.init_ids.append(options["init_state_id"])
        return self._obs(), {}

    def step(self, action):
        assert np.asarray(action).shape == (7,)
        self.steps += 1
        done = self.steps == self.succeed_at
        return self._obs(), float(done), done, False, {"success": done}


def test_openpi_loop_replans_and_skips_warmup():
    env, policy = ScriptedEnv(succeed_at=None), CountingPolicy()
    kw = dict(task_id=0, max_steps=12, replan_steps=5, num_warmup_steps=3)
    ep = run_episode(env, policy, episode=2, **kw)
    assert not ep.success and ep.length == 12 and env.steps == 15  # warm-up outside the budget
    assert policy.calls == 3 and ep.kept_tokens == [1, 2, 3]  # re-plan every 5 steps
    assert env.init_ids == [2] and ep.episode == 2  # exactly the state id it was given
    with pytest.raises(ValueError, match=r"episode must be in \[0, 3\), got 3"):
        run_episode(env, policy, episode=3, **kw)  # no wrap-around to state 0
    assert env.init_ids == [2]
    env, policy = ScriptedEnv(succeed_at=3 + 7), CountingPolicy()
    ep = run_episode(env, policy, episode=0, record=True, **kw)
    assert ep.success and ep.length == 7 and policy.calls == 2 and len(ep.frames) == 8
    results = aggregate([ep, run_episode(ScriptedEnv(None), CountingPolicy(), episode=1, **kw)])
    validate_results(results)
    row = results["tasks"]["do the thing"]
    assert row["success_rate"] == 0.5 and row["episodes"] == 2
    assert row["episode_length_mean"] == (7 + 12) / 2
    assert (row["kept_tokens_min"], row["kept_tokens_max"]) == (1, 3)


def test_rollout_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="exactly one of policy or checkpoint"):
        RolloutConfig().validate()
    with pytest.raises(ValueError, match="policy must be a ws://HOST:PORT URL, got 'http://x'"):
        RolloutConfig(policy="http://x").validate()
    with pytest.raises(ValueError, match="rollout.replan_steps must be an integer >= 1, got 0"):
        RolloutConfig(policy="ws://x:1", replan_steps=0).validate()
    with pytest.raises(ValueError, match="prune applies to an in-process checkpoint"):
        RolloutConfig(policy="ws://x:1", prune=False).validate()
    with pytest.raises(ValueError, match="noise_seed apply to an in-process checkpoint"):
        RolloutConfig(policy="ws://x:1", noise_seed=2).validate()


def _check_results(results: dict, path, tasks: int, episodes: int) -> None:
    assert json.loads(path.read_text()) == results
    validate_results(results)
    assert results["episodes"] == episodes and len(results["tasks"]) == tasks
    assert results["total_tokens"] == 192
    assert results["kept_tokens_mean"] == 32.0  # keep_ratio 0.25 of 128 valid patches
    for row in results["tasks"].values():
        assert row["kept_tokens_min"] == row["kept_tokens_max"] == 32
        assert 1 <= row["episode_length_mean"] <= 10


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_rollout_through_served_policy(served, tmp_path):
    out = tmp_path / "RESULTS.json"
    cfg = RolloutConfig(
        policy=served.ws_url,
        suite="goal",
        tasks=(0, 1),
        episodes_per_task=2,
        max_steps=10,
        num_workers=2,
        num_cpus_per_worker=0.5,
        out=str(out),
    )
    _check_results(run_rollout(cfg), out, tasks=2, episodes=4)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_rollout_in_process_with_video(local_ray, tiny_checkpoint, tmp_path):
    out = tmp_path / "RESULTS.json"
    cfg = RolloutConfig(
        checkpoint=str(tiny_checkpoint),
        suite="goal",
        tasks=(0,),
        episodes_per_task=2,
        max_steps=10,
        num_workers=1,
        num_cpus_per_worker=0.5,
        out=str(out),
        video_dir=str(tmp_path / "videos"),
    )
    _check_results(run_rollout(cfg), out, tasks=1, episodes=2)
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert len(videos) == 2 and all(v.startswith("goal_task0_ep") for v in videos), videos
