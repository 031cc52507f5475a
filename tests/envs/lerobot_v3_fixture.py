"""Small LeRobot datasets written from scratch in the layouts current LeRobot writes:
v3.0 (lerobot/datasets/dataset_writer.py, dataset_metadata.py) with cameras as parquet images
or as mp4 video features, and v2.x video features (videos/chunk-XXX/<key>/episode_XXXXXX.mp4).

Content: frame t of episode e is `frame(e, t)` (a distinct colour per (e, t) over a gradient),
state[t] = arange(8) + 100 e + 10 t, actions[t] = [e, t, 0, ...], task e % 2.

v3.0 files (as LeRobot fills them when a file reaches its size limit):
  data:    episodes 0-1 in data/chunk-000/file-000.parquet, episode 2 in file-001
  image:   all episodes in one mp4, one after another (from_timestamp = start / fps)
  wrist:   episodes 0-1 in file-000.mp4, episode 2 in file-001.mp4
  meta/episodes: episodes 0-1 in chunk-000/file-000.parquet, episode 2 in file-001
Videos are H.264 RGB at crf 0 (lossless) with a keyframe every 4 frames, so an episode can start
between keyframes and decoding has to skip the previous episode's frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from envs import lerobot_format as lf

TASKS = ("put the red block in the bowl", "stack the red block on the blue block")
LENGTHS = (6, 4, 5)
SIZE = 16
FPS = 10
NAMES = {  # LeRobot's own feature names (the hub's v3.0 LIBERO uses these)
    "image": "observation.images.image",
    "wrist_image": "observation.images.wrist_image",
    "state": "observation.state",
    "actions": "action",
}
DATA_FILE_OF_EPISODE = (0, 0, 1)
VIDEO_FILE_OF_EPISODE = {"image": (0, 0, 0), "wrist_image": (0, 0, 1)}
GOP = 4  # frames between keyframes


def frame(episode: int, t: int, wrist: bool = False, size: int = SIZE) -> np.ndarray:
    """uint8 [size, size, 3]: distinct per (episode, t, camera)."""
    img = np.empty((size, size, 3), np.uint8)
    img[..., 0] = 20 * t + 10
    img[..., 1] = 70 * episode + (40 if wrist else 20)
    img[..., 2] = (np.arange(size) * (200 // size))[None, :]
    return img


def states(episode: int, n: int) -> np.ndarray:
    return np.arange(8, dtype=np.float32)[None, :] + 100 * episode + 10 * np.arange(n)[:, None]


def actions(episode: int, n: int) -> np.ndarray:
    a = np.zeros((n, 7), np.float32)
    a[:, 0], a[:, 1] = episode, np.arange(n)
    return a


def _vectors(x: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def _episode_table(
    ep: int, n: int, start: int, video: bool, names: dict[str, str] = NAMES
) -> pa.Table:
    """One episode's rows of a data file (LeRobot's columns, images unless video)."""
    cols: dict[str, pa.Array] = {}
    if not video:
        for ours, wrist in (("image", False), ("wrist_image", True)):
            blobs = [{"bytes": lf.encode_png(frame(ep, t, wrist)), "path": None} for t in range(n)]
            cols[names[ours]] = pa.array(blobs, type=lf.IMAGE_STRUCT)
    cols[names["state"]] = _vectors(states(ep, n))
    cols[names["actions"]] = _vectors(actions(ep, n))
    cols["timestamp"] = pa.array(np.arange(n, dtype=np.float32) / FPS)
    cols["frame_index"] = pa.array(np.arange(n, dtype=np.int64))
    cols["episode_index"] = pa.array(np.full(n, ep, np.int64))
    cols["index"] = pa.array(np.arange(start, start + n, dtype=np.int64))
    cols["task_index"] = pa.array(np.full(n, ep % 2, np.int64))
    return pa.table(cols)


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = FPS) -> None:
    """Lossless H.264 (libx264rgb, crf 0), presentation time of frame k = k / fps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps, options={"crf": "0", "g": str(GOP)})
        stream.pix_fmt = "rgb24"
        stream.height, stream.width = frames[0].shape[:2]
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_data(root: Path, video: bool) -> list[dict]:
    """data/ files, one row group per episode; returns the episodes' data/ metadata."""
    writers: dict[int, pq.ParquetWriter] = {}
    rows, start = [], 0
    for ep, n in enumerate(LENGTHS):
        file = DATA_FILE_OF_EPISODE[ep]
        table = _episode_table(ep, n, start, video)
        if file not in writers:
            path = root / f"data/chunk-000/file-{file:03d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            writers[file] = pq.ParquetWriter(path, table.schema)
        writers[file].write_table(table)
        rows.append(
            {
                "episode_index": ep,
                "tasks": [TASKS[ep % 2]],
                "length": n,
                "data/chunk_index": 0,
                "data/file_index": file,
                "dataset_from_index": start,
                "dataset_to_index": start + n,
            }
        )
        start += n
    for w in writers.values():
        w.close()
    return rows


