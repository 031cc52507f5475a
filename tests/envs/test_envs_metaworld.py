"""Meta-World behind the prunepi contract (skipped unless the optional metaworld is installed)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("metaworld")

from gymnasium.utils.env_checker import check_env  # noqa: E402

import envs.metaworld as mw  # noqa: E402
from envs.experts import make_expert  # noqa: E402
from envs.tabletop_env import IMAGE_KEY, PROMPT_KEY, STATE_KEY, WRIST_KEY  # noqa: E402


def test_check_env_and_contract():
    env = mw.make("drawer-open-v3", image_size=32, seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped, skip_render_check=True)
        obs, info = env.reset(options={"init_state_id": 3})
        assert obs[IMAGE_KEY].shape == (32, 32, 3) and obs[IMAGE_KEY].dtype == np.uint8
        assert obs[WRIST_KEY].shape == (32, 32, 3)
        assert obs[STATE_KEY].shape == (8,) and obs[STATE_KEY].dtype == np.float32
        assert obs[PROMPT_KEY] == "open the drawer"
        assert info == {"success": False, "task": "open the drawer", "init_state_id": 3}
        with pytest.raises(ValueError, match=r"action: expected shape \(7,\)"):
            env.step(np.zeros(4))
    finally:
        env.close()
    with pytest.raises(ValueError, match="task: unknown Meta-World task"):
        mw.make("fly-v3")


@pytest.mark.parametrize("task", ["reach-v3", "pick-place-v3"])
def test_metaworld_expert_succeeds(task):
    env = mw.make(task, image_size=16)
    expert = make_expert(env)
    try:
        for k in range(2):
            obs, info = env.reset(options={"init_state_id": k})
            expert.reset()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # Meta-World's policy gains
                for _ in range(200):
                    obs, _, terminated, truncated, info = env.step(expert.act(obs))
                    if terminated or truncated:
                        break
            assert info["success"] and terminated
    finally:
        env.close()
