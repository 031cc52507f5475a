"""LIBERO-style MuJoCo tabletop suites (spatial / object / goal / long) with openpi's LIBERO
observation keys, scripted experts, demo collection on Ray into the LeRobot v2.1 layout, and a
reader for that layout.

Importing the package registers the gymnasium ids `prunepi/<suite>-<task_id>`.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede `import mujoco`

from envs.registration import (  # noqa: E402
    check_task,
    make,
    register_all,
    suite_max_steps,
    suite_num_init_states,
    suite_tasks,
    suite_warmup_steps,
)
from envs.suites import MAX_STEPS, SUITES, all_env_ids, get_task  # noqa: E402
from envs.tasks import Goal, SpatialRef, TaskSpec  # noqa: E402

register_all()

__all__ = [
    "MAX_STEPS",
    "SUITES",
    "Goal",
    "SpatialRef",
    "TaskSpec",
    "all_env_ids",
    "check_task",
    "get_task",
    "make",
    "register_all",
    "suite_max_steps",
    "suite_num_init_states",
    "suite_tasks",
    "suite_warmup_steps",
]
