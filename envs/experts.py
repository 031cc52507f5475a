"""Scripted experts: privileged-state pick-and-place controllers for every task.

They read object poses straight from MuJoCo (what LIBERO's human demonstrators saw through
their own eyes) and emit the same 7-D delta actions a policy must, so their episodes are
valid training demonstrations. One sub-goal is a fixed sequence of phases:

    approach -> descend -> close -> lift -> carry -> lower -> release -> retreat

with phase changes on reaching a waypoint (or on a timeout, so the expert never stalls). A
dropped object sends the expert back to `approach` for that sub-goal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from envs import rotations as rot
from envs.objects import BOWL_BOTTOM_HALF, PLATE_HALF, ObjectSpec
from envs.scene import FINGER_Z_LOW
from envs.tabletop_env import POS_SCALE, ROT_SCALE, TabletopEnv
from envs.tasks import Goal

Z_SAFE = 0.16  # grip-point height for moving around (m): a held object clears the bowl rim
PAD_CLEARANCE = 0.004  # finger pads stay this far above the table when grasping (m)
DROP_HEIGHT = 0.012  # released this far above the surface it lands on (m)
BOWL_SLOT = 0.026  # sideways offset when two objects share the bowl (m)
# Gripper command when letting go: opens the pads ~1 cm clear of a 4 cm block but no wider,
# so a pad never sweeps a neighbour in the bowl or catches on the bowl wall.
RELEASE_GRIP = -0.4
_Command = tuple[np.ndarray, float, float] | None  # grip target, heading, gripper; None: done
PHASES = ("approach", "descend", "close", "lift", "carry", "lower", "release", "retreat")


@dataclass(frozen=True)
class ExpertConfig:
    """Tolerances and timings of the scripted expert."""

    xy_tol: float = 0.006  # m: horizontal error accepted at a waypoint
    z_tol: float = 0.005  # m: vertical error accepted at a grasp or place height
    yaw_tol: float = 0.05  # rad: heading error accepted before descending
    close_steps: int = 5  # steps with the fingers closing before lifting (0.25 s)
    release_steps: int = 4  # steps with the fingers opening before retreating
    phase_timeout: int = 40  # steps after which a phase moves on regardless
    max_speed: float = 0.5  # cap on the translation action's norm: 2.5 cm per step, 0.5 m/s


class ScriptedExpert:
    """`act()` returns the next action for the env it was made for; `reset()` per episode
    (also done automatically when the env was reset since the last call)."""

    def __init__(self, env: gym.Env, config: ExpertConfig | None = None):
        base = env.unwrapped
        if not isinstance(base, TabletopEnv):
            raise TypeError(f"env: expected a prunepi TabletopEnv, got {type(base).__name__}")
        self.env: TabletopEnv = base
        self.config = config or ExpertConfig()
        self.reset()

    def reset(self) -> None:
        self._episode = self.env.episode_count
        self._goal = 0
        self._phase = 0
        self._phase_steps = 0
        self._grasp_xy: np.ndarray | None = None
        self._hold_offset = 0.0  # held object's centre height minus the grip point's

    @property
    def phase(self) -> str:
        return PHASES[self._phase] if self._goal < len(self.env.goals) else "done"

    # --- geometry -------------------------------------------------------------------------------
    def _obj(self, name: str) -> ObjectSpec:
        return self.env.task.object(name)

    def _grasp_yaw(self, name: str, gripper_yaw: float) -> float:
        """Heading that puts the finger-closing axis (gripper y) across the object's
        narrower horizontal side, nearest to the current heading."""
        spec = self._obj(name)
        if spec.kind != "box":
            return gripper_yaw  # cylinders: any heading works
        yaw = rot.quat_yaw(self.env.object_pose(name)[1])
        hx, hy = spec.size[0], spec.size[1]
        if abs(hx - hy) < 1e-6:
            return gripper_yaw + rot.wrap_angle(yaw - gripper_yaw, np.pi / 2)
        closing = yaw + np.pi / 2 if hx < hy else yaw  # align gripper x with the long side
        return gripper_yaw + rot.wrap_angle(closing - gripper_yaw, np.pi)

    def _grasp_z(self, name: str) -> float:
        center = self.env.object_pose(name)[0][2]
        return max(center, PAD_CLEARANCE - FINGER_Z_LOW)

    def _place_target(self, goal: Goal) -> tuple[np.ndarray, float]:
        """Grip-point xy that puts the held object over its spot, and the grip height to
        release at. Uses where the object actually hangs in the fingers, so a grasp that
        slipped a few millimetres still lands on target."""
        assert isinstance(goal.obj, str)
        dest_pos = self.env.object_pose(goal.dest)[0]
        xy = dest_pos[:2] + self._bowl_slot(goal) if goal.relation == "in" else dest_pos[:2]
        if goal.relation == "in":
            surface = dest_pos[2] + 2.0 * BOWL_BOTTOM_HALF
        elif goal.relation == "on":
            surface = dest_pos[2] + PLATE_HALF
        else:
            surface = dest_pos[2] + self._obj(goal.dest).half_height
        grip = self.env.eef_pose()[0]
        hang = self.env.object_pose(goal.obj)[0][:2] - grip[:2]
        bottom = surface + DROP_HEIGHT
        return xy - hang, bottom + self._obj(goal.obj).half_height - self._hold_offset

    def _bowl_slot(self, goal: Goal) -> np.ndarray:
        """Offset from the bowl centre: the middle when one object goes in; with two, the
        first goes to one side and the second opposite wherever the first ended up."""
        sharing = [g for g in self.env.goals if g.relation == "in" and g.dest == goal.dest]
        if len(sharing) < 2:
            return np.zeros(2)
        center = self.env.object_pose(goal.dest)[0][:2]
        inside = [
            self.env.object_pose(g.obj)[0][:2]
            for g in sharing[: sharing.index(goal)]
            if isinstance(g.obj, str)
        ]
        away = center - np.mean(inside, axis=0) if inside else np.array([0.0, -1.0])
        norm = float(np.linalg.norm(away))
        away = np.array([0.0, 1.0]) if norm < 1e-3 else away / norm
        return away * BOWL_SLOT

    def _carry_yaw(self, goal: Goal, gripper_yaw: float) -> float:
        """Heading while carrying and lowering. Stacking: square the held block to the one
        below. Sharing the bowl: point the gripper's x axis along the slot, so the pads open
        sideways to the other object rather than into it."""
        assert isinstance(goal.obj, str)
        if goal.relation == "stack":
            held = rot.quat_yaw(self.env.object_pose(goal.obj)[1])
            below = rot.quat_yaw(self.env.object_pose(goal.dest)[1])
            return gripper_yaw + rot.wrap_angle(below - held, np.pi / 2)
        slot = self._bowl_slot(goal) if goal.relation == "in" else np.zeros(2)
        if np.linalg.norm(slot) < 1e-9:
            return gripper_yaw
        along = float(np.arctan2(slot[1], slot[0]))
        return gripper_yaw + rot.wrap_angle(along - gripper_yaw, np.pi)

    # --- control ----------------------------------------------------------------------------------
    def _action(self, target: np.ndarray, yaw: float, grip: float) -> np.ndarray:
        pos, quat = self.env.eef_pose()
        move = (target - pos) / POS_SCALE
        norm = float(np.linalg.norm(move))
        if norm > self.config.max_speed:  # keep the direction, cap the speed
            move *= self.config.max_speed / norm
        turn = np.clip(rot.rotation_error(rot.yaw_quat(yaw), quat) / ROT_SCALE, -1.0, 1.0)
        return np.concatenate([move, turn, [grip]]).astype(np.float32)

    def _next_phase(self) -> None:
        self._phase += 1
        self._phase_steps = 0
        if self._phase == len(PHASES):
            self._goal += 1
            self._phase = 0

    def act(self, obs: Any = None) -> np.ndarray:
        """Next action. `obs` is accepted for API symmetry with policies; the expert reads
        privileged state from the simulator instead."""
        del obs
        if self.env.episode_count != self._episode:
            self.reset()
        for _ in range(len(PHASES) + 1):  # a finished phase hands over within the same step
            if self._goal >= len(self.env.goals):
                pos, quat = self.env.eef_pose()
                return self._action(pos, rot.quat_yaw(quat), -1.0)  # all done: hold, open
            action = self._phase_action(self.env.goals[self._goal])
            if action is not None:
                self._phase_steps += 1
                return action
        raise RuntimeError("expert: no phase produced an action")

    def _phase_action(self, goal: Goal) -> np.ndarray | None:
        """Action for the current phase, or None after advancing to the next phase."""
        assert isinstance(goal.obj, str)
        pos, quat = self.env.eef_pose()
        yaw = rot.quat_yaw(quat)
        phase = PHASES[self._phase]
        if phase in ("lift", "carry", "lower") and self._dropped(goal.obj, pos):
            self._phase, self._phase_steps = 0, 0  # start this sub-goal over
            return None
        command = getattr(self, f"_{phase}")(goal, pos, yaw)
        if command is None or (
            self._phase_steps >= self.config.phase_timeout and phase not in ("close", "release")
        ):
            self._next_phase()
            return None
        return self._action(*command)

    def _dropped(self, name: str, grip: np.ndarray) -> bool:
        below = self.env.object_pose(name)[0][2] < grip[2] - self._obj(name).half_height - 0.03
        return below and not self.env.is_held(name)

    # Each phase returns (grip target, heading, gripper command), or None once it is done.
    def _approach(self, goal: Goal, pos: np.ndarray, yaw: float) -> _Command:
        cfg = self.config
        obj = self.env.object_pose(goal.obj)[0]
        target = np.array([*obj[:2], Z_SAFE])
        want_yaw = self._grasp_yaw(goal.obj, yaw)
        if (
            np.linalg.norm(target[:2] - pos[:2]) < 2 * cfg.xy_tol
            and abs(want_yaw - yaw) < cfg.yaw_tol
            and abs(pos[2] - Z_SAFE) < 0.03
        ):
            return None
        return target, want_yaw, -1.0

    def _descend(self, goal: Goal, pos: np.ndarray, yaw: float) -> _Command:
        cfg = self.config
        obj = self.env.object_pose(goal.obj)[0]
        target = np.array([*obj[:2], self._grasp_z(goal.obj)])
        if (
            abs(pos[2] - target[2]) < cfg.z_tol
            and np.linalg.norm(target[:2] - pos[:2]) < cfg.xy_tol
        ):
            self._grasp_xy = pos[:2].copy()
            return None
        return target, self._grasp_yaw(goal.obj, yaw), -1.0

    def _close(self, goal: Goal, pos: np.ndarray, yaw: float) -> _Command:
        if self._phase_steps >= self.config.close_steps:
            self._hold_offset = float(self.env.object_pose(goal.obj)[0][2] - pos[2])
            return None
        return pos, yaw, 1.0

    def _lift(self, goal: Goal, pos: np.ndarray, yaw: float) -> _Command:
        xy = pos[:2] if self._grasp_xy is None else self._grasp_xy
        if abs(pos[2] - Z_SAFE) < 0.03:
            return None
        return np.array([*xy, Z_SAFE]), yaw, 1.0

    def _carry(self, goal: Goal, pos: np.ndarray, yaw: float) -> _Command:
        cfg = self.config
        xy, _ = self._place_target(goal)
        want_yaw = self._carry_yaw(goal, yaw)
        if np.linalg.norm(xy - pos[:2]) < cfg.xy_tol and abs(want_yaw - yaw) < cfg.yaw_tol:
            return None
        return np.array([*xy, Z_SAFE]), want_yaw, 1.0

    def _lower(self, goal: Goal, pos: np.ndarray, yaw: float) -> _Command:
        xy, z = self._place_target(goal)
        if abs(pos[2] - z) < self.config.z_tol:
            return None
        return np.array([*xy, z]), self._carry_yaw(goal, yaw), 1.0

    def _release(self, goal: Goal, pos: np.ndarray, yaw: float) -> _Command:
        if self._phase_steps >= self.config.release_steps:
            return None
        return pos, yaw, RELEASE_GRIP

    def _retreat(self, goal: Goal, pos: np.ndarray, yaw: float) -> _Command:
        if pos[2] > Z_SAFE - 0.04:
            return None
        return np.array([*pos[:2], Z_SAFE]), yaw, RELEASE_GRIP


def make_expert(env: gym.Env, config: ExpertConfig | None = None):
    """The scripted expert for `env` (any prunepi env, wrapped or not). Envs of the optional
    benchmarks (e.g. `envs.metaworld`) bring their own through `scripted_expert()`."""
    base = env.unwrapped
    if not isinstance(base, TabletopEnv) and hasattr(base, "scripted_expert"):
        return base.scripted_expert()
    return ScriptedExpert(env, config)
