"""Where a LeRobot dataset's episodes live: the task table and, per episode, its length, its
parquet file and where each video feature's frames are. This module reads the v2.0 / v2.1
metadata; `envs/lerobot_v3.py` reads v3.0 into the same `Layout`.

v2.x (LeRobot `lerobot/datasets/v2/convert_dataset_v1_to_v2.py`, openpi's LIBERO conversion):

    meta/tasks.jsonl     {"task_index", "task"} per line
    meta/episodes.jsonl  {"episode_index", "tasks", "length"} per line
    data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet        one episode a file
    videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4   (dtype video)

with episode_chunk = episode_index // chunks_size. A v2.x video holds one episode from t=0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

V2_VERSIONS = ("v2.0", "v2.1")
V2_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_CHUNKS_SIZE = 1000  # LeRobot's DEFAULT_CHUNK_SIZE (lerobot/datasets/utils.py)


@dataclass(frozen=True)
class VideoRef:
    """Where one episode's frames of one video feature are."""

    path: Path
    from_timestamp: float  # seconds into the file where the episode's frame 0 is (v2.x: 0)


@dataclass(frozen=True)
class EpisodeRef:
    index: int  # episode_index
    length: int  # frames
    data_file: Path
    shared_file: bool  # the data file holds other episodes too (v3.0): select by episode_index
    videos: dict[str, VideoRef]  # LeRobot feature name -> its frames
    listed_in: str  # the metadata file that lists the episode, for messages


@dataclass(frozen=True)
class Layout:
    version: str  # codebase_version
    tasks: dict[int, str]  # task_index -> instruction
    tasks_file: Path
    episodes: list[EpisodeRef]  # sorted by episode_index


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"LeRobot dataset: missing {path}")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not valid JSON ({e})") from e
    return rows


def row_field(row: dict[str, Any], key: str, where: str) -> Any:
    """row[key], or an error naming the file (and line or row) and the missing key."""
    if key not in row:
        raise KeyError(f"{where}: no {key!r} (has {sorted(row)})")
    return row[key]


def fill_template(template: Any, field: str, info_path: Path, **values: Any) -> str:
    """info.json's `data_path` / `video_path` template with `values` filled in."""
    if not isinstance(template, str):
        raise ValueError(f"{info_path}: {field} is {template!r}, expected a path template string")
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"{info_path}: {field} {template!r} cannot be filled from {sorted(values)} ({e!r})"
        ) from e


def read_v2_layout(
    root: Path, info: dict[str, Any], info_path: Path, video_keys: list[str]
) -> Layout:
    """v2.0 / v2.1 metadata (see the module docstring)."""
    tasks_file = root / "meta" / "tasks.jsonl"
    tasks = {}
    for n, r in enumerate(read_jsonl(tasks_file), 1):
        where = f"{tasks_file}:{n}"
        tasks[int(row_field(r, "task_index", where))] = str(row_field(r, "task", where))
    episodes_file = root / "meta" / "episodes.jsonl"
    rows = read_jsonl(episodes_file)
    if not rows:
        raise ValueError(f"{episodes_file}: lists no episodes")
    chunks_size = int(info.get("chunks_size") or V2_CHUNKS_SIZE)
    data_path = info.get("data_path", V2_DATA_PATH)
    episodes = []
    for n, r in enumerate(rows, 1):
        where = f"{episodes_file}:{n}"
        index = int(row_field(r, "episode_index", where))
        slots = {"episode_chunk": index // chunks_size, "episode_index": index}
        videos = {}
        for key in video_keys:
            file = fill_template(
                info.get("video_path"), "video_path", info_path, video_key=key, **slots
            )
            videos[key] = VideoRef(root / file, 0.0)
        data = root / fill_template(data_path, "data_path", info_path, **slots)
        length = int(row_field(r, "length", where))
        episodes.append(EpisodeRef(index, length, data, False, videos, "meta/episodes.jsonl"))
    episodes.sort(key=lambda e: e.index)
    return Layout(str(info.get("codebase_version")), tasks, tasks_file, episodes)
