"""Record one scripted-expert episode as LeRobot frames (observation at t, action at t),
the pairing LIBERO's demonstrations use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from envs.experts import ScriptedExpert
from envs.lerobot_format import encode_png, image_stats, vector_stats
from envs.tabletop_env import IMAGE_KEY, STATE_KEY, WRIST_KEY


@dataclass
class Demo:
    """One recorded episode; images already PNG-encoded so it travels cheaply."""

    success: bool  # did the episode end in success (only these become training data)
    instruction: str  # the task's prompt
    images: list[bytes] = field(default_factory=list)  # agent-view PNGs, one per frame
    wrist_images: list[bytes] = field(default_factory=list)  # wrist-camera PNGs
    states: np.ndarray = field(default_factory=lambda: np.zeros((0, 8), np.float32))  # [T, 8]
    actions: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))  # [T, 7]
    stats: dict[str, Any] = field(default_factory=dict)  # LeRobot per-episode feature stats

    @property
    def length(self) -> int:
        return len(self.actions)


def record_expert_episode(
    env: gym.Env,
    expert: ScriptedExpert,
    *,
    layout_seed: int | None = None,
    init_state_id: int | None = None,
    encode: bool = True,
) -> Demo:
    """Run the expert for one episode (until success or the env's step limit).

    `layout_seed` draws a fresh layout outside the evaluation list (what demos should use);
    `init_state_id` replays one of the fixed evaluation states. With `encode=False` no PNGs
    or stats are produced (a cheap success check).
    """
    if (layout_seed is None) == (init_state_id is None):
        raise ValueError("record_expert_episode: give exactly one of layout_seed, init_state_id")
    options = (
        {"layout_seed": layout_seed}
        if layout_seed is not None
        else {"init_state_id": init_state_id}
    )
    obs, info = env.reset(options=options)
    expert.reset()
    frames, wrists, states, actions = [], [], [], []
    while True:
        action = expert.act(obs)
        if encode:
            frames.append(obs[IMAGE_KEY])
            wrists.append(obs[WRIST_KEY])
        states.append(obs[STATE_KEY])
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    demo = Demo(
        success=bool(info["success"]),
        instruction=str(info["task"]),
        states=np.asarray(states, dtype=np.float32),
        actions=np.asarray(actions, dtype=np.float32),
    )
    if encode:
        demo.images = [encode_png(f) for f in frames]
        demo.wrist_images = [encode_png(f) for f in wrists]
        demo.stats = {
            "image": image_stats(np.asarray(frames)),
            "wrist_image": image_stats(np.asarray(wrists)),
            "state": vector_stats(demo.states),
            "actions": vector_stats(demo.actions),
        }
    return demo
