"""The four suites, mirroring LIBERO's (spatial / object / goal / long = libero_10).

Every task needs both vision and language:
- the instruction decides which object and where (same table, several instructions), and
- every initial state shuffles where everything is, so the image decides where to reach.

LIBERO's episode limits at 20 Hz are 220 / 280 / 300 / 520 steps; ours are scaled down in the
same proportions to what our smaller scenes need (the scripted experts finish each suite in
well under half its limit; `benchmarks/env_speed.py` reports their mean episode length).
"""

from __future__ import annotations

from envs.objects import BLUE, GREEN, RED, YELLOW, ObjectSpec, block, bowl, plate
from envs.tasks import Goal, SpatialRef, TaskSpec

MAX_STEPS: dict[str, int] = {"spatial": 120, "object": 150, "goal": 160, "long": 280}
# Fixed initial states per task. LIBERO ships 50 per task (its init files; openpi's
# examples/libero/main.py runs episode k from state k); we keep 200 so disjoint blocks of 50
# exist: states 0-49 for reports, 100-149 for selection (services/rollout/config.py
# REPORT_BLOCK / SELECTION_BLOCK). envs/layouts.py draws state k from its own seed, so the
# first 50 are the same as when there were only 50.
NUM_INIT_STATES = 200

# --- spatial: three identical blocks; which one is named by where it is -------------------
_SPATIAL_BLOCKS = ("block_a", "block_b", "block_c")
_SPATIAL_OBJECTS = (
    *(block(n, "block", RED) for n in _SPATIAL_BLOCKS),
    plate(),
    bowl(),
)
_LEFT = SpatialRef(_SPATIAL_BLOCKS, "left")
_MIDDLE = SpatialRef(_SPATIAL_BLOCKS, "middle")
_RIGHT = SpatialRef(_SPATIAL_BLOCKS, "right")
_NEAR_PLATE = SpatialRef(_SPATIAL_BLOCKS, "nearest", anchor="plate")
_SPATIAL_REFS = (_LEFT, _MIDDLE, _RIGHT, _NEAR_PLATE)
# The fourth task's block is also the left, middle or right one, so it goes elsewhere (the
# bowl): no two instructions on the same table ask for the same motion.
_SPATIAL = [
    ("pick up the block on the left and place it on the plate", (Goal(_LEFT, "on", "plate"),)),
    ("pick up the block in the middle and place it on the plate", (Goal(_MIDDLE, "on", "plate"),)),
    ("pick up the block on the right and place it on the plate", (Goal(_RIGHT, "on", "plate"),)),
    (
        "pick up the block next to the plate and place it in the bowl",
        (Goal(_NEAR_PLATE, "in", "bowl"),),
    ),
]

# --- object: different shapes and colours; which one is named by what it is ---------------
_OBJECT_OBJECTS = (
    block("red_cube", "red cube", RED),
    ObjectSpec("green_cylinder", "cylinder", "green cylinder", (0.02, 0.03), GREEN, 0.06),
    ObjectSpec("blue_box", "box", "blue box", (0.017, 0.03, 0.025), BLUE, 0.07),
    ObjectSpec("yellow_can", "cylinder", "yellow can", (0.025, 0.035), YELLOW, 0.08),
    bowl(),
)

# --- goal and long: one table, different goals ----------------------------------------------
_GOAL_OBJECTS = (
    block("red_block", "red block", RED),
    block("blue_block", "blue block", BLUE),
    bowl(),
    plate(),
)
_LONG_OBJECTS = (*_GOAL_OBJECTS[:2], block("green_block", "green block", GREEN), bowl(), plate())


def _tasks(
    suite: str,
    objects: tuple[ObjectSpec, ...],
    specs: list[tuple[str, tuple[Goal, ...]]],
    refs: tuple[SpatialRef, ...] = (),
) -> list[TaskSpec]:
    return [
        TaskSpec(
            suite=suite,
            task_id=i,
            instruction=text,
            objects=objects,
            goals=goals,
            max_steps=MAX_STEPS[suite],
            num_init_states=NUM_INIT_STATES,
            spatial_refs=refs,
        )
        for i, (text, goals) in enumerate(specs)
    ]


SUITES: dict[str, list[TaskSpec]] = {
    "spatial": _tasks(
        "spatial",
        _SPATIAL_OBJECTS,
        _SPATIAL,
        _SPATIAL_REFS,
    ),
    "object": _tasks(
        "object",
        _OBJECT_OBJECTS,
        [
            (f"pick up the {o.label} and place it in the bowl", (Goal(o.name, "in", "bowl"),))
            for o in _OBJECT_OBJECTS
            if o.graspable
        ],
    ),
    "goal": _tasks(
        "goal",
        _GOAL_OBJECTS,
        [
            ("put the red block in the bowl", (Goal("red_block", "in", "bowl"),)),
            ("put the red block on the plate", (Goal("red_block", "on", "plate"),)),
            ("put the blue block in the bowl", (Goal("blue_block", "in", "bowl"),)),
            ("stack the red block on the blue block", (Goal("red_block", "stack", "blue_block"),)),
        ],
    ),
    "long": _tasks(
        "long",
        _LONG_OBJECTS,
        [
            (
                "put the red block in the bowl and put the blue block on the plate",
                (Goal("red_block", "in", "bowl"), Goal("blue_block", "on", "plate")),
            ),
            (
                "put both the green block and the blue block in the bowl",
                (Goal("green_block", "in", "bowl"), Goal("blue_block", "in", "bowl")),
            ),
            (
                "put the green block on the plate and stack the red block on the blue block",
                (Goal("green_block", "on", "plate"), Goal("red_block", "stack", "blue_block")),
            ),
        ],
    ),
}


def get_task(suite: str, task_id: int) -> TaskSpec:
    """The task, with errors that name the bad field and value."""
    if suite not in SUITES:
        raise ValueError(f"suite: unknown suite {suite!r}; expected one of {sorted(SUITES)}")
    tasks = SUITES[suite]
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise TypeError(f"task_id: expected an int, got {task_id!r}")
    if not 0 <= task_id < len(tasks):
        raise ValueError(
            f"task_id: {task_id} is out of range for suite {suite!r} (0..{len(tasks) - 1})"
        )
    return tasks[task_id]


def all_env_ids() -> list[str]:
    return [t.env_id for tasks in SUITES.values() for t in tasks]
