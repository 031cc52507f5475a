"""Read a LeRobot v2.x dataset (ours, or a real LIBERO one such as openpi's
`physical-intelligence/libero`) frame by frame, with openpi's LIBERO observation keys and an
action chunk per frame.

Feature names: LIBERO's conversion uses `image`, `wrist_image`, `state`, `actions`; LeRobot's
own datasets use `observation.images.image`, `observation.state`, `action`. Both are accepted.
The action chunk is the next `action_horizon` actions of the same episode, padded past the end
by repeating the last one (what LeRobot's delta_timestamps loading gives openpi).
"""

from __future__ import annotations

import bisect
import io
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

# Our key -> candidate LeRobot feature names, first match wins.
FEATURE_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "observation.images.image", "observation.image"),
    "wrist_image": ("wrist_image", "observation.images.wrist_image", "observation.wrist_image"),
    "state": ("state", "observation.state"),
    "actions": ("actions", "action"),
}
_DEFAULT_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"


def dataset_init_spread(root: str | Path) -> float | None:
    """The `init_spread` our collector recorded (meta/expert_stats.json), None otherwise.

    Rollouts that evaluate a policy trained on this dataset draw initial states the same way.
    """
    path = Path(root) / "meta" / "expert_stats.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("init_spread")
    return None if value is None else float(value)


@dataclass
class _Episode:
    """One episode's columns, decoded except for the images (decoded per frame)."""

    images: list[bytes]
    wrist_images: list[bytes]
    states: np.ndarray  # [T, state_dim] float32
    actions: np.ndarray  # [T, action_dim] float32
    task_index: np.ndarray  # [T] int64


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
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


