"""The env contract's checks, written once: every env of every suite family (ours
tabletop_env.py, LIBERO libero.py, Meta-World metaworld.py) builds and steps through these,
so an argument is refused the same way, with the same message, whichever env it reaches.

Composition, not a base class: the three envs share checks, not physics or lifecycles
(MuJoCo model we own, robosuite's env, Meta-World's env).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

ACTION_DIM = 7  # LIBERO's: delta position, delta axis-angle, gripper; all in [-1, 1]
RENDER_MODES = (None, "rgb_array")


def check_image_size(image_size: Any) -> int:
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int | np.integer)
        or image_size < 16
    ):
        raise ValueError(f"image_size: expected an int >= 16, got {image_size!r}")
    return int(image_size)


def check_render_mode(render_mode: Any) -> None:
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")


def reset_options(options: dict[str, Any] | None, allowed: Iterable[str]) -> dict[str, Any]:
    """A copy of `reset(options=...)`, refusing keys the env does not know."""
    options = dict(options or {})
    allowed = set(allowed)
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"options: unknown keys {sorted(unknown)}; allowed {allowed}")
    return options


def pick_init_state(
    options: dict[str, Any], num_init_states: int, np_random: np.random.Generator
) -> int:
    """`options["init_state_id"]`, checked; one drawn from the env's generator if absent."""
    k = options.get("init_state_id")
    if k is None:
        k = int(np_random.integers(num_init_states))
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"init_state_id: expected an int, got {k!r}")
    if not 0 <= k < num_init_states:
        raise ValueError(f"init_state_id: {k} is out of range (0..{num_init_states - 1})")
    return int(k)


def checked_action(action: Any) -> np.ndarray:
    """(7,) float64, finite, clipped to [-1, 1]: like robosuite, out-of-range commands
    saturate; a wrong shape or a NaN is an error naming the value."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (ACTION_DIM,):
        raise ValueError(f"action: expected shape ({ACTION_DIM},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action: must be finite, got {a.tolist()}")
    return np.clip(a, -1.0, 1.0)
