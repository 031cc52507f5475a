"""Deterministic initial layouts (the analogue of LIBERO's per-task init-state files).

A layout places every object upright on the table at (x, y, yaw). The fixed evaluation list
of a task is layouts 0..num_init_states-1 from a seed derived from (suite, task, index);
`layout_from_seed` draws from a disjoint stream so training demos never reuse evaluation
states. Sampling is rejection sampling: objects keep a clear gap (room for the open fingers)
and every spatial reference of the suite has one clear answer.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from envs.tasks import TaskSpec

# Object centres stay in this part of the table (m); the table spans x in [-0.45, 0.45],
# y in [-0.6, 0.6] and the agent-view camera frames about this region.
REGION_X = (-0.16, 0.16)
REGION_Y = (-0.24, 0.24)
GAP = 0.04  # free space between footprints (m): an open finger pad is 1.2 cm wide
MIN_REF_MARGIN = {"left": 0.06, "middle": 0.06, "right": 0.06, "nearest": 0.05}
_SUITE_CODE = {"spatial": 1, "object": 2, "goal": 3, "long": 4}
_EVAL_STREAM, _TRAIN_STREAM = 0, 1

Layout = dict[str, np.ndarray]  # object name -> (x, y, yaw)


def _sample(task: TaskSpec, rng: np.random.Generator) -> Layout:
    # Containers first: they are the largest and hardest to fit.
    order = sorted(task.objects, key=lambda o: -o.footprint)
    for _ in range(2000):
        placed: Layout = {}
        for obj in order:
            for _ in range(200):
                x = rng.uniform(REGION_X[0] + obj.footprint / 2, REGION_X[1] - obj.footprint / 2)
                y = rng.uniform(REGION_Y[0] + obj.footprint / 2, REGION_Y[1] - obj.footprint / 2)
                ok = all(
                    np.hypot(x - p[0], y - p[1]) >= obj.footprint + task.object(n).footprint + GAP
                    for n, p in placed.items()
                )
                if ok:
                    placed[obj.name] = np.array([x, y, rng.uniform(-np.pi, np.pi)])
                    break
            else:
                break
        if len(placed) != len(order):
            continue
        positions = {n: p[:2] for n, p in placed.items()}
        if all(ref.margin(positions) >= MIN_REF_MARGIN[ref.rule] for ref in task.spatial_refs):
            return {o.name: placed[o.name] for o in task.objects}
    raise RuntimeError(f"layout: could not place the objects of {task.env_id}")


@lru_cache(maxsize=64)
def _eval_layouts(suite: str, task_id: int) -> tuple[Layout, ...]:
    from envs.suites import get_task

    task = get_task(suite, task_id)
    code = _SUITE_CODE[suite]
    return tuple(
        _sample(task, np.random.default_rng([code, task_id, _EVAL_STREAM, k]))
        for k in range(task.num_init_states)
    )


def eval_layouts(task: TaskSpec) -> tuple[Layout, ...]:
    """The task's fixed list of initial layouts (cached)."""
    return _eval_layouts(task.suite, task.task_id)


def layout_from_seed(task: TaskSpec, seed: int) -> Layout:
    """A fresh layout outside the evaluation list (for demonstrations)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"layout_seed: expected a non-negative int, got {seed!r}")
    code = _SUITE_CODE[task.suite]
    return _sample(task, np.random.default_rng([code, task.task_id, _TRAIN_STREAM, int(seed)]))
