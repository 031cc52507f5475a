"""LeRobotDataset reads LeRobot v3.0 (parquet images and mp4 video features), v2.x video
features and openpi's v2.0 LIBERO layout, and names the file and field when it cannot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from envs import lerobot_format as lf
from envs.dataset import LeRobotDataset
from tests.envs.lerobot_v3_fixture import (
    LENGTHS,
    NAMES,
    TASKS,
    actions,
    frame,
    states,
    write_mp4,
    write_v2_video,
    write_v3,
)

STARTS = np.concatenate([[0], np.cumsum(LENGTHS)])


@pytest.fixture(scope="module")
def v3_images(tmp_path_factory) -> Path:
    return write_v3(tmp_path_factory.mktemp("v3") / "images")


@pytest.fixture(scope="module")
def v3_video(tmp_path_factory) -> Path:
    return write_v3(tmp_path_factory.mktemp("v3") / "video", video=True)


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "ds"))


def _check_every_frame(ds: LeRobotDataset, atol: int) -> None:
    """Each global frame is its own episode's frame t, state, action chunk and prompt."""
    assert len(ds) == sum(LENGTHS)
    for i in range(len(ds)):
        ep = int(np.searchsorted(STARTS, i, side="right") - 1)
        t = i - STARTS[ep]
        assert ds.episode_of(i) == (ep, t)
        item = ds[i]
        for key, wrist in (("observation/image", False), ("observation/wrist_image", True)):
            img = item[key]
            assert img.shape == (16, 16, 3) and img.dtype == np.uint8
            diff = np.abs(img.astype(int) - frame(ep, t, wrist)).max()
            assert diff <= atol, f"frame {i} (episode {ep}, t {t}) {key}: max |diff| {diff}"
        np.testing.assert_array_equal(item["observation/state"], states(ep, LENGTHS[ep])[t])
        # the chunk stays inside the episode: the last action repeats past its end
        want = np.minimum(np.arange(t, t + 3), LENGTHS[ep] - 1)
        np.testing.assert_array_equal(item["actions"][:, 1], want)
        assert np.all(item["actions"][:, 0] == ep)
        assert item["prompt"] == TASKS[ep % 2]


def test_v3_images_in_parquet(v3_images):
    ds = LeRobotDataset(v3_images, action_horizon=3)
    assert ds.version == "v3.0" and ds.video_cameras == ()
    assert ds.keys == NAMES
    assert [e.data_file.name for e in ds.episodes] == ["file-000.parquet"] * 2 + [
        "file-001.parquet"
    ]
    _check_every_frame(ds, atol=0)
    want = np.concatenate([actions(e, n) for e, n in enumerate(LENGTHS)])
    np.testing.assert_array_equal(ds.column("actions"), want)


def test_v3_video_frames_align_across_episodes_in_one_file(v3_video):
    ds = LeRobotDataset(v3_video, action_horizon=3, cache_episodes=1)
    assert ds.video_cameras == ("image", "wrist_image")
    # all three episodes share one image mp4; episode 1 starts at 0.6 s, between keyframes
    files = {e.videos[NAMES["image"]].path for e in ds.episodes}
    assert len(files) == 1
    assert [e.videos[NAMES["image"]].from_timestamp for e in ds.episodes] == [0.0, 0.6, 1.0]
    # near-lossless: every frame within 2 levels of its original; a frame of another episode
    # or time step is >= 20 levels off, so ignoring from_timestamp fails here
    _check_every_frame(ds, atol=2)
    np.testing.assert_array_equal(
        ds.column("state"), np.concatenate([states(e, n) for e, n in enumerate(LENGTHS)])
    )


def test_v2_video_features_and_v2_0(tmp_path):
    ds = LeRobotDataset(write_v2_video(tmp_path / "v2"), action_horizon=3)
    assert ds.version == "v2.1" and ds.video_cameras == ("image", "wrist_image")
    assert ds.episodes[2].videos["image"].path == (
        tmp_path / "v2/videos/chunk-000/image/episode_000002.mp4"
    )
    _check_every_frame(ds, atol=2)
    # openpi's physical-intelligence/libero is v2.0: the same files, stats.json not per episode
    info_path = tmp_path / "v2/meta/info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "codebase_version": "v2.0"}))
    assert LeRobotDataset(tmp_path / "v2", action_horizon=1).version == "v2.0"


