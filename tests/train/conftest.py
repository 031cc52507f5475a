"""Fixtures for the training tests: datasets (a hand-written LeRobot folder for the Ray-free
tests, a real `prunepi collect` one for the Ray runs) and one local Ray for the session."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")  # as the Makefile sets

import pytest  # noqa: E402

from tests.train.lerobot_fixture import write_tiny_lerobot  # noqa: E402


@pytest.fixture(scope="session")
def tiny_lerobot(tmp_path_factory):
    """4 episodes x 16 frames, 32 px, two tasks (no Ray, no MuJoCo)."""
    return write_tiny_lerobot(tmp_path_factory.mktemp("lerobot") / "data")


@pytest.fixture(scope="session")
def train_ray():
    """The session's local Ray (2 CPUs, loopback); shut down only if this fixture started it."""
    from prunepi import env

    started = env.init_local_ray(num_cpus=2)
    yield
    if started:
        import ray

        ray.shutdown()


@pytest.fixture(scope="session")
def collected(train_ray, tmp_path_factory):
    """A tiny dataset collected by the scripted experts: spatial suite, 1 demo per task
    (4 episodes, ~160 frames), 32 px cameras."""
    from services.collect import CollectConfig, run_collect

    out = tmp_path_factory.mktemp("collect") / "demos"
    cfg = CollectConfig(
        suite="spatial",
        episodes_per_task=1,
        out=out,
        image_size=32,
        num_workers=1,
        seed=0,
        progress=False,
    )
    return run_collect(cfg)
