"""The LIBERO-style tabletop environment (gymnasium API).

Observations use openpi's LIBERO keys (`observation/image`, `observation/wrist_image`,
`observation/state`, `prompt`) and actions are LIBERO's 7-D delta end-effector commands at
20 Hz, so a client written for openpi's LIBERO example drives these environments unchanged.
As in robosuite's OSC controller, each action sets a goal pose relative to the *current*
end-effector pose: position + 0.05 m * a[:3], rotation exp(0.5 rad * a[3:6]) applied in the
world frame (robosuite's output limits); the goal is clipped to the workspace and to a 45-degree
tilt, and the gripper follows it through the mocap-driven springs of `envs.scene`.
Differences from LIBERO, on purpose:
- Our cameras render upright: do NOT apply openpi's LIBERO 180-degree image flip.
- The end-effector frame is the identity when the gripper points straight down, so the
  state's axis-angle sits near zero instead of near (pi, 0, 0), where robosuite's
  representation wraps around.
- The gripper command is continuous: a in [-1, 1] sets the finger target linearly from fully
  open (-1) to fully closed (+1); LIBERO's demos only use the two ends.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede `import mujoco`

import atexit  # noqa: E402
import string  # noqa: E402
import weakref  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402
from gymnasium.utils import seeding  # noqa: E402

from envs import rotations as rot  # noqa: E402
from envs.contract import (
    ACTION_DIM,
    check_image_size,
    check_render_mode,
    checked_action,
    pick_init_state,
    reset_options,
)
from envs.layouts import (  # noqa: E402
    Layout,
    check_init_spread,
    eval_layouts,
    layout_from_seed,
)
from envs.predicates import SuccessChecker  # noqa: E402
from envs.scene import (  # noqa: E402
    CONTROL_HZ,
    DRIVE_Z,
    FINGER_OPEN,
    HOME_POS,
    N_SUBSTEPS,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
    build_scene_xml,
)
from envs.suites import get_task  # noqa: E402
from envs.tasks import Goal, TaskSpec  # noqa: E402

POS_SCALE = 0.05  # m of commanded motion per step at action 1 (robosuite OSC output_max)
ROT_SCALE = 0.5  # rad of commanded rotation per step at action 1 (robosuite OSC output_max)
MAX_TILT = np.pi / 4  # the gripper may lean at most this far from pointing down
SETTLE_STEPS = 50  # physics steps (0.1 s) after a reset so contacts come to rest
PROMPT_CHARSET = string.ascii_letters + string.digits + " ,.;:'-_()"
IMAGE_KEY, WRIST_KEY, STATE_KEY, PROMPT_KEY = (
    "observation/image",
    "observation/wrist_image",
    "observation/state",
    "prompt",
)
STATE_DIM = 8
# Bounds of the state (m, rad, m): the grip point never leaves the 1 m box around the table
# centre (targets are clipped to the workspace), the axis-angle has norm <= pi, and each finger
# travels FINGER_OPEN = 0.045 m, but MuJoCo's soft joint limits let it overshoot by 1 cm under
# fast random commands (0.055 seen), so its bound is LIBERO's 0.1 (envs/libero.py).
STATE_BOUND = np.array([1.0, 1.0, 1.0, np.pi, np.pi, np.pi, 0.1, 0.1], dtype=np.float32)


def observation_space(image_size: int, state_bound: np.ndarray) -> spaces.Dict:
    """openpi's LIBERO observation: two uint8 cameras, the 8-D state, the prompt. Shared by
    our suites, Meta-World and LIBERO (each with its own state bound)."""
    size = (image_size, image_size, 3)
    return spaces.Dict(
        {
            IMAGE_KEY: spaces.Box(0, 255, size, np.uint8),
            WRIST_KEY: spaces.Box(0, 255, size, np.uint8),
            STATE_KEY: spaces.Box(-state_bound, state_bound, (STATE_DIM,), np.float32),
            PROMPT_KEY: spaces.Text(max_length=256, min_length=1, charset=PROMPT_CHARSET),
        }
    )


def action_space() -> spaces.Box:
    """LIBERO's 7-D action: delta position, delta axis-angle, gripper; all in [-1, 1]."""
    return spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


_OPTION_KEYS = {"init_state_id", "layout_seed"}

# Envs holding a GL context, closed at interpreter exit before EGL is torn down (otherwise
# MuJoCo's Renderer.__del__ prints EGL errors for envs nobody closed). The hook is registered
# after MuJoCo's EGL module has registered its own teardown, so it runs first.
_LIVE_RENDERERS: weakref.WeakSet = weakref.WeakSet()
_EXIT_HOOK = False


def _close_renderers() -> None:
    for env in list(_LIVE_RENDERERS):
        env.close()


