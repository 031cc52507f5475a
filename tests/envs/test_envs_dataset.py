"""LeRobotDataset reads the LeRobot v2.1 layout (ours and LIBERO's naming) and fails clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs import lerobot_format as lf
from envs.dataset import LeRobotDataset

SIZE = 16


def _write(root: Path, lengths=(5, 3), rename: dict[str, str] | None = None) -> None:
    """A small dataset: actions[t] = [episode, t, 0...], images a flat colour per frame."""
    rename = rename or {}
    feats = lf.features(SIZE)
    feats = {rename.get(k, k): v for k, v in feats.items()}
    tasks = ["put the red block in the bowl", "stack the red block on the blue block"]
    episodes, index = [], 0
    for ep, n in enumerate(lengths):
        frames = [np.full((SIZE, SIZE, 3), 10 * t + ep, np.uint8) for t in range(n)]
        pngs = [lf.encode_png(f) for f in frames]
        states = np.arange(n * 8, dtype=np.float32).reshape(n, 8) + 100 * ep
        actions = np.zeros((n, 7), np.float32)
        actions[:, 0], actions[:, 1] = ep, np.arange(n)
        table = lf.frame_table(pngs, pngs, states, actions, fps=20)
        table = lf.finish_episode_table(table, ep, index, ep % 2, feats)
        table = table.rename_columns([rename.get(c, c) for c in table.column_names])
        lf.write_episode(root, table, ep)
        episodes.append({"episode_index": ep, "tasks": [tasks[ep % 2]], "length": n})
        index += n
    (root / "meta").mkdir(parents=True, exist_ok=True)
    info = lf.info_json(feats, len(lengths), index, 2, fps=20)
    (root / "meta/info.json").write_text(json.dumps(info))
    lf.write_jsonl(root / "meta/episodes.jsonl", episodes)
    lf.write_jsonl(
        root / "meta/tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(tasks)]
    )


def test_frames_chunks_and_prompts(tmp_path):
    _write(tmp_path)
    ds = LeRobotDataset(tmp_path, action_horizon=4)
    assert len(ds) == 8
    item = ds[3]  # episode 0, frame 3 of 5
    assert item["observation/image"].shape == (SIZE, SIZE, 3)
    assert item["observation/image"].dtype == np.uint8
    assert item["observation/image"][0, 0, 0] == 30
    assert item["observation/wrist_image"].shape == (SIZE, SIZE, 3)
    assert item["observation/state"].dtype == np.float32 and item["observation/state"].shape == (8,)
    np.testing.assert_array_equal(item["observation/state"], np.arange(24, 32))
    assert item["actions"].shape == (4, 7) and item["actions"].dtype == np.float32
    # frames 3, 4, then the last action (frame 4) repeated past the end of the episode
    np.testing.assert_array_equal(item["actions"][:, 1], [3, 4, 4, 4])
    assert np.all(item["actions"][:, 0] == 0)
    assert item["prompt"] == "put the red block in the bowl"
    last = ds[-1]  # episode 1, frame 2
    np.testing.assert_array_equal(last["actions"][:, :2], [[1, 2]] * 4)
    assert last["prompt"] == "stack the red block on the blue block"
    assert ds.episode_of(5) == (1, 0)
    with pytest.raises(IndexError, match="index: 8 out of range"):
        ds[8]


def test_lerobot_style_feature_names_are_accepted(tmp_path):
    names = {
        "image": "observation.images.image",
        "wrist_image": "observation.images.wrist_image",
        "state": "observation.state",
        "actions": "action",
    }
    _write(tmp_path, rename=names)
    ds = LeRobotDataset(tmp_path, action_horizon=2)
    assert ds.keys == names
    assert ds[0]["actions"].shape == (2, 7)


def test_list_typed_vectors_and_plain_binary_images_are_read(tmp_path):
    """Real LIBERO parquet files may use variable-size lists; images may be bare bytes."""
    _write(tmp_path, lengths=(3,))
    path = tmp_path / "data/chunk-000/episode_000000.parquet"
    table = pq.read_table(path)
    state = pa.array(table.column("state").to_pylist(), type=pa.list_(pa.float32()))
    image = table.column("image").combine_chunks().field("bytes")
    table = table.set_column(table.schema.get_field_index("state"), "state", state)
    table = table.set_column(table.schema.get_field_index("image"), "image", image)
    pq.write_table(table, path)
    item = LeRobotDataset(tmp_path, action_horizon=1)[1]
    np.testing.assert_array_equal(item["observation/state"], np.arange(8, 16))
    assert item["observation/image"][0, 0, 0] == 10


def test_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta/info.json"):
        LeRobotDataset(tmp_path, action_horizon=2)
    _write(tmp_path)
    with pytest.raises(ValueError, match="action_horizon"):
        LeRobotDataset(tmp_path, action_horizon=0)

    info_path = tmp_path / "meta/info.json"
    good = json.loads(info_path.read_text())
    bad = json.loads(info_path.read_text())
    del bad["features"]["wrist_image"]
    info_path.write_text(json.dumps(bad))
    with pytest.raises(KeyError, match="wrist_image"):
        LeRobotDataset(tmp_path, action_horizon=2)
    bad = json.loads(json.dumps(good))
    bad["features"]["image"]["dtype"] = "video"
    info_path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="'image' has dtype 'video'"):
        LeRobotDataset(tmp_path, action_horizon=2)
    info_path.write_text(json.dumps(good))

    (tmp_path / "data/chunk-000/episode_000001.parquet").unlink()
    ds = LeRobotDataset(tmp_path, action_horizon=2)
    ds[0]
    with pytest.raises(FileNotFoundError, match="episode 1 .*episode_000001.parquet"):
        ds[6]
    lf.write_jsonl(
        tmp_path / "meta/episodes.jsonl",
        [{"episode_index": 0, "tasks": ["x"], "length": 9}],
    )
    with pytest.raises(ValueError, match="has 5 rows, meta/episodes.jsonl says 9"):
        LeRobotDataset(tmp_path, action_horizon=2)[0]
