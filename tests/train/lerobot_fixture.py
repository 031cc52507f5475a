"""A tiny LeRobot-layout dataset with a learnable signal, written from scratch.

Layout (docs/references.md "Data conventions", LIBERO's features): meta/info.json,
meta/episodes.jsonl, meta/tasks.jsonl, data/chunk-000/episode_XXXXXX.parquet with columns
image / wrist_image ({"bytes": png, "path": None}), state (8), actions (7), timestamp,
frame_index, episode_index, index, task_index.

Signal: actions are a fixed linear function of the state plus a per-task offset, and the
images are tinted by task, so a model that reads state-free π0.5 inputs (images + prompt)
can still lower its loss by learning the per-task mean action.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

TASKS = ("pick up the red block", "open the top drawer")


def _png(img: np.ndarray) -> dict:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def write_tiny_lerobot(
    root: Path, episodes: int = 4, length: int = 16, image_size: int = 32, seed: int = 0
) -> Path:
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    mix = rng.normal(size=(8, 7)).astype(np.float32) * 0.3
    offsets = np.stack([np.linspace(-1, 1, 7), np.linspace(1, -1, 7)]).astype(np.float32)
    index = 0
    eps = []
    for ep in range(episodes):
        task = ep % len(TASKS)
        state = rng.normal(size=8).astype(np.float32)
        rows = []
        for t in range(length):
            state = state + 0.1 * rng.normal(size=8).astype(np.float32)
            action = state @ mix + offsets[task]
            tint = np.zeros((image_size, image_size, 3), dtype=np.uint8)
            tint[..., task] = 200
            noise = rng.integers(0, 40, size=tint.shape, dtype=np.uint8)
            rows.append(
                {
                    "image": _png(tint + noise),
                    "wrist_image": _png(255 - tint - noise),
                    "state": state.tolist(),
                    "actions": action.astype(np.float32).tolist(),
                    "timestamp": t / 10.0,
                    "frame_index": t,
                    "episode_index": ep,
                    "index": index,
                    "task_index": task,
                }
            )
            index += 1
        pq.write_table(
            pa.Table.from_pylist(rows), root / "data" / "chunk-000" / f"episode_{ep:06d}.parquet"
        )
        eps.append({"episode_index": ep, "tasks": [TASKS[task]], "length": length})
    (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in eps))
    (root / "meta" / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS))
    )
    shape = [image_size, image_size, 3]
    info = {
        "codebase_version": "v2.1",
        "robot_type": "panda",
        "fps": 10,
        "total_episodes": episodes,
        "total_frames": index,
        "total_tasks": len(TASKS),
        "chunks_size": 1000,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "features": {
            "image": {"dtype": "image", "shape": shape, "names": ["height", "width", "channel"]},
            "wrist_image": {
                "dtype": "image",
                "shape": shape,
                "names": ["height", "width", "channel"],
            },
            "state": {"dtype": "float32", "shape": [8], "names": ["state"]},
            "actions": {"dtype": "float32", "shape": [7], "names": ["actions"]},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=1))
    return root
