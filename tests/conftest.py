"""Test tiers (pyproject `markers`; README "Tests"):

- unit: no mark. No Ray, no MuJoCo rendering; `make test-fast` runs this tier alone.
- `ray`: starts or joins a real local Ray (mark the module: `pytestmark = pytest.mark.ray`).
- `render`: renders MuJoCo cameras (real envs, rollouts, demos).
- `slow`: opt-in (`make test-slow`), e.g. real LIBERO episodes and whole-demo runs.

The tiers are checked, not just named: under `PRUNEPI_UNIT_TIER=1` (set by `make
test-fast`) `ray.init` and `mujoco.Renderer` raise, so a test that reaches either without its
mark fails in the unit tier instead of silently slowing it down.
"""

from __future__ import annotations

import os

UNIT_TIER_ENV = "PRUNEPI_UNIT_TIER"


class TierError(RuntimeError):
    pass


def _forbid(module, name: str, mark: str) -> None:
    def refuse(*args, **kwargs):
        raise TierError(
            f"{module.__name__}.{name} called in the unit tier: mark the test "
            f"`@pytest.mark.{mark}` (tests/conftest.py)"
        )

    setattr(module, name, refuse)


def pytest_configure(config) -> None:
    if os.environ.get(UNIT_TIER_ENV) != "1":
        return
    import mujoco
    import ray

    import prunepi  # noqa: F401  (its Ray and MuJoCo defaults come before either import)

    _forbid(ray, "init", "ray")
    _forbid(mujoco, "Renderer", "render")
