"""Closed-loop episodes, as openpi's `examples/libero/main.py` runs LIBERO; no Ray.

One at a time (`run_episode`) or several in lockstep (`step_lockstep`). The policy is
anything with openpi's `infer(obs) -> {"actions": (H, 7), ...}` (openpi-client's
`WebsocketClientPolicy` or an in-process `policies.policy.Policy`), or for lockstep a
function answering a list of observations (worker.py).
Differences from openpi's loop, on purpose: our cameras render upright, so the images are
sent as rendered (no 180-degree flip), at the policy's own image size (no letterbox to 224).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
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
    episode: int  # the initial state id it started from (RolloutConfig.init_state_start + k)
    success: bool  # the env reported success before the step limit
    length: int  # policy steps taken (warm-up excluded)
    kept_tokens: list[int] = field(default_factory=list)  # per policy query
    total_tokens: int = 0  # visual tokens before pruning
    frames: list[np.ndarray] = field(default_factory=list)  # agent view, when recording


class EpisodeRun:
    """One episode of openpi's LIBERO loop, advanced one environment step at a time.

    `run_episode` drives one; a worker steps several in lockstep and asks the policy once per
    step for all that need a chunk (`step_lockstep`, worker.py). Either way each episode
    makes exactly the same env calls: reset to initial state `episode`, `num_warmup_steps`
    no-ops, then per policy step: query when the plan is empty (keep the first
    `replan_steps` actions), execute one action, stop on success or after `max_steps`.
    `env` is the unwrapped environment: like openpi (`while t < max_steps + num_steps_wait`)
    the warm-up does not eat into the policy's step budget, so no TimeLimit wrapper may cut it.
    """

    def __init__(
        self,
        env,
        *,
        task_id: int,
        episode: int,
        max_steps: int,
        replan_steps: int,
        num_warmup_steps: int,
        record: bool = False,
    ):
        # Exactly state `episode`: a wrap-around would silently repeat states of another block.
        if not 0 <= episode < env.num_init_states:
            raise ValueError(f"episode must be in [0, {env.num_init_states}), got {episode}")
        self.env, self.max_steps = env, max_steps
        self.replan_steps, self.record = replan_steps, record
        # steps whose observation nobody reads skip rendering it (`step`); recording reads all
        self._blind = None if record else getattr(env, "step_unobserved", None)
        obs, _ = env.reset(options={"init_state_id": episode})
        self.result = EpisodeResult(
            task=env.instruction, task_id=task_id, episode=episode, success=False, length=0
        )
        noop = np.asarray(NOOP_ACTION, dtype=np.float32)
        for i in range(num_warmup_steps):  # only the last warm-up observation is read
            if i < num_warmup_steps - 1 and self._blind is not None:
                self._blind(noop)
            else:
                obs, *_ = env.step(noop)
        self.obs: dict[str, Any] = obs  # what the policy sees next
        self.plan: collections.deque[np.ndarray] = collections.deque()
        self.done = max_steps <= 0
        if record:
            self.result.frames.append(obs[IMAGE_KEY])  # frame t = 0 (or the last one)

    @property
    def needs_chunk(self) -> bool:
        return not self.done and not self.plan

    def give(self, answer: dict[str, Any]) -> None:
        """Take the policy's answer for `self.obs`: its first `replan_steps` actions."""
        chunk = np.asarray(answer["actions"])  # (H, action_dim)
        if chunk.ndim != 2 or len(chunk) < self.replan_steps:
            raise ValueError(
                f"policy returned actions of shape {chunk.shape}; replan_steps="
                f"{self.replan_steps} needs (>= {self.replan_steps}, action_dim)"
            )
        self.plan.extend(chunk[: self.replan_steps])
        pruning = answer.get("pruning", {})
        self.result.kept_tokens.append(int(pruning.get("kept_tokens", 0)))
        self.result.total_tokens = int(pruning.get("total_tokens", 0))

    def step(self) -> None:
        """Execute the next planned action (the caller gave a chunk when `needs_chunk`).

        While actions remain planned nobody reads the next observation, so an env that can
        step without rendering it (our TabletopEnv's `step_unobserved`) does: the same
        physics, a fraction of the cost. Only the step before a query renders.
        """
        if self.done or not self.plan:
            raise RuntimeError("step: episode finished or no action planned (call give first)")
        action = self.plan.popleft()
        if self.plan and self._blind is not None:
            _, terminated, _, info = self._blind(action)
        else:
            self.obs, _, terminated, _, info = self.env.step(action)
        self.result.length += 1
        if terminated or info.get("success"):
            self.result.success = True
        self.done = self.result.success or self.result.length >= self.max_steps
        if self.record:
            self.result.frames.append(self.obs[IMAGE_KEY])


def run_episode(env, policy: InferPolicy, **kwargs: Any) -> EpisodeResult:
    """One episode alone (EpisodeRun's keyword arguments), one `policy.infer` per chunk."""
    run = EpisodeRun(env, **kwargs)
    while not run.done:
        if run.needs_chunk:
            run.give(policy.infer(run.obs))
        run.step()
    return run.result


def step_lockstep(
    runs: Sequence[EpisodeRun], infer_many: Callable[[list[dict]], list[dict]]
) -> None:
    """One step of every unfinished run; ONE `infer_many` call for all that need a chunk.

    The answers must not depend on which observations share a call: the policy's forward is
    batch-invariant (policies/invariant.py), so lockstep episodes equal one-at-a-time ones.
    """
    need = [r for r in runs if r.needs_chunk]
    if need:
        answers = infer_many([r.obs for r in need])
        if len(answers) != len(need):
            raise ValueError(f"infer_many answered {len(answers)} of {len(need)} observations")
        for run, answer in zip(need, answers):
            run.give(answer)
    for run in runs:
        if not run.done:
            run.step()
