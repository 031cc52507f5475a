"""Gymnasium registration: one id per task, `prunepi/<suite>-<task_id>`.

Registered with the suite's step limit, so `gymnasium.make` wraps the env in a TimeLimit that
truncates like LIBERO's max-steps-per-suite evaluation.
"""

from __future__ import annotations

import gymnasium as gym

from envs.suites import MAX_STEPS, SUITES, get_task

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


def _libero_suites():
    from envs.libero import LIBERO_SUITES  # constants only: LIBERO itself is not imported

    return LIBERO_SUITES


def suite_tasks(suite: str) -> tuple[int, ...]:
    """Task ids of a suite: ours (envs.SUITES) or the real LIBERO ones (`libero_*`)."""
    libero = _libero_suites()
    if suite in libero:
        return tuple(range(libero[suite].num_tasks))
    if suite in SUITES:
        return tuple(range(len(SUITES[suite])))
    raise ValueError(
        f"suite: unknown suite {suite!r}; expected one of {sorted(SUITES)} or {sorted(libero)}"
    )


def suite_max_steps(suite: str) -> int:
    """Policy steps per episode: our suites' limits, or openpi's for LIBERO."""
    libero = _libero_suites()
    if suite in libero:
        return libero[suite].max_steps
    suite_tasks(suite)  # raises naming an unknown suite
    return MAX_STEPS[suite]


def suite_num_init_states(suite: str) -> int:
    """Fixed initial states per task: ours (envs.suites.NUM_INIT_STATES), or LIBERO's 50."""
    if suite in _libero_suites():
        from envs.libero import NUM_INIT_STATES as LIBERO_NUM_INIT_STATES

        return LIBERO_NUM_INIT_STATES
    return min(get_task(suite, t).num_init_states for t in suite_tasks(suite))


def check_task(suite: str, task_id: int) -> None:
    """Raise naming the bad field and value (needs no LIBERO install)."""
    if suite in _libero_suites():
        from envs.libero import check_task as check_libero_task

        check_libero_task(suite, task_id)
    else:
        suite_tasks(suite)
        get_task(suite, task_id)


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
    Suites named `libero_*` are the real LIBERO benchmark (envs/libero.py, optional extra).
    """
    if isinstance(suite, str) and suite.startswith("libero_"):
        from envs import libero

        if init_spread is not None:
            raise ValueError(
                f"init_spread: LIBERO uses its own fixed init states, got {init_spread!r}"
            )
        return libero.make(
            suite, task_id, image_size=image_size, seed=seed, render_mode=render_mode
        )
    task = get_task(suite, task_id)
    register_all()
    return gym.make(
        task.env_id,
        image_size=image_size,
        seed=seed,
        render_mode=render_mode,
        init_spread=init_spread,
    )
