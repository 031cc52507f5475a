"""Headless rendering for the env tests: MuJoCo picks its GL backend when it is first
imported, and test modules import `mujoco` before `envs` (isort order), so set it here."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
