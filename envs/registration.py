"""Gymnasium registration: one id per task, `prunepi/<suite>-<task_id>`.

Registered with the suite's step limit, so `gymnasium.make` wraps the env in a TimeLimit that
truncates like LIBERO's max-steps-per-suite evaluation.
"""

from __future__ import annotations

import gymnasium as gym

from envs.families import check_task, family_of
from envs.suites import SUITES

ENTRY_POINT = "envs.tabletop_env:TabletopEnv"


def register_all() -> None:
    """Register every task (idempotent: ids already registered are left alone)."""
    for suite, tasks in SUITES.items():
        for task in tasks:
            if task.env_id in gym.registry:
                continue
            gym.register(
                id=task.env_id,
                entry_point=ENTRY_POINT,
                max_episode_steps=task.max_steps,
                kwargs={"suite": suite, "task_id": task.task_id},
            )


def suite_tasks(suite: str) -> tuple[int, ...]:
    """Task ids of a suite of any family (envs/families.py)."""
    return tuple(range(family_of(suite).num_tasks(suite)))


def suite_max_steps(suite: str) -> int:
    """Policy steps per episode: the suite's limit (openpi's for LIBERO)."""
    return family_of(suite).max_steps(suite)


def suite_num_init_states(suite: str) -> int:
    """Fixed initial states per task (ours: envs.suites.NUM_INIT_STATES; LIBERO, MT1: 50)."""
    return family_of(suite).num_init_states(suite)


def suite_warmup_steps(suite: str) -> int:
    """No-op steps before the policy acts (openpi's 10 for LIBERO)."""
    return family_of(suite).warmup_steps


def make(
    suite: str,
    task_id: int,
    image_size: int = 224,
    seed: int | None = None,
    render_mode: str | None = None,
    init_spread: float | None = None,
) -> gym.Env:
    """`gymnasium.make` of one task with its suite's step limit.

    `seed` seeds the env's generator, so the first `reset()` (no arguments) picks the same
    initial state every time; `reset(options={"init_state_id": k})` picks one explicitly.
    `init_spread` (m): None places objects anywhere in the layout region; a float keeps each
    within that distance of a fixed home position, like LIBERO's init regions.
    Suites of the LIBERO and Meta-World families are the real benchmarks (envs/families.py,
    optional extras).
    """
    check_task(suite, task_id)
    return family_of(suite).make(suite, int(task_id), image_size, seed, render_mode, init_spread)
