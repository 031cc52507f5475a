"""Shared fixtures for the serve tests: a tiny random π0.5 checkpoint with the pruner on,
one embedded local Ray with Serve on loopback, and one served app per session.

tests/rollout/conftest.py loads this file too (pytest gives conftests no package), so the
builders below are plain functions beside their fixtures.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from prunepi import env

env.apply_defaults()

from policies.normalize import NormStats  # noqa: E402
from policies.pi05.config import get_preset  # noqa: E402
from policies.pi05.model import Pi05Model  # noqa: E402
from policies.policy import PolicyConfig, save_checkpoint  # noqa: E402
from policies.pruning.config import PrunerConfig  # noqa: E402
from policies.tokenizer import train_sentencepiece  # noqa: E402

TASKS = ["pick up the red block", "open the drawer", "put the bowl on the plate", "task one"]
PORT_ENV = "PRUNEPI_TEST_SERVE_PORT"  # one Serve HTTP port for the whole pytest session


def make_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A random tiny π0.5 (pruner on, keep 25% of patches) saved as a full checkpoint."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(
        get_preset("tiny"), pruning=PrunerConfig(enabled=True, budget="keep_ratio", keep_ratio=0.25)
    )
    model = Pi05Model(cfg).eval()
    tok = train_sentencepiece(TASKS, folder.parent / f"{folder.name}_spm.model", vocab_size=512)
    rng = np.random.default_rng(seed)
    stats = {
        "state": NormStats.from_data(rng.normal(size=(256, 8))),
        "actions": NormStats.from_data(rng.uniform(-1, 1, size=(256, 7))),
    }
    return save_checkpoint(folder, model, PolicyConfig(), tok, stats)


def make_observation(rng: np.random.Generator, size: int = 112, prompt: str | None = None) -> dict:
    """A raw LIBERO-style observation (openpi keys, uint8 HWC images, 8-D state)."""
    return {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=8).astype(np.float32),
        "prompt": prompt if prompt is not None else TASKS[int(rng.integers(len(TASKS)))],
    }


def session_port() -> int:
    """A free loopback port chosen once per pytest process (Serve's HTTP options are
    cluster-wide and cannot change while Serve runs)."""
    if PORT_ENV not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ[PORT_ENV] = str(s.getsockname()[1])
    return int(os.environ[PORT_ENV])


# tests/rollout/conftest.py re-exports these fixtures, which gives pytest a second definition
# of each: the session-wide objects are cached here so both share one checkpoint and one app.
_SHARED: dict[str, object] = {}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    if "checkpoint" not in _SHARED:
        _SHARED["checkpoint"] = make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")
    return _SHARED["checkpoint"]


@pytest.fixture(scope="session")
def local_ray():
    """Embedded Ray on 127.0.0.1 (2 CPUs); shut down only if this session started it."""
    started = env.init_local_ray(num_cpus=2)
    yield
    if started:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def served(local_ray, tiny_checkpoint):
    """The tiny checkpoint served by Ray Serve on loopback (app "test", route "/")."""
    from services.serve import ServeConfig, start_serve

    if "served" in _SHARED:  # created by the other definition, which also stops it
        yield _SHARED["served"]
        return
    cfg = ServeConfig(
        checkpoint=str(tiny_checkpoint),
        port=session_port(),
        num_cpus_per_replica=0.5,
        max_batch_size=8,
        batch_wait_timeout_s=0.02,
        max_message_bytes=1 << 20,
        app_name="test",
    )
    handle = _SHARED["served"] = start_serve(cfg)
    yield handle
    del _SHARED["served"]
    handle.stop()


@pytest.fixture(scope="session")
def reference_policy(tiny_checkpoint):
    """The same checkpoint in this process: what one-at-a-time answers look like."""
    from policies.policy import Policy

    # One intra-op thread: on 2 shared cores torch's default (2 OpenMP threads) next to the
    # served replica oversubscribes the CPUs and runs 30x slower.
    torch.set_num_threads(1)
    return Policy.from_checkpoint(tiny_checkpoint)
