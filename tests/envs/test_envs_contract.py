"""envs/contract.py: the checks every env (ours, LIBERO, Meta-World) builds and steps with."""

from __future__ import annotations

import numpy as np
import pytest

from envs.contract import (
    check_image_size,
    check_render_mode,
    checked_action,
    pick_init_state,
    reset_options,
)


def test_actions_are_checked_and_saturate():
    a = checked_action([2.0, -3.0, 0.5, 0, 0, 0, 1])
    assert a.dtype == np.float64 and a.tolist() == [1.0, -1.0, 0.5, 0, 0, 0, 1]
    with pytest.raises(ValueError, match=r"action: expected shape \(7,\), got \(6,\)"):
        checked_action(np.zeros(6))
    with pytest.raises(ValueError, match="action: must be finite"):
        checked_action([np.nan] * 7)


def test_init_states_are_picked_or_refused_by_name():
    rng = np.random.default_rng(0)
    assert pick_init_state({"init_state_id": 3}, 50, rng) == 3
    assert 0 <= pick_init_state({}, 50, rng) < 50  # drawn from the env's generator
    with pytest.raises(TypeError, match="init_state_id: expected an int, got True"):
        pick_init_state({"init_state_id": True}, 50, rng)
    with pytest.raises(ValueError, match=r"init_state_id: 50 is out of range \(0..49\)"):
        pick_init_state({"init_state_id": 50}, 50, rng)
    with pytest.raises(ValueError, match=r"options: unknown keys \['colour'\]"):
        reset_options({"colour": 1}, {"init_state_id"})


def test_sizes_and_render_modes():
    assert check_image_size(np.int64(64)) == 64
    with pytest.raises(ValueError, match="image_size: expected an int >= 16, got 8"):
        check_image_size(8)
    check_render_mode("rgb_array")
    with pytest.raises(ValueError, match="render_mode: expected None or 'rgb_array'"):
        check_render_mode("human")
