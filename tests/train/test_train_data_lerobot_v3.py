"""Training's data entry points (open_dataset, norm stats, task strings) on a LeRobot v3.0
dataset with mp4 video features (no Ray)."""

from __future__ import annotations

import numpy as np

from services.train.data import compute_norm_stats, open_dataset, read_column, task_strings
from tests.envs.lerobot_v3_fixture import LENGTHS, TASKS, actions, frame, states, write_v3


def test_open_dataset_norm_stats_and_tasks_on_v3_video(tmp_path):
    root = write_v3(tmp_path / "v3", video=True)
    ds = open_dataset(root, action_horizon=4)
    assert len(ds) == sum(LENGTHS) and ds.version == "v3.0"
    last = ds[len(ds) - 1]  # episode 2 (its own data and wrist video file), frame 4
    assert np.abs(last["observation/image"].astype(int) - frame(2, 4)).max() <= 2
    assert np.abs(last["observation/wrist_image"].astype(int) - frame(2, 4, True)).max() <= 2
    assert last["actions"].shape == (4, 7)

    all_states = np.concatenate([states(e, n) for e, n in enumerate(LENGTHS)])
    all_actions = np.concatenate([actions(e, n) for e, n in enumerate(LENGTHS)])
    np.testing.assert_array_equal(read_column(root, "state"), all_states)
    stats = compute_norm_stats(root)
    np.testing.assert_allclose(stats["state"].q01, np.quantile(all_states, 0.01, axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["actions"].q99, np.quantile(all_actions, 0.99, axis=0))
    np.testing.assert_allclose(stats["actions"].mean, all_actions.mean(0), rtol=1e-6)
    assert task_strings(root) == sorted(TASKS)