class LeRobotDataset:
    """Random access to frames: `len()` is the number of frames, `ds[i]` a dict with
    `observation/image`, `observation/wrist_image` (uint8 HxWx3), `observation/state`
    (float32), `actions` (float32 [action_horizon, action_dim]) and `prompt` (str)."""

    def __init__(self, root: str | Path, action_horizon: int, cache_episodes: int = 16):
        if isinstance(action_horizon, bool) or not isinstance(action_horizon, int):
            raise TypeError(f"action_horizon: expected an int >= 1, got {action_horizon!r}")
        if action_horizon < 1:
            raise ValueError(f"action_horizon: expected an int >= 1, got {action_horizon!r}")
        self.root = Path(root)
        self.action_horizon = action_horizon
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise FileNotFoundError(f"LeRobot dataset: missing {info_path} (root={self.root})")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{info_path}: not valid JSON ({e})") from e
        feats = self.info.get("features")
        if not isinstance(feats, dict):
            raise ValueError(f"{info_path}: has no 'features' mapping")
        self.keys = {ours: self._resolve(ours, feats, info_path) for ours in FEATURE_ALIASES}
        for ours in ("image", "wrist_image"):
            dtype = feats[self.keys[ours]].get("dtype")
            if dtype != "image":
                raise ValueError(
                    f"{info_path}: feature {self.keys[ours]!r} has dtype {dtype!r}; this reader "
                    "needs images embedded in the parquet files (dtype 'image'), not videos"
                )
        self.state_dim = int(np.prod(feats[self.keys["state"]]["shape"]))
        self.action_dim = int(np.prod(feats[self.keys["actions"]]["shape"]))
        self.fps = self.info.get("fps")
        self.chunks_size = int(self.info.get("chunks_size", 1000))
        self.data_path = self.info.get("data_path", _DEFAULT_DATA_PATH)

        meta = self.root / "meta"
        self.tasks = {
            int(r["task_index"]): str(r["task"]) for r in _read_jsonl(meta / "tasks.jsonl")
        }
        episodes = sorted(_read_jsonl(meta / "episodes.jsonl"), key=lambda r: r["episode_index"])
        if not episodes:
            raise ValueError(f"{meta / 'episodes.jsonl'}: lists no episodes")
        self.episode_indices = [int(r["episode_index"]) for r in episodes]
        self.episode_lengths = [int(r["length"]) for r in episodes]
        self._starts = np.concatenate([[0], np.cumsum(self.episode_lengths)]).tolist()
        self._cache: OrderedDict[int, _Episode] = OrderedDict()
        self._cache_size = max(1, cache_episodes)

    @staticmethod
    def _resolve(ours: str, feats: dict[str, Any], info_path: Path) -> str:
        for name in FEATURE_ALIASES[ours]:
            if name in feats:
                return name
        raise KeyError(
            f"{info_path}: no feature for {ours!r} (looked for {list(FEATURE_ALIASES[ours])}; "
            f"the dataset has {sorted(feats)})"
        )

    # --- sequence protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise TypeError(f"index: expected an int, got {type(i).__name__}")
        n = len(self)
        i = int(i) + n if i < 0 else int(i)
        if not 0 <= i < n:
            raise IndexError(f"index: {i} out of range for {n} frames")
        slot = bisect.bisect_right(self._starts, i) - 1
        frame = i - self._starts[slot]
        ep = self._episode(slot)
        last = len(ep.actions) - 1
        chunk = ep.actions[np.minimum(np.arange(frame, frame + self.action_horizon), last)]
        task_index = int(ep.task_index[frame])
        if task_index not in self.tasks:
            raise KeyError(f"{self.root / 'meta/tasks.jsonl'}: no task_index {task_index}")
        return {
            "observation/image": self._decode(ep.images[frame], "image", slot),
            "observation/wrist_image": self._decode(ep.wrist_images[frame], "wrist_image", slot),
            "observation/state": ep.states[frame],
            "actions": chunk,
            "prompt": self.tasks[task_index],
        }

    def episode_of(self, i: int) -> tuple[int, int]:
        """(episode_index, frame_index) of global frame i."""
        slot = bisect.bisect_right(self._starts, i) - 1
        return self.episode_indices[slot], i - self._starts[slot]

    # --- loading ----------------------------------------------------------------------------------
    def _file(self, episode_index: int) -> Path:
        rel = self.data_path.format(
            episode_chunk=episode_index // self.chunks_size, episode_index=episode_index
        )
        return self.root / rel

    def _episode(self, slot: int) -> _Episode:
        if slot in self._cache:
            self._cache.move_to_end(slot)
            return self._cache[slot]
        ep = self._load(slot)
        self._cache[slot] = ep
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ep

    def _load(self, slot: int) -> _Episode:
        index = self.episode_indices[slot]
        path = self._file(index)
        if not path.is_file():
            raise FileNotFoundError(f"LeRobot dataset: episode {index} file {path} is missing")
        columns = [self.keys[k] for k in FEATURE_ALIASES] + ["task_index"]
        try:
            table = pq.read_table(path, columns=columns)
        except (pa.ArrowInvalid, KeyError) as e:
            raise ValueError(f"{path}: cannot read columns {columns} ({e})") from e
        expected = self.episode_lengths[slot]
        if table.num_rows != expected:
            raise ValueError(
                f"{path}: has {table.num_rows} rows, meta/episodes.jsonl says {expected}"
            )
        return _Episode(
            images=self._image_column(table, "image", path),
            wrist_images=self._image_column(table, "wrist_image", path),
            states=self._vector_column(table, "state", self.state_dim, path),
            actions=self._vector_column(table, "actions", self.action_dim, path),
            task_index=table.column("task_index").to_numpy().astype(np.int64),
        )

    def _image_column(self, table: pa.Table, ours: str, path: Path) -> list[bytes]:
        name = self.keys[ours]
        col = table.column(name).combine_chunks()
        if pa.types.is_struct(col.type):
            if col.type.get_field_index("bytes") < 0:
                raise ValueError(f"{path}: image column {name!r} has no 'bytes' field ({col.type})")
            col = col.field("bytes")
        if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
            raise ValueError(f"{path}: image column {name!r} is {col.type}, expected PNG bytes")
        blobs = col.to_pylist()
        if any(b is None for b in blobs):
            raise ValueError(f"{path}: image column {name!r} has frames without bytes")
        return blobs

    def _vector_column(self, table: pa.Table, ours: str, dim: int, path: Path) -> np.ndarray:
        name = self.keys[ours]
        col = table.column(name).combine_chunks()
        if not (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type)) and not (
            pa.types.is_large_list(col.type)
        ):
            raise ValueError(f"{path}: column {name!r} is {col.type}, expected a list of floats")
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        if flat.size != table.num_rows * dim:
            raise ValueError(
                f"{path}: column {name!r} has {flat.size} values for {table.num_rows} rows; "
                f"info.json says width {dim}"
            )
        return flat.reshape(table.num_rows, dim)

    def _decode(self, blob: bytes, ours: str, slot: int) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(blob)) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:  # PIL raises several types for corrupt data
            path = self._file(self.episode_indices[slot])
            raise ValueError(
                f"{path}: column {self.keys[ours]!r} holds an undecodable image"
            ) from e
