"""Suite families: who answers a suite name. One entry per family, one place to add one.

A family knows its suites (cheaply: constants, no simulator import), each suite's tasks,
step limit and number of fixed initial states, the no-op warm-up steps before a policy acts,
how to check a task id and how to `make` a task's env. `envs.make`, `prunepi rollout`,
`prunepi curve` and the rollout configs ask `family_of(suite)`; nothing else tells suites
apart by their names.

- "prunepi": our MuJoCo tabletop suites (envs/suites.py).
- "libero": the real LIBERO benchmark, `libero_*` (envs/libero.py; optional extra).
- "metaworld": Meta-World MT10 as one suite, task ids in envs/metaworld.py
  METAWORLD_TASKS order (optional extra).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from envs.contract import check_render_mode
from envs.suites import MAX_STEPS, SUITES, get_task

# Each make takes (suite, task_id, image_size, seed, render_mode, init_spread).
Make = Callable[[str, int, int, "int | None", "str | None", "float | None"], gym.Env]


@dataclass(frozen=True)
class SuiteFamily:
    name: str
    suites: Callable[[], tuple[str, ...]]
    num_tasks: Callable[[str], int]
    max_steps: Callable[[str], int]  # policy steps per episode
    num_init_states: Callable[[str], int]  # fixed initial states per task
    warmup_steps: int  # no-op steps before the policy acts
    make: Make


# --- ours -----------------------------------------------------------------------------------
def _make_ours(suite, task_id, image_size, seed, render_mode, init_spread) -> gym.Env:
    from envs.registration import register_all

    task = get_task(suite, task_id)
    register_all()
    return gym.make(
        task.env_id,
        image_size=image_size,
        seed=seed,
        render_mode=render_mode,
        init_spread=init_spread,
    )


OURS = SuiteFamily(
    name="prunepi",
    suites=lambda: tuple(SUITES),
    num_tasks=lambda suite: len(SUITES[suite]),
    max_steps=lambda suite: MAX_STEPS[suite],
    num_init_states=lambda suite: min(t.num_init_states for t in SUITES[suite]),
    # openpi examples/libero/main.py waits 10 no-ops of LIBERO's 220-520 steps for objects to
    # fall into place. Ours settle 0.1 s inside reset() and run 120-280 steps, so the same
    # share of the spatial suite's budget (10/220 of 120) is 5.
    warmup_steps=5,
    make=_make_ours,
)


# --- LIBERO ---------------------------------------------------------------------------------
def _libero_suites() -> dict:
    from envs.libero import LIBERO_SUITES  # constants only: LIBERO itself is not imported

    return LIBERO_SUITES


def _no_init_spread(family: str, init_spread: float | None) -> None:
    if init_spread is not None:
        raise ValueError(
            f"init_spread: {family} uses its own fixed init states, got {init_spread!r}"
        )


def _make_libero(suite, task_id, image_size, seed, render_mode, init_spread) -> gym.Env:
    from envs import libero

    _no_init_spread("LIBERO", init_spread)
    return libero.make(suite, task_id, image_size=image_size, seed=seed, render_mode=render_mode)


def _libero_init_states(suite: str) -> int:
    from envs.libero import NUM_INIT_STATES

    return NUM_INIT_STATES


LIBERO = SuiteFamily(
    name="libero",
    suites=lambda: tuple(_libero_suites()),
    num_tasks=lambda suite: _libero_suites()[suite].num_tasks,
    max_steps=lambda suite: _libero_suites()[suite].max_steps,
    num_init_states=_libero_init_states,
    warmup_steps=10,  # openpi examples/libero `num_steps_wait`: dropped objects settle
    make=_make_libero,
)


# --- Meta-World -----------------------------------------------------------------------------
METAWORLD_SUITE = "metaworld_mt10"


def _metaworld_tasks() -> list[str]:
    from envs.metaworld import METAWORLD_TASKS  # constants only: metaworld is not imported

    return list(METAWORLD_TASKS)


def _make_metaworld(suite, task_id, image_size, seed, render_mode, init_spread) -> gym.Env:
    from envs import metaworld

    _no_init_spread("Meta-World", init_spread)
    check_render_mode(render_mode)  # Meta-World renders rgb_array only
    return metaworld.make(_metaworld_tasks()[task_id], image_size=image_size, seed=seed)


def _metaworld_steps(suite: str) -> int:
    from envs.metaworld import MAX_STEPS as METAWORLD_MAX_STEPS

    return METAWORLD_MAX_STEPS


METAWORLD = SuiteFamily(
    name="metaworld",
    suites=lambda: (METAWORLD_SUITE,),
    num_tasks=lambda suite: len(_metaworld_tasks()),
    max_steps=_metaworld_steps,
    num_init_states=lambda suite: 50,  # MT1's 50 fixed placements per task (seed 0)
    warmup_steps=0,  # placements are at rest: nothing to settle
    make=_make_metaworld,
)


FAMILIES: tuple[SuiteFamily, ...] = (OURS, LIBERO, METAWORLD)


def all_suites() -> list[str]:
    return [s for family in FAMILIES for s in family.suites()]


def family_of(suite: str) -> SuiteFamily:
    """The family answering `suite`; ValueError naming every known suite otherwise."""
    for family in FAMILIES:
        if suite in family.suites():
            return family
    raise ValueError(f"suite: unknown suite {suite!r}; expected one of {all_suites()}")


def check_task(suite: str, task_id: int) -> None:
    """Raise naming the bad field and value (needs no LIBERO or Meta-World install)."""
    n = family_of(suite).num_tasks(suite)
    if isinstance(task_id, bool) or not isinstance(task_id, int | np.integer):
        raise TypeError(f"task_id: expected an int, got {task_id!r}")
    if not 0 <= task_id < n:
        raise ValueError(f"task_id: {task_id} is out of range for suite {suite!r} (0..{n - 1})")
