"""The LeRobot v2.1 dataset layout that openpi trains from, as LeRobot's LIBERO conversion
(openpi `examples/libero/convert_libero_data_to_lerobot.py`) writes it:

    meta/info.json            codebase_version, fps, features, totals, path templates
    meta/episodes.jsonl       {"episode_index", "tasks": [text], "length"} per episode
    meta/tasks.jsonl          {"task_index", "task"} per task
    meta/episodes_stats.jsonl per-episode min/max/mean/std/count of every feature (v2.1)
    data/chunk-000/episode_000000.parquet

Images are PNG bytes in a struct {"bytes", "path"}; the parquet schema carries the Hugging Face
`datasets` feature metadata so LeRobot decodes them as images.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CODEBASE_VERSION = "v2.1"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
IMAGE_FEATURES = ("image", "wrist_image")
INDEX_FEATURES = ("frame_index", "episode_index", "index", "task_index")
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def features(image_size: int, state_dim: int = 8, action_dim: int = 7) -> dict[str, Any]:
    """info.json `features`, LIBERO's names and LeRobot's bookkeeping columns."""
    image = {
        "dtype": "image",
        "shape": [image_size, image_size, 3],
        "names": ["height", "width", "channel"],
    }
    scalar = {"shape": [1], "names": None}
    return {
        "image": dict(image),
        "wrist_image": dict(image),
        "state": {"dtype": "float32", "shape": [state_dim], "names": ["state"]},
        "actions": {"dtype": "float32", "shape": [action_dim], "names": ["actions"]},
        "timestamp": {"dtype": "float32", **scalar},
        **{name: {"dtype": "int64", **scalar} for name in INDEX_FEATURES},
    }


def _hf_features(feats: dict[str, Any]) -> dict[str, Any]:
    """The `datasets` feature description stored in the parquet schema metadata."""
    out: dict[str, Any] = {}
    for name, f in feats.items():
        if f["dtype"] == "image":
            out[name] = {"_type": "Image"}
        elif f["shape"] == [1]:
            out[name] = {"dtype": f["dtype"], "_type": "Value"}
        else:
            out[name] = {
                "feature": {"dtype": f["dtype"], "_type": "Value"},
                "length": f["shape"][0],
                "_type": "Sequence",
            }
    return out


def encode_png(image: np.ndarray) -> bytes:
    """uint8 HxWx3 -> PNG bytes (fast compression: collection is CPU bound)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def frame_table(
    images: list[bytes],
    wrist_images: list[bytes],
    states: np.ndarray,
    actions: np.ndarray,
    fps: int,
) -> pa.Table:
    """One episode's per-frame columns, without the episode/global/task indices (those are
    known only once the collector has chosen which episodes to keep)."""
    n = len(images)
    if not (len(wrist_images) == len(states) == len(actions) == n):
        raise ValueError(
            f"episode: column lengths differ (image {n}, wrist_image {len(wrist_images)}, "
            f"state {len(states)}, actions {len(actions)})"
        )

    def vectors(x: np.ndarray) -> pa.Array:
        x = np.asarray(x, dtype=np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])

    def pngs(blobs: list[bytes]) -> pa.Array:
        return pa.array([{"bytes": b, "path": None} for b in blobs], type=IMAGE_STRUCT)

    return pa.table(
        {
            "image": pngs(images),
            "wrist_image": pngs(wrist_images),
            "state": vectors(states),
            "actions": vectors(actions),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / fps),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
        }
    )


def finish_episode_table(
    frames: pa.Table, episode_index: int, start_index: int, task_index: int, feats: dict
) -> pa.Table:
    """Add the index columns and the Hugging Face schema metadata."""
    n = frames.num_rows
    table = frames.append_column(
        "episode_index", pa.array(np.full(n, episode_index, dtype=np.int64))
    )
    table = table.append_column("index", pa.array(np.arange(start_index, start_index + n)))
    table = table.append_column("task_index", pa.array(np.full(n, task_index, dtype=np.int64)))
    meta = {b"huggingface": json.dumps({"info": {"features": _hf_features(feats)}}).encode()}
    return table.replace_schema_metadata(meta)


def data_file(root: Path, episode_index: int, chunks_size: int = CHUNKS_SIZE) -> Path:
    rel = DATA_PATH.format(episode_chunk=episode_index // chunks_size, episode_index=episode_index)
    return root / rel


def write_episode(root: Path, table: pa.Table, episode_index: int) -> Path:
    path = data_file(root, episode_index)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def vector_stats(x: np.ndarray) -> dict[str, list]:
    """LeRobot's per-episode stats of a [T, D] (or [T]) column."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    return {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": x.mean(0).tolist(),
        "std": x.std(0).tolist(),
        "count": [int(len(x))],
    }


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per-channel stats of uint8 [T, H, W, 3] frames scaled to [0, 1], shaped [3, 1, 1] as
    LeRobot stores them."""
    x = np.asarray(frames, dtype=np.float64).reshape(-1, 3) / 255.0

    def c11(v: np.ndarray) -> list:
        return [[[float(c)]] for c in v]

    return {
        "min": c11(x.min(0)),
        "max": c11(x.max(0)),
        "mean": c11(x.mean(0)),
        "std": c11(x.std(0)),
        "count": [int(len(frames))],
    }


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def info_json(
    feats: dict[str, Any],
    total_episodes: int,
    total_frames: int,
    total_tasks: int,
    fps: int,
    robot_type: str = "prunepi_floating_gripper",
) -> dict[str, Any]:
    return {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": total_episodes,
        "total_frames": total_frames,
        "total_tasks": total_tasks,
        "total_videos": 0,
        "total_chunks": (total_episodes + CHUNKS_SIZE - 1) // CHUNKS_SIZE,
        "chunks_size": CHUNKS_SIZE,
        "fps": fps,
        "splits": {"train": f"0:{total_episodes}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": feats,
    }
