"""The gripper grasps through contact and friction: no welds, no equality constraints."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

import envs
from envs.experts import make_expert
from envs.scene import build_scene_xml
from envs.tabletop_env import POS_SCALE

pytestmark = pytest.mark.render


@pytest.mark.parametrize("suite", list(envs.SUITES))
def test_models_have_no_equality_constraints_and_free_objects(suite):
    task = envs.SUITES[suite][0]
    model = mujoco.MjModel.from_xml_string(build_scene_xml(task.objects))
    assert model.neq == 0  # nothing welds an object (or the gripper) to anything
    target = model.body("eef_target")
    assert model.body_mocapid[target.id] >= 0
    assert model.body_geomnum[target.id] == 0  # the mocap target is massless and untouchable
    for name in task.object_names:
        joint = model.body_jntadr[model.body(name).id]
        assert model.jnt_type[joint] == mujoco.mjtJoint.mjJNT_FREE
    assert model.jnt_type[model.joint("gripper").id] == mujoco.mjtJoint.mjJNT_FREE


def _env_at_phase(phase: str):
    env = envs.make("goal", 0, image_size=16)
    env.reset(options={"init_state_id": 0})
    expert = make_expert(env)
    while expert.phase != phase:
        env.step(expert.act())
    return env, expert


def test_object_rises_with_the_closed_gripper_and_falls_when_it_opens():
    env, expert = _env_at_phase("carry")
    u = env.unwrapped
    try:
        block = u.object_pose("red_block")[0]
        grip = u.eef_pose()[0]
        assert block[2] > 0.1  # lifted well off the table (rest height 0.02)
        assert u.is_held("red_block")  # ...by finger-pad contacts
        assert abs(block[2] - grip[2]) < 0.02  # and it hangs between the pads
        for _ in range(10):  # open the fingers, hold the gripper still
            env.step(np.array([0, 0, 0, 0, 0, 0, -1.0], np.float32))
        assert not u.is_held("red_block")
        assert u.object_pose("red_block")[0][2] < 0.06  # fell back down
        assert u.eef_pose()[0][2] > 0.1  # while the gripper stayed up
    finally:
        env.close()


def test_open_gripper_does_not_lift_the_object():
    env, expert = _env_at_phase("close")  # pads around the block, not yet closed
    u = env.unwrapped
    try:
        for _ in range(6):
            env.step(np.array([0, 0, 1.0, 0, 0, 0, -1.0], np.float32))
        assert u.eef_pose()[0][2] > 0.12
        assert u.object_pose("red_block")[0][2] < 0.03
    finally:
        env.close()


def test_translation_and_rotation_actions_move_the_gripper():
    env = envs.make("goal", 0, image_size=16)
    u = env.unwrapped
    try:
        env.reset(options={"init_state_id": 0})
        start = u.eef_pose()[0]
        env.step(np.array([1.0, 0, 0, 0, 0, 0, -1], np.float32))
        env.step(np.zeros(7, np.float32))
        moved = u.eef_pose()[0] - start
        assert 0.7 * POS_SCALE < moved[0] < 1.3 * POS_SCALE
        assert np.all(np.abs(moved[1:]) < 0.005)
        env.step(np.array([0, 0, 0, 0, 0, 1.0, -1], np.float32))
        env.step(np.zeros(7, np.float32))
        state = env.unwrapped._state()
        assert 0.3 < state[5] < 0.7  # turned about z by ~ROT_SCALE (0.5 rad)
        for _ in range(8):  # a tilt command saturates at the 45-degree limit
            env.step(np.array([1.0, 0, 0, 1.0, 0, 0, -1], np.float32))
        assert np.linalg.norm(env.unwrapped._state()[3:5]) < np.pi / 4 + 0.1
    finally:
        env.close()
