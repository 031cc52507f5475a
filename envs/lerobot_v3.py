"""The LeRobot v3.0 metadata (LeRobot >= 0.4) read into `envs.lerobot_layout.Layout`.

Layout, as `lerobot/datasets/dataset_writer.py` and `lerobot/datasets/dataset_metadata.py`
write it (and `lerobot/scripts/convert_dataset_v21_to_v30.py` converts v2.1 into):

    meta/info.json       codebase_version "v3.0", fps, features, chunks_size, and templates
                         data_path "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                         video_path "videos/{video_key}/chunk-{chunk_index:03d}/"
                                    "file-{file_index:03d}.mp4"
    meta/tasks.parquet   pandas frame indexed by the task string (column "task"), column task_index
    meta/episodes/chunk-XXX/file-XXX.parquet   one row per episode: episode_index, tasks, length,
                         dataset_from_index, dataset_to_index, data/chunk_index, data/file_index,
                         videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp},
                         stats/... (ignored here)
    data/chunk-XXX/file-XXX.parquet            many episodes a file (rows carry episode_index)
    videos/<key>/chunk-XXX/file-XXX.mp4        many episodes concatenated a file; an episode's
                         frames are at [from_timestamp, to_timestamp) of the file
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from envs.lerobot_layout import EpisodeRef, Layout, VideoRef, fill_template

V3_VERSIONS = ("v3.0",)
_EPISODE_COLUMNS = ("episode_index", "length", "data/chunk_index", "data/file_index")
_VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp")
# pandas writes a named index as a column of that name, an unnamed one as __index_level_0__.
_TASK_COLUMNS = ("task", "__index_level_0__")


def read_table_columns(
    path: Path, columns: list[str], what: str, filters: list[tuple] | None = None
) -> pa.Table:
    """`columns` of a parquet file (rows matching pyarrow `filters`), or an error naming the
    file and the missing column."""
    if not path.is_file():
        raise FileNotFoundError(f"LeRobot dataset: {what} file {path} is missing")
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable parquet file ({e})") from e
    missing = [c for c in columns if c not in names]
    if missing:
        raise KeyError(f"{path}: no column {missing[0]!r} (has {names})")
    return pq.read_table(path, columns=columns, filters=filters)


def read_v3_tasks(tasks_file: Path) -> dict[int, str]:
    """meta/tasks.parquet -> {task_index: instruction}."""
    if not tasks_file.is_file():
        raise FileNotFoundError(f"LeRobot dataset: missing {tasks_file}")
    names = pq.read_schema(tasks_file).names
    task_col = next((c for c in _TASK_COLUMNS if c in names), None)
    if task_col is None or "task_index" not in names:
        raise KeyError(
            f"{tasks_file}: needs columns 'task_index' and 'task' (the pandas index); has {names}"
        )
    table = pq.read_table(tasks_file, columns=["task_index", task_col])
    indices = table.column("task_index").to_pylist()
    return {int(i): str(t) for i, t in zip(indices, table.column(task_col).to_pylist())}


def _episode_rows(root: Path, video_keys: list[str]) -> list[tuple[dict[str, Any], str]]:
    """Every meta/episodes row (the columns we use) with the file that holds it."""
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"LeRobot dataset: no meta/episodes/chunk-*/file-*.parquet under {root}"
        )
    columns = list(_EPISODE_COLUMNS)
    columns += [f"videos/{k}/{c}" for k in video_keys for c in _VIDEO_COLUMNS]
    rows = []
    for f in files:
        rel = str(f.relative_to(root))
        for n, r in enumerate(read_table_columns(f, columns, "episodes").to_pylist()):
            empty = [c for c in columns if r[c] is None]
            if empty:
                raise ValueError(f"{f}: row {n} has no value for {empty[0]!r}")
            rows.append((r, rel))
    if not rows:
        raise ValueError(f"{root / 'meta' / 'episodes'}: lists no episodes")
    return rows


def read_v3_layout(
    root: Path, info: dict[str, Any], info_path: Path, video_keys: list[str]
) -> Layout:
    """v3.0 metadata (see the module docstring)."""
    tasks_file = root / "meta" / "tasks.parquet"
    tasks = read_v3_tasks(tasks_file)
    episodes = []
    for r, rel in _episode_rows(root, video_keys):
        slots = {"chunk_index": int(r["data/chunk_index"]), "file_index": int(r["data/file_index"])}
        data = root / fill_template(info.get("data_path"), "data_path", info_path, **slots)
        videos = {}
        for key in video_keys:
            prefix = f"videos/{key}/"
            file = fill_template(
                info.get("video_path"),
                "video_path",
                info_path,
                video_key=key,
                chunk_index=int(r[prefix + "chunk_index"]),
                file_index=int(r[prefix + "file_index"]),
            )
            videos[key] = VideoRef(root / file, float(r[prefix + "from_timestamp"]))
        index, length = int(r["episode_index"]), int(r["length"])
        episodes.append(EpisodeRef(index, length, data, True, videos, rel))
    episodes.sort(key=lambda e: e.index)
    return Layout("v3.0", tasks, tasks_file, episodes)