def test_v2_1_libero_names_written_by_lerobot_format(tmp_path):
    """Ours (envs/lerobot_format) uses openpi's LIBERO names image / wrist_image / state /
    actions with PNG images in the parquet files."""
    feats = lf.features(16)
    index = 0
    for ep, n in enumerate(LENGTHS):
        pngs = [lf.encode_png(frame(ep, t)) for t in range(n)]
        wrist = [lf.encode_png(frame(ep, t, True)) for t in range(n)]
        table = lf.frame_table(pngs, wrist, states(ep, n), actions(ep, n), fps=10)
        lf.write_episode(tmp_path, lf.finish_episode_table(table, ep, index, ep % 2, feats), ep)
        index += n
    info = lf.info_json(feats, len(LENGTHS), index, len(TASKS), fps=10)
    eps = [
        {"episode_index": e, "tasks": [TASKS[e % 2]], "length": n} for e, n in enumerate(LENGTHS)
    ]
    lf.write_jsonl(tmp_path / "meta/episodes.jsonl", eps)
    lf.write_jsonl(
        tmp_path / "meta/tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(TASKS)]
    )
    (tmp_path / "meta/info.json").write_text(json.dumps(info))
    ds = LeRobotDataset(tmp_path, action_horizon=3)
    assert ds.keys == {k: k for k in NAMES} and ds.version == "v2.1"
    _check_every_frame(ds, atol=0)


@pytest.mark.parametrize("version", ["v1.6", "v2.2", "v3.1", None])
def test_unsupported_version_names_it_the_file_and_the_supported_ones(v3_images, tmp_path, version):
    root = _copy(v3_images, tmp_path)
    info = json.loads((root / "meta/info.json").read_text())
    if version is None:
        del info["codebase_version"]
    else:
        info["codebase_version"] = version
    (root / "meta/info.json").write_text(json.dumps(info))
    pattern = rf"meta/info.json: codebase_version {version!r} is not supported.*v2.0, v2.1, v3.0"
    with pytest.raises(ValueError, match=pattern):
        LeRobotDataset(root, action_horizon=1)


def test_v3_missing_files_and_columns_are_named(v3_video, tmp_path):
    root = _copy(v3_video, tmp_path)
    (root / "meta/tasks.parquet").rename(root / "tasks.bak")
    with pytest.raises(FileNotFoundError, match="missing .*meta/tasks.parquet"):
        LeRobotDataset(root, action_horizon=1)
    (root / "tasks.bak").rename(root / "meta/tasks.parquet")

    episodes = root / "meta/episodes/chunk-000/file-001.parquet"
    table = pq.read_table(episodes)
    key = f"videos/{NAMES['wrist_image']}/from_timestamp"
    pq.write_table(table.drop_columns([key]), episodes)
    with pytest.raises(KeyError, match=f"file-001.parquet: no column '{key}'"):
        LeRobotDataset(root, action_horizon=1)
    pq.write_table(table, episodes)

    video = root / f"videos/{NAMES['wrist_image']}/chunk-000/file-001.mp4"
    video.unlink()
    ds = LeRobotDataset(root, action_horizon=1)
    ds[0]
    with pytest.raises(FileNotFoundError, match="video file .*wrist_image/chunk-000/file-001.mp4"):
        ds[len(ds) - 1]
    # a video shorter than the metadata says: frames past its end are out of tolerance
    write_mp4(video, [frame(2, t, True) for t in range(2)])
    with pytest.raises(ValueError, match="file-001.mp4: no frame within tolerance_s"):
        LeRobotDataset(root, action_horizon=1)[len(ds) - 1]

    data = root / "data/chunk-000/file-001.parquet"
    data.unlink()
    with pytest.raises(FileNotFoundError, match="episode 2 data file .*file-001.parquet"):
        LeRobotDataset(root, action_horizon=1)[len(ds) - 1]


def test_v3_row_count_and_feature_errors(v3_images, tmp_path):
    root = _copy(v3_images, tmp_path)
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    lengths = pa.array([LENGTHS[0], 9], type=table.schema.field("length").type)
    pq.write_table(
        table.set_column(table.schema.get_field_index("length"), "length", lengths), path
    )
    ds = LeRobotDataset(root, action_horizon=1)
    ds[0]
    with pytest.raises(
        ValueError, match="file-000.parquet: has 4 rows of episode 1, meta/episodes"
    ):
        ds[LENGTHS[0]]
    with pytest.raises(ValueError, match="has 4 rows of episode 1"):
        ds.column("state")
    pq.write_table(table, path)

    info = json.loads((root / "meta/info.json").read_text())
    info["features"][NAMES["image"]]["dtype"] = "video"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="'observation.images.image' has dtype 'video' but video"):
        LeRobotDataset(root, action_horizon=1)
    info["features"][NAMES["image"]]["dtype"] = "uint8"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="has dtype 'uint8'; expected 'image'"):
        LeRobotDataset(root, action_horizon=1)
