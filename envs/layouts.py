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
# With `init_spread`, yaw is jittered by this many radians per metre of spread (3 cm -> 0.3 rad,
# about LIBERO's small yaw ranges in its BDDL init regions).
YAW_PER_SPREAD = 10.0


def _clear_of(task: TaskSpec, name: str, xy: np.ndarray, placed: Layout) -> bool:
    """Whether object `name` at `xy` keeps the GAP to every object already `placed`."""
    fp = task.object(name).footprint
    return all(
        np.hypot(*(xy - p[:2])) >= fp + task.object(n).footprint + GAP for n, p in placed.items()
    )


def _unambiguous(task: TaskSpec, layout: Layout) -> bool:
    """Every spatial reference of the task (left / middle / nearest ...) has a clear answer."""
    positions = {n: p[:2] for n, p in layout.items()}
    return all(ref.margin(positions) >= MIN_REF_MARGIN[ref.rule] for ref in task.spatial_refs)


def _sample(task: TaskSpec, rng: np.random.Generator) -> Layout:
    # Containers first: they are the largest and hardest to fit.
    order = sorted(task.objects, key=lambda o: -o.footprint)
    for _ in range(2000):
        placed: Layout = {}
        for obj in order:
            for _ in range(200):
                x = rng.uniform(REGION_X[0] + obj.footprint / 2, REGION_X[1] - obj.footprint / 2)
                y = rng.uniform(REGION_Y[0] + obj.footprint / 2, REGION_Y[1] - obj.footprint / 2)
                if _clear_of(task, obj.name, np.array([x, y]), placed):
                    placed[obj.name] = np.array([x, y, rng.uniform(-np.pi, np.pi)])
                    break
            else:
                break
        if len(placed) == len(order) and _unambiguous(task, placed):
            return {o.name: placed[o.name] for o in task.objects}
    raise RuntimeError(f"layout: could not place the objects of {task.env_id}")


@lru_cache(maxsize=64)
def _eval_layouts(suite: str, task_id: int, init_spread: float | None) -> tuple[Layout, ...]:
    from envs.suites import get_task

    task = get_task(suite, task_id)
    code = _SUITE_CODE[suite]
    return tuple(
        _draw(task, np.random.default_rng([code, task_id, _EVAL_STREAM, k]), init_spread)
        for k in range(task.num_init_states)
    )


def check_init_spread(init_spread: float | None) -> float | None:
    """None (anywhere in the region) or a jitter in metres, 0 < spread <= 0.1."""
    if init_spread is None:
        return None
    real = not isinstance(init_spread, bool) and isinstance(init_spread, int | float | np.floating)
    if not (real and 0.0 < float(init_spread) <= 0.1):
        raise ValueError(f"init_spread: expected None or a float in (0, 0.1], got {init_spread!r}")
    return float(init_spread)


def home_layout(task: TaskSpec) -> Layout:
    """The task's fixed home layout: the centre of every object's init region."""
    return _eval_layouts(task.suite, task.task_id, None)[0]


def _jitter(task: TaskSpec, rng: np.random.Generator, spread: float) -> Layout:
    """LIBERO-style init regions: every object within +-spread (m) of its home position.

    LIBERO's BDDL files give each object a small fixed region (a few cm) instead of the whole
    table; with `init_spread` our tasks do the same, around `home_layout`. Same gap and
    spatial-reference rules as `_sample`, so every drawn layout is valid and unambiguous.
    """
    home = home_layout(task)
    scale = np.array([spread, spread, YAW_PER_SPREAD * spread])
    for _ in range(2000):
        lay = {n: p + rng.uniform(-1.0, 1.0, 3) * scale for n, p in home.items()}
        names = list(lay)
        clear = all(
            _clear_of(task, n, lay[n][:2], {m: lay[m] for m in names[:i]})
            for i, n in enumerate(names)
        )
        if clear and _unambiguous(task, lay):
            return lay
    raise RuntimeError(f"layout: could not jitter the objects of {task.env_id} by {spread} m")


def _draw(task: TaskSpec, rng: np.random.Generator, init_spread: float | None) -> Layout:
    return _sample(task, rng) if init_spread is None else _jitter(task, rng, init_spread)


def eval_layouts(task: TaskSpec, init_spread: float | None = None) -> tuple[Layout, ...]:
    """The task's fixed list of initial layouts (cached); `init_spread` as in `_jitter`."""
    return _eval_layouts(task.suite, task.task_id, check_init_spread(init_spread))


def layout_from_seed(task: TaskSpec, seed: int, init_spread: float | None = None) -> Layout:
    """A fresh layout outside the evaluation list (for demonstrations)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"layout_seed: expected a non-negative int, got {seed!r}")
    code = _SUITE_CODE[task.suite]
    rng = np.random.default_rng([code, task.task_id, _TRAIN_STREAM, int(seed)])
    return _draw(task, rng, check_init_spread(init_spread))
