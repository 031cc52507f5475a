"""One closed-loop episode, as openpi's `examples/libero/main.py` runs LIBERO; no Ray.

The policy is anything with openpi's `infer(obs) -> {"actions": (H, 7), ...}`:
openpi-client's `WebsocketClientPolicy` or an in-process `policies.policy.Policy`.
Differences from openpi's loop, on purpose: our cameras render upright, so the images are
sent as rendered (no 180-degree flip), at the policy's own image size (no letterbox to 224).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from services.rollout.config import NOOP_ACTION

IMAGE_KEY = "observation/image"


class InferPolicy(Protocol):
    def infer(self, obs: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class EpisodeResult:
    task: str  # the instruction (RESULTS.json is keyed by it, like openpi's logs)
    task_id: int  # index in the suite
    episode: int  # episode index = initial state id
    success: bool  # the env reported success before the step limit
    length: int  # policy steps taken (warm-up excluded)
    kept_tokens: list[int] = field(default_factory=list)  # per policy query
    total_tokens: int = 0  # visual tokens before pruning
    frames: list[np.ndarray] = field(default_factory=list)  # agent view, when recording


def run_episode(
    env,
    policy: InferPolicy,
    *,
    task_id: int,
    episode: int,
    max_steps: int,
    replan_steps: int,
    num_warmup_steps: int,
    record: bool = False,
) -> EpisodeResult:
    """Reset to initial state `episode`, warm up with no-ops, then act chunk by chunk.

    `env` is the unwrapped environment: like openpi (`while t < max_steps + num_steps_wait`)
    the warm-up does not eat into the policy's step budget, so no TimeLimit wrapper may cut it.
    """
    k = episode % env.num_init_states
    obs, info = env.reset(options={"init_state_id": k})
    result = EpisodeResult(
        task=env.instruction, task_id=task_id, episode=episode, success=False, length=0
    )
    noop = np.asarray(NOOP_ACTION, dtype=np.float32)
    for _ in range(num_warmup_steps):
        obs, _, _, _, info = env.step(noop)
    plan: collections.deque[np.ndarray] = collections.deque()
    for t in range(max_steps):
        if record:
            result.frames.append(obs[IMAGE_KEY])
        if not plan:
            answer = policy.infer(obs)
            chunk = np.asarray(answer["actions"])
            if chunk.ndim != 2 or len(chunk) < replan_steps:
                raise ValueError(
                    f"policy returned actions of shape {chunk.shape}; replan_steps="
                    f"{replan_steps} needs (>= {replan_steps}, action_dim)"
                )
            plan.extend(chunk[:replan_steps])
            pruning = answer.get("pruning", {})
            result.kept_tokens.append(int(pruning.get("kept_tokens", 0)))
            result.total_tokens = int(pruning.get("total_tokens", 0))
        obs, _, terminated, _, info = env.step(plan.popleft())
        result.length = t + 1
        if terminated or info.get("success"):
            result.success = True
            break
    if record:
        result.frames.append(obs[IMAGE_KEY])
    return result
