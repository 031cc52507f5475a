"""Demo collection on a real local Ray, read back with the reader."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import envs
from envs.dataset import LeRobotDataset
from envs.demos import record_expert_episode
from envs.experts import make_expert
from services.collect import CollectConfig, run_collect

pytestmark = [pytest.mark.ray, pytest.mark.render]

SIZE = 32


@pytest.mark.ray
def test_collect_one_suite_on_ray_and_read_it_back(tmp_path):
    import ray

    was_running = ray.is_initialized()
    out = tmp_path / "demos"
    cfg = CollectConfig(
        suite="goal",
        episodes_per_task=1,
        out=out,
        image_size=SIZE,
        num_workers=2,
        seed=5,
        progress=False,
    )
    assert run_collect(cfg) == out
    assert ray.is_initialized() == was_running  # it shut down only the Ray it started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos"]  # no temp dirs left

    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["fps"] == 20
    assert info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    assert info["features"]["image"]["shape"] == [SIZE, SIZE, 3]
    assert info["features"]["wrist_image"]["dtype"] == "image"
    assert info["features"]["state"]["shape"] == [8]
    assert info["features"]["actions"]["shape"] == [7]
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert name in info["features"]
    tasks = [t.instruction for t in envs.SUITES["goal"]]
    assert info["total_episodes"] == len(tasks) and info["total_tasks"] == len(tasks)

    episodes = [json.loads(line) for line in (out / "meta/episodes.jsonl").read_text().splitlines()]
    assert [e["tasks"] for e in episodes] == [[t] for t in tasks]
    assert sum(e["length"] for e in episodes) == info["total_frames"]
    task_rows = [json.loads(line) for line in (out / "meta/tasks.jsonl").read_text().splitlines()]
    assert task_rows == [{"task_index": i, "task": t} for i, t in enumerate(tasks)]
    stats = json.loads((out / "meta/expert_stats.json").read_text())["tasks"]
    assert set(stats) == set(tasks)
    assert all(0 < s["success_rate"] <= 1 and s["episodes"] >= 1 for s in stats.values())
    assert len((out / "meta/episodes_stats.jsonl").read_text().splitlines()) == len(tasks)

    table = pq.read_table(out / "data/chunk-000/episode_000000.parquet")
    assert table.column("image").type.names == ["bytes", "path"]
    assert table.column("image")[0]["bytes"].as_py()[:4] == b"\x89PNG"
    assert table.column("index").to_pylist() == list(range(table.num_rows))

    ds = LeRobotDataset(out, action_horizon=10)
    assert len(ds) == info["total_frames"]
    last = ds[len(ds) - 1]
    assert last["prompt"] == tasks[-1]
    assert last["observation/image"].shape == (SIZE, SIZE, 3)
    assert last["actions"].shape == (10, 7)
    first = ds[0]
    assert first["prompt"] == tasks[0]
    np.testing.assert_allclose(first["observation/state"][:3], [0.0, 0.0, 0.25], atol=1e-3)

    with pytest.raises(FileExistsError, match="out"):
        run_collect(cfg)


def test_expert_demos_are_reproducible():
    env = envs.make("spatial", 3, image_size=SIZE)
    expert = make_expert(env)
    try:
        a = record_expert_episode(env, expert, layout_seed=12)
        b = record_expert_episode(env, expert, layout_seed=12)
    finally:
        env.close()
    assert a.success and a.length == b.length
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.states, b.states)
    assert a.images == b.images
    assert a.stats["image"]["mean"] == b.stats["image"]["mean"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"suite": "spacial"}, "suite: unknown suite 'spacial'"),
        ({"episodes_per_task": 0}, "collect.episodes_per_task must be an integer >= 1, got 0"),
        ({"num_workers": 0}, "num_workers"),
        ({"image_size": 4}, "image_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_collect_config_validates(kwargs, words):
    with pytest.raises(ValueError, match=words):
        CollectConfig(**kwargs)


def test_collect_config_all_means_every_suite():
    assert CollectConfig(suite="all").suites == tuple(envs.SUITES)
    assert CollectConfig(suite="long", out="x").out.name == "x"
