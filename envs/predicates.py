"""Success predicates, in the spirit of LIBERO's BDDL `In` / `On` checks.

Each needs the object at rest in the target region *and let go* (no finger-pad contact), so
holding an object over the plate does not count. Tolerances are a centimetre or so: loose
enough for a placed object that tipped slightly, tight enough that "near" is not "in".
"""

from __future__ import annotations

import mujoco
import numpy as np

from envs.objects import (
    BOWL_BOTTOM_HALF,
    BOWL_RADIUS,
    BOWL_WALL,
    PLATE_HALF,
    PLATE_RADIUS,
    ObjectSpec,
)
from envs.tasks import Goal, TaskSpec

MAX_REST_SPEED = 0.1  # m/s: faster than this the object is still falling or sliding
FINGER_PADS = ("left_pad", "right_pad")


class SuccessChecker:
    """Evaluates a task's (resolved) goals on live MuJoCo data; built once per episode."""

    def __init__(self, model: mujoco.MjModel, task: TaskSpec, goals: tuple[Goal, ...]):
        self.model = model
        self.task = task
        self.goals = goals
        self._pads = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in FINGER_PADS}
        self._body = {
            name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
            for name in task.object_names
        }
        self._qvel = {
            name: int(model.jnt_dofadr[model.body_jntadr[bid]]) for name, bid in self._body.items()
        }

    def held(self, data: mujoco.MjData, name: str) -> bool:
        """True while a finger pad touches the object."""
        body = self._body[name]
        for i in range(data.ncon):
            c = data.contact[i]
            g1, g2 = int(c.geom1), int(c.geom2)
            if g1 in self._pads and self.model.geom_bodyid[g2] == body:
                return True
            if g2 in self._pads and self.model.geom_bodyid[g1] == body:
                return True
        return False

    def _at_rest(self, data: mujoco.MjData, name: str) -> bool:
        adr = self._qvel[name]
        return float(np.linalg.norm(data.qvel[adr : adr + 3])) < MAX_REST_SPEED

    def goal_met(self, data: mujoco.MjData, goal: Goal) -> bool:
        assert isinstance(goal.obj, str), "resolve spatial references before checking"
        obj = self.task.object(goal.obj)
        dest = self.task.object(goal.dest)
        p = data.xpos[self._body[obj.name]]
        q = data.xpos[self._body[dest.name]]
        if not region_contains(goal.relation, obj, p, dest, q):
            return False
        return self._at_rest(data, obj.name) and not self.held(data, obj.name)

    def __call__(self, data: mujoco.MjData) -> bool:
        return all(self.goal_met(data, g) for g in self.goals)


def region_contains(
    relation: str, obj: ObjectSpec, p: np.ndarray, dest: ObjectSpec, q: np.ndarray
) -> bool:
    """Is an object centred at `p` in/on `dest` (body origin `q`)? Geometry only."""
    dxy = float(np.linalg.norm(p[:2] - q[:2]))
    dz = float(p[2] - q[2])
    if relation == "in":
        inner = BOWL_RADIUS - BOWL_WALL - 0.012
        floor = 2.0 * BOWL_BOTTOM_HALF
        return dxy < inner and floor + obj.half_height - 0.01 < dz < floor + obj.half_height + 0.02
    if relation == "on":
        rest = PLATE_HALF + obj.half_height
        return dxy < PLATE_RADIUS - 0.01 and rest - 0.01 < dz < rest + 0.015
    if relation == "stack":
        rest = dest.half_height + obj.half_height
        return dxy < 0.02 and rest - 0.01 < dz < rest + 0.015
    raise ValueError(f"relation: unknown relation {relation!r} (expected in / on / stack)")
