"""Meta-World (`metaworld==3.1.1`) behind the same contract as our suites: openpi's LIBERO
observation keys, 7-D actions in [-1, 1], `info["success"]`, `terminated` on success, fixed
initial states selected with `reset(options={"init_state_id": k})`, and a scripted expert.

Optional: `metaworld` is imported only when an env is built, so the core never needs it
(it pins mujoco==3.3.0, which our suites also run on). Mapping to the contract:
- Init states: Meta-World's MT1 benchmark draws 50 fixed object/goal placements per task
  (seed 0 here), the analogue of LIBERO's 50 init states.
- Actions: the Sawyer's orientation is fixed in Meta-World, so the rotation deltas (a[3:6])
  are ignored; a[:3] moves the hand (Meta-World's scale: 1 cm per step at 1) and a[6] is the
  gripper effort, +1 closing like LIBERO.
- State (8): the grip point (Meta-World's `tcp_center`), the hand's axis-angle, and the two
  finger joints, as in LIBERO's layout.
- Images: the `corner` camera (mounted upside-down in Meta-World's XML, so rotated 180
  degrees) and `gripperPOV` as the wrist camera.
- Prompt: a short instruction per task (Meta-World has no language of its own).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede `import mujoco`

from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium.utils import seeding  # noqa: E402

from envs import rotations as rot  # noqa: E402
from envs.contract import (  # noqa: E402
    check_image_size,
    check_render_mode,
    checked_action,
    pick_init_state,
    reset_options,
)
from envs.tabletop_env import (  # noqa: E402
    IMAGE_KEY,
    PROMPT_KEY,
    STATE_KEY,
    WRIST_KEY,
    action_space,
    observation_space,
)

# The MT10 tasks and the instruction each is given.
METAWORLD_TASKS: dict[str, str] = {
    "reach-v3": "reach the red goal position",
    "push-v3": "push the puck to the goal",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "door-open-v3": "open the door",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "window-open-v3": "open the window",
    "window-close-v3": "close the window",
}
MAX_STEPS = 500  # Meta-World's max_path_length; its env refuses to step past it
INIT_STATE_SEED = 0  # seed of MT1's 50 fixed placements per task
AGENT_CAMERA, WRIST_CAMERA = "corner", "gripperPOV"
_STATE_BOUND = np.array([2.0, 2.0, 2.0, np.pi, np.pi, np.pi, 0.1, 0.1], dtype=np.float32)


def _import_metaworld():
    try:
        import metaworld
        from metaworld.policies import ENV_POLICY_MAP
    except ImportError as e:
        raise ImportError(
            "Meta-World envs need the optional dependency: pip install metaworld==3.1.1"
        ) from e
    return metaworld, ENV_POLICY_MAP


class MetaWorldEnv(gym.Env):
    """One Meta-World task with the prunepi observation/action contract."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}  # Meta-World: 12.5 ms steps

    def __init__(
        self,
        task: str,
        image_size: int = 224,
        seed: int | None = None,
        render_mode: str | None = None,
    ):
        if task not in METAWORLD_TASKS:
            raise ValueError(
                f"task: unknown Meta-World task {task!r}; expected one of {sorted(METAWORLD_TASKS)}"
            )
        check_image_size(image_size)
        check_render_mode(render_mode)
        metaworld, _ = _import_metaworld()
        self.task_name = task
        self.instruction = METAWORLD_TASKS[task]
        self.image_size = image_size
        self.render_mode = render_mode
        self.max_episode_steps = MAX_STEPS
        benchmark = metaworld.MT1(task, seed=INIT_STATE_SEED)
        self._tasks = benchmark.train_tasks
        self._env = benchmark.train_classes[task]()
        self.model, self.data = self._env.model, self._env.data
        self.model.vis.quality.shadowsize = 0  # see TabletopEnv: shadows cost 10-100x per frame
        self.model.vis.quality.offsamples = 0
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, image_size)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, image_size)
        self._renderer: mujoco.Renderer | None = None
        self._fingers = [
            self.model.jnt_qposadr[self.model.joint(n).id] for n in ("r_close", "l_close")
        ]
        self.raw_obs: np.ndarray | None = None  # Meta-World's own 39-D observation
        self.init_state_id: int | None = None
        self.episode_count = 0

        self.observation_space = observation_space(image_size, _STATE_BOUND)
        self.action_space = action_space()
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            self.action_space.seed(seed)

    @property
    def num_init_states(self) -> int:
        return len(self._tasks)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = reset_options(options, {"init_state_id"})
        self.init_state_id = pick_init_state(options, self.num_init_states, self.np_random)
        self._env.set_task(self._tasks[self.init_state_id])
        self.raw_obs, _ = self._env.reset()
        self.episode_count += 1
        return self._observation(), self._info(False)

    def step(self, action):
        if self.raw_obs is None:
            raise RuntimeError("step: call reset() before step()")
        a = checked_action(action)  # (7,) in [-1, 1]
        mw_action = np.array([a[0], a[1], a[2], a[6]], dtype=np.float32)
        self.raw_obs, _, _, truncated, info = self._env.step(mw_action)
        success = bool(info["success"])
        return self._observation(), float(success), success, bool(truncated), self._info(success)

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._render(AGENT_CAMERA)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()

    def scripted_expert(self) -> MetaWorldExpert:
        """Meta-World's own scripted policy for this task (used by `envs.experts.make_expert`)."""
        return MetaWorldExpert(self)

    def _render(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._renderer.update_scene(self.data, camera=camera)
        image = self._renderer.render()
        return np.ascontiguousarray(image[::-1, ::-1]) if camera == AGENT_CAMERA else image

    def _observation(self) -> dict[str, Any]:
        quat = self.data.body("hand").xquat
        state = np.concatenate(
            [self._env.tcp_center, rot.quat_to_axis_angle(quat), self.data.qpos[self._fingers]]
        ).astype(np.float32)
        return {
            IMAGE_KEY: self._render(AGENT_CAMERA),
            WRIST_KEY: self._render(WRIST_CAMERA),
            STATE_KEY: state,
            PROMPT_KEY: self.instruction,
        }

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": success, "task": self.instruction, "init_state_id": self.init_state_id}


class MetaWorldExpert:
    """Meta-World's scripted policy, emitting 7-D actions (zero rotation)."""

    def __init__(self, env: gym.Env):
        base = env.unwrapped
        if not isinstance(base, MetaWorldEnv):
            raise TypeError(f"env: expected a MetaWorldEnv, got {type(base).__name__}")
        _, policies = _import_metaworld()
        self.env = base
        self._policy = policies[base.task_name]()

    def reset(self) -> None:
        """Meta-World's policies are stateless; kept for the expert API."""

    def act(self, obs: Any = None) -> np.ndarray:
        del obs  # the policy reads Meta-World's privileged 39-D observation
        if self.env.raw_obs is None:
            raise RuntimeError("expert: reset the env first")
        a = np.clip(self._policy.get_action(self.env.raw_obs), -1.0, 1.0)
        return np.array([a[0], a[1], a[2], 0.0, 0.0, 0.0, a[3]], dtype=np.float32)


def env_id(task: str) -> str:
    return f"prunepi/metaworld-{task}"


def register_metaworld() -> None:
    """Register `prunepi/metaworld-<task>` ids (cheap: nothing is imported until made)."""
    for task in METAWORLD_TASKS:
        if env_id(task) not in gym.registry:
            gym.register(
                id=env_id(task),
                entry_point="envs.metaworld:MetaWorldEnv",
                max_episode_steps=MAX_STEPS,
                kwargs={"task": task},
            )


def make(task: str, image_size: int = 224, seed: int | None = None) -> gym.Env:
    """`gymnasium.make` of one Meta-World task (needs `metaworld` installed)."""
    if task not in METAWORLD_TASKS:
        raise ValueError(
            f"task: unknown Meta-World task {task!r}; expected one of {sorted(METAWORLD_TASKS)}"
        )
    register_metaworld()
    return gym.make(env_id(task), image_size=image_size, seed=seed)