class TabletopEnv(gym.Env):
    """One task of one suite. Episodes end (`terminated`) on success; the step limit is the
    TimeLimit wrapper's job (`envs.make` / `gymnasium.make` add it with the suite's limit).

    reset options: `init_state_id` (0..num_init_states-1) picks one of the task's fixed
    evaluation layouts (a seed picks one otherwise); `layout_seed` draws a fresh layout outside
    that list (demonstrations).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        suite: str,
        task_id: int,
        image_size: int = 224,
        seed: int | None = None,
        render_mode: str | None = None,
        shadows: bool = False,
        init_spread: float | None = None,
    ):
        self.task: TaskSpec = get_task(suite, task_id)
        # None: objects anywhere in the layout region; a float: LIBERO-style init regions of
        # +-init_spread m around fixed home positions (envs/layouts.py `_jitter`).
        self.init_spread = check_init_spread(init_spread)
        check_render_mode(render_mode)
        self.image_size = check_image_size(image_size)
        self.render_mode = render_mode
        self.max_episode_steps = self.task.max_steps

        self.model = self._build_model(shadows)
        self.data = mujoco.MjData(self.model)
        self._renderer: mujoco.Renderer | None = None
        self._index_model()
        self.init_states = np.stack(
            [self._layout_qpos(lay) for lay in eval_layouts(self.task, self.init_spread)]
        )

        self.observation_space = observation_space(image_size, STATE_BOUND)
        self.action_space = action_space()
        self.goals: tuple[Goal, ...] = ()
        self.init_state_id: int | None = None
        self._checker: SuccessChecker | None = None
        self._success = False
        self.episode_count = 0  # resets so far; lets experts notice a new episode
        if seed is not None:
            # Seed now so the first plain reset() is reproducible without passing the seed.
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            self.action_space.seed(seed)

    def _build_model(self, shadows: bool) -> mujoco.MjModel:
        model = mujoco.MjModel.from_xml_string(build_scene_xml(self.task.objects))
        # Shadow maps and multisampling multiply the cost of a frame (40-60 ms instead of
        # ~1.5 ms on a GPU, far more in software EGL; benchmarks/env_speed.py measures it) for
        # no information a policy needs. `shadows=True` exists for that comparison.
        if not shadows:
            model.vis.quality.shadowsize = 0
            model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.image_size)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.image_size)
        return model

    def _index_model(self) -> None:
        """Ids and qpos addresses of what the env reads and drives, looked up once."""
        m = self.model
        self._eef_site = m.site("eef").id
        self._mocap = int(m.body_mocapid[m.body("eef_target").id])
        self._gripper_qpos = int(m.jnt_qposadr[m.joint("gripper").id])
        self._finger_qpos = np.array(
            [m.jnt_qposadr[m.joint(n).id] for n in ("left_finger", "right_finger")]
        )
        self._finger_ctrl = np.array([m.actuator(n).id for n in ("left_finger", "right_finger")])
        self._obj_qpos = {n: int(m.jnt_qposadr[m.joint(n).id]) for n in self.task.object_names}
        self._obj_body = {n: m.body(n).id for n in self.task.object_names}

    # --- state helpers (also the privileged state the scripted experts read) -----------------
    @property
    def num_init_states(self) -> int:
        return len(self.init_states)

    @property
    def instruction(self) -> str:
        return self.task.instruction

    def eef_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Grip point position and quaternion (world frame)."""
        pos = self.data.site_xpos[self._eef_site].copy()
        return pos, rot.mat_to_quat(self.data.site_xmat[self._eef_site])

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self._obj_body:
            raise KeyError(f"object: {name!r} is not in {self.task.env_id}")
        body = self._obj_body[name]
        return self.data.xpos[body].copy(), self.data.xquat[body].copy()

    def finger_qpos(self) -> np.ndarray:
        return self.data.qpos[self._finger_qpos].copy()

    def is_held(self, name: str) -> bool:
        assert self._checker is not None, "call reset() first"
        return self._checker.held(self.data, name)

    def _layout_qpos(self, layout: Layout) -> np.ndarray:
        qpos = self.model.qpos0.copy()
        qpos[self._gripper_qpos : self._gripper_qpos + 7] = [*HOME_POS, 1.0, 0.0, 0.0, 0.0]
        qpos[self._finger_qpos] = [FINGER_OPEN, -FINGER_OPEN]
        for name, (x, y, yaw) in layout.items():
            adr = self._obj_qpos[name]
            z = self.task.object(name).rest_height
            qpos[adr : adr + 7] = [x, y, z, *rot.yaw_quat(yaw)]
        return qpos

    # --- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = reset_options(options, _OPTION_KEYS)
        if "init_state_id" in options and "layout_seed" in options:
            raise ValueError("options: give init_state_id or layout_seed, not both")
        if "layout_seed" in options:
            qpos = self._layout_qpos(
                layout_from_seed(self.task, options["layout_seed"], self.init_spread)
            )
            self.init_state_id = None
        else:
            self.init_state_id = pick_init_state(options, self.num_init_states, self.np_random)
            qpos = self.init_states[self.init_state_id]

        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = qpos
        self._set_target(HOME_POS, np.array([1.0, 0.0, 0.0, 0.0]))
        self.data.ctrl[self._finger_ctrl] = [FINGER_OPEN, -FINGER_OPEN]
        mujoco.mj_forward(self.model, self.data)
        mujoco.mj_step(self.model, self.data, nstep=SETTLE_STEPS)

        positions = {n: self.data.xpos[b].copy() for n, b in self._obj_body.items()}
        self.goals = self.task.resolve_goals(positions)
        self._checker = SuccessChecker(self.model, self.task, self.goals)
        self._success = False
        self.episode_count += 1
        return self._observation(), self._info()

    def step(self, action):
        reward, terminated, truncated, info = self.step_unobserved(action)
        return self._observation(), reward, terminated, truncated, info

    def step_unobserved(self, action) -> tuple[float, bool, bool, dict[str, Any]]:
        """`step` without rendering the observation: the same physics, reward and info.

        A closed-loop rollout reads the observation only when it asks the policy for a new
        chunk (every `replan_steps`-th step, services/rollout/episode.py); rendering both
        cameras is most of a step's cost (benchmarks/env_speed.py: 1.4 ms physics against
        6.3 ms with two 128 px frames), and rendering never changes the physics.
        """
        if self._checker is None:
            raise RuntimeError("step: call reset() before step()")
        a = checked_action(action)  # (7,) in [-1, 1]

        # robosuite OSC semantics: the goal is the *current* pose plus the scaled delta, with
        # the rotation delta applied in the world frame.
        pos, quat = self.eef_pose()
        goal_pos = np.clip(pos + POS_SCALE * a[:3], WORKSPACE_LOW, WORKSPACE_HIGH)
        goal_quat = rot.limit_tilt(
            rot.quat_mul(rot.axis_angle_to_quat(ROT_SCALE * a[3:6]), quat), MAX_TILT
        )
        self._set_target(goal_pos, goal_quat)
        opening = FINGER_OPEN * (1.0 - a[6]) / 2.0
        self.data.ctrl[self._finger_ctrl] = [opening, -opening]
        mujoco.mj_step(self.model, self.data, nstep=N_SUBSTEPS)

        self._success = bool(self._checker(self.data))
        reward = 1.0 if self._success else 0.0  # sparse, like LIBERO
        return reward, self._success, False, self._info()

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._render_camera("agentview")

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
            _LIVE_RENDERERS.discard(self)

    # --- internals ------------------------------------------------------------------------------
    def _set_target(self, grip_pos: np.ndarray, quat: np.ndarray) -> None:
        """Move the mocap target so the gripper settles with its grip point at `grip_pos`
        (the springs act on the drive site, DRIVE_Z above the grip point)."""
        mat = np.zeros(9)
        mujoco.mju_quat2Mat(mat, quat)
        self.data.mocap_pos[self._mocap] = grip_pos + mat.reshape(3, 3)[:, 2] * DRIVE_Z
        self.data.mocap_quat[self._mocap] = quat

    def _render_camera(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            try:
                self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
            except mujoco.FatalError as e:
                raise RuntimeError(
                    f"rendering: cannot create a MuJoCo renderer with MUJOCO_GL="
                    f"{os.environ.get('MUJOCO_GL')!r}; import envs before mujoco so it can set "
                    "MUJOCO_GL=egl, and check that libEGL is installed"
                ) from e
            _LIVE_RENDERERS.add(self)
            global _EXIT_HOOK
            if not _EXIT_HOOK:
                atexit.register(_close_renderers)
                _EXIT_HOOK = True
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def _state(self) -> np.ndarray:
        pos, quat = self.eef_pose()
        return np.concatenate([pos, rot.quat_to_axis_angle(quat), self.finger_qpos()]).astype(
            np.float32
        )

    def _observation(self) -> dict[str, Any]:
        return {
            IMAGE_KEY: self._render_camera("agentview"),
            WRIST_KEY: self._render_camera("wrist"),
            STATE_KEY: self._state(),
            PROMPT_KEY: self.task.instruction,
        }

    def _info(self) -> dict[str, Any]:
        return {
            "success": self._success,
            "task": self.task.instruction,
            "init_state_id": self.init_state_id,
        }