def _write_videos(root: Path, rows: list[dict]) -> None:
    """videos/<key>/chunk-000/file-XXX.mp4, episodes concatenated; adds the videos/ columns."""
    for ours, wrist in (("image", False), ("wrist_image", True)):
        key, files = NAMES[ours], VIDEO_FILE_OF_EPISODE[ours]
        for file in sorted(set(files)):
            frames, offset = [], 0
            for ep, n in enumerate(LENGTHS):
                if files[ep] != file:
                    continue
                rows[ep][f"videos/{key}/chunk_index"] = 0
                rows[ep][f"videos/{key}/file_index"] = file
                rows[ep][f"videos/{key}/from_timestamp"] = offset / FPS
                rows[ep][f"videos/{key}/to_timestamp"] = (offset + n) / FPS
                frames += [frame(ep, t, wrist) for t in range(n)]
                offset += n
            write_mp4(root / f"videos/{key}/chunk-000/file-{file:03d}.mp4", frames)


def _features(video: bool) -> dict:
    names = ["height", "width", "channels"]
    camera = {"dtype": "video" if video else "image", "shape": [SIZE, SIZE, 3], "names": names}
    if video:
        camera["info"] = {"video.fps": FPS, "video.codec": "h264", "video.pix_fmt": "rgb24"}
    scalar = {"shape": [1], "names": None}
    feats = {
        NAMES["image"]: dict(camera),
        NAMES["wrist_image"]: dict(camera),
        NAMES["state"]: {"dtype": "float32", "shape": [8], "names": None},
        NAMES["actions"]: {"dtype": "float32", "shape": [7], "names": None},
        "timestamp": {"dtype": "float32", **scalar},
        **{k: {"dtype": "int64", **scalar} for k in lf.INDEX_FEATURES},
    }
    for f in feats.values():  # convert_dataset_v21_to_v30.convert_info adds fps to non-videos
        if f["dtype"] != "video":
            f["fps"] = FPS
    return feats


def _info(video: bool) -> dict:
    return {
        "codebase_version": "v3.0",
        "robot_type": "panda",
        "total_episodes": len(LENGTHS),
        "total_frames": sum(LENGTHS),
        "total_tasks": len(TASKS),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": FPS,
        "splits": {"train": f"0:{len(LENGTHS)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": (
            "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
            if video
            else None
        ),
        "features": _features(video),
    }


def write_v3(root: Path, video: bool = False) -> Path:
    """A v3.0 dataset of LENGTHS episodes at `root`; cameras as mp4 video features if `video`."""
    root = Path(root)
    rows = _write_data(root, video)
    if video:
        _write_videos(root, rows)
    for row in rows:  # per-episode stats columns, which readers skip (io_utils.load_episodes)
        row["stats/action/mean"] = actions(row["episode_index"], row["length"]).mean(0).tolist()
    for file, eps in ((0, rows[:2]), (1, rows[2:])):
        path = root / f"meta/episodes/chunk-000/file-{file:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(eps), path)
    # io_utils.write_tasks: a pandas frame indexed by the task string, column task_index
    tasks = pd.DataFrame({"task_index": range(len(TASKS))}, index=pd.Index(TASKS, name="task"))
    tasks.to_parquet(root / "meta/tasks.parquet")
    (root / "meta/info.json").write_text(json.dumps(_info(video), indent=2))
    return root


def write_v2_video(root: Path) -> Path:
    """A v2.1 dataset (LIBERO names) whose cameras are video features, one mp4 per episode."""
    root = Path(root)
    feats = lf.features(SIZE)
    for ours in ("image", "wrist_image"):
        feats[ours]["dtype"] = "video"
    episodes, index = [], 0
    for ep, n in enumerate(LENGTHS):
        libero_names = {k: k for k in NAMES}
        lf.write_episode(root, _episode_table(ep, n, index, True, libero_names), ep)
        for ours, wrist in (("image", False), ("wrist_image", True)):
            path = root / f"videos/chunk-000/{ours}/episode_{ep:06d}.mp4"
            write_mp4(path, [frame(ep, t, wrist) for t in range(n)])
        episodes.append({"episode_index": ep, "tasks": [TASKS[ep % 2]], "length": n})
        index += n
    info = lf.info_json(feats, len(LENGTHS), index, len(TASKS), fps=FPS)
    info["video_path"] = (
        "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    )
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta/info.json").write_text(json.dumps(info))
    lf.write_jsonl(root / "meta/episodes.jsonl", episodes)
    lf.write_jsonl(
        root / "meta/tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(TASKS)]
    )
    return root
