"""Read a LeRobot dataset (ours, a real LIBERO one such as openpi's
`physical-intelligence/libero`, or one LeRobot >= 0.4 wrote) frame by frame, with openpi's
LIBERO observation keys and an action chunk per frame.

Versions: v2.0 / v2.1 (`envs/lerobot_layout.py`) and v3.0 (`envs/lerobot_v3.py`); cameras as
images in the parquet files (dtype "image") or as mp4 video features (dtype "video", decoded
with PyAV in `envs/lerobot_video.py`).
Feature names: LIBERO's conversion uses `image`, `wrist_image`, `state`, `actions`; LeRobot's
own datasets use `observation.images.image`, `observation.state`, `action`. Both are accepted.
The action chunk is the next `action_horizon` actions of the same episode, padded past the end
by repeating the last one (what LeRobot's delta_timestamps loading gives openpi).
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from envs.lerobot_layout import V2_VERSIONS, EpisodeRef, Layout, read_v2_layout
from envs.lerobot_v3 import V3_VERSIONS, read_table_columns, read_v3_layout
from envs.lerobot_video import TOLERANCE_S, decode_frames

# Our key -> candidate LeRobot feature names, first match wins.
FEATURE_ALIASES: dict[str, tuple[str, ...]] = {
    "image": ("image", "observation.images.image", "observation.image"),
    "wrist_image": ("wrist_image", "observation.images.wrist_image", "observation.wrist_image"),
    "state": ("state", "observation.state"),
    "actions": ("actions", "action"),
}
SUPPORTED_VERSIONS = V2_VERSIONS + V3_VERSIONS
CAMERAS = ("image", "wrist_image")


def dataset_init_spread(root: str | Path) -> float | None:
    """The `init_spread` our collector recorded (meta/expert_stats.json), None otherwise.

    Rollouts that evaluate a policy trained on this dataset draw initial states the same way.
    """
    path = Path(root) / "meta" / "expert_stats.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("init_spread")
    return None if value is None else float(value)


# One camera's frames of an episode: PNG bytes per frame (parquet images, decoded on access)
# or the decoded frames of a video feature, uint8 [T, H, W, 3].
Frames = list[bytes] | np.ndarray


@dataclass
class _Episode:
    """One episode's columns, decoded except for parquet images (decoded per frame)."""

    cameras: dict[str, Frames]  # our camera key ("image", "wrist_image") -> frames
    states: np.ndarray  # [T, state_dim] float32
    actions: np.ndarray  # [T, action_dim] float32
    task_index: np.ndarray  # [T] int64


def _check_horizon(action_horizon: Any) -> None:
    if isinstance(action_horizon, bool) or not isinstance(action_horizon, int):
        raise TypeError(f"action_horizon: expected an int >= 1, got {action_horizon!r}")
    if action_horizon < 1:
        raise ValueError(f"action_horizon: expected an int >= 1, got {action_horizon!r}")


def _read_info(root: Path) -> tuple[dict[str, Any], Path]:
    """meta/info.json, checked for a `features` mapping and a supported codebase_version."""
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"LeRobot dataset: missing {info_path} (root={root})")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{info_path}: not valid JSON ({e})") from e
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise ValueError(f"{info_path}: has no 'features' mapping")
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"{info_path}: codebase_version {version!r} is not supported; this reader reads "
            f"LeRobot datasets of codebase_version {', '.join(SUPPORTED_VERSIONS)}"
        )
    return info, info_path


def _width(feats: dict[str, Any], name: str, info_path: Path) -> int:
    shape = feats[name].get("shape")
    if not isinstance(shape, list | tuple) or not shape:
        raise ValueError(f"{info_path}: feature {name!r} has shape {shape!r}, expected a list")
    return int(np.prod(shape))


def _video_cameras(info: dict[str, Any], keys: dict[str, str], info_path: Path) -> tuple[str, ...]:
    """Our cameras stored as video features; the others must be parquet images."""
    videos = []
    for ours in CAMERAS:
        name = keys[ours]
        dtype = info["features"][name].get("dtype")
        if dtype == "video":
            if not isinstance(info.get("video_path"), str):
                raise ValueError(
                    f"{info_path}: feature {name!r} has dtype 'video' but video_path is "
                    f"{info.get('video_path')!r}; expected a path template"
                )
            fps = info.get("fps")
            if isinstance(fps, bool) or not isinstance(fps, int | float) or fps <= 0:
                raise ValueError(f"{info_path}: fps is {fps!r}; video features need fps > 0")
            videos.append(ours)
        elif dtype != "image":
            raise ValueError(
                f"{info_path}: feature {name!r} has dtype {dtype!r}; expected 'image' "
                "(images in the parquet files) or 'video'"
            )
    return tuple(videos)


def _read_layout(root: Path, info: dict[str, Any], info_path: Path, videos: list[str]) -> Layout:
    if info["codebase_version"] in V3_VERSIONS:
        return read_v3_layout(root, info, info_path, videos)
    return read_v2_layout(root, info, info_path, videos)


def _check_rows(num_rows: int, ref: EpisodeRef, path: Path) -> None:
    if num_rows != ref.length:
        of = f" of episode {ref.index}" if ref.shared_file else ""
        raise ValueError(f"{path}: has {num_rows} rows{of}, {ref.listed_in} says {ref.length}")


class LeRobotDataset:
    """Random access to frames: `len()` is the number of frames, `ds[i]` a dict with
    `observation/image`, `observation/wrist_image` (uint8 HxWx3), `observation/state`
    (float32), `actions` (float32 [action_horizon, action_dim]) and `prompt` (str).

    Episodes are loaded whole and the last `cache_episodes` kept: parquet images stay PNG
    bytes, a video feature's frames are decoded once per load (frame i of an episode is the
    frame at from_timestamp + i / fps, within `tolerance_s`)."""

    def __init__(
        self,
        root: str | Path,
        action_horizon: int,
        cache_episodes: int = 16,
        tolerance_s: float = TOLERANCE_S,
    ):
        _check_horizon(action_horizon)
        self.root = Path(root)
        self.action_horizon = action_horizon
        self.info, info_path = _read_info(self.root)
        self.version = str(self.info["codebase_version"])
        feats = self.info["features"]
        self.keys = {ours: self._resolve(ours, feats, info_path) for ours in FEATURE_ALIASES}
        self.video_cameras = _video_cameras(self.info, self.keys, info_path)
        self.state_dim = _width(feats, self.keys["state"], info_path)
        self.action_dim = _width(feats, self.keys["actions"], info_path)
        self.fps = self.info.get("fps")
        self.tolerance_s = float(tolerance_s)
        videos = [self.keys[c] for c in self.video_cameras]
        layout = _read_layout(self.root, self.info, info_path, videos)
        self.tasks = layout.tasks
        self.tasks_file = layout.tasks_file
        self.episodes = layout.episodes
        self.episode_indices = [e.index for e in self.episodes]
        self.episode_lengths = [e.length for e in self.episodes]
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
            raise KeyError(f"{self.tasks_file}: no task_index {task_index}")
        return {
            "observation/image": self._camera(ep, "image", frame, slot),
            "observation/wrist_image": self._camera(ep, "wrist_image", frame, slot),
            "observation/state": ep.states[frame],
            "actions": chunk,
            "prompt": self.tasks[task_index],
        }

    def episode_of(self, i: int) -> tuple[int, int]:
        """(episode_index, frame_index) of global frame i."""
        slot = bisect.bisect_right(self._starts, i) - 1
        return self.episode_indices[slot], i - self._starts[slot]

    def column(self, ours: str) -> np.ndarray:
        """Our vector feature ("state" | "actions") of every frame in dataset order:
        [len(self), D] float32, read from the parquet files alone (no image or video decoding)."""
        dims = {"state": self.state_dim, "actions": self.action_dim}
        if ours not in dims:
            raise ValueError(f"feature: expected one of {sorted(dims)}, got {ours!r}")
        parts = []
        # v3.0 files hold consecutive episodes: read each file once
        for path, group in itertools.groupby(self.episodes, key=lambda e: e.data_file):
            refs = list(group)
            table = self._read(refs[0], [self.keys[ours]])
            values = self._vector_column(table, ours, dims[ours], path)
            if not refs[0].shared_file:
                _check_rows(len(values), refs[0], path)
                parts.append(values)
                continue
            owner = table.column("episode_index").to_numpy()
            for ref in refs:
                rows = values[owner == ref.index]
                _check_rows(len(rows), ref, path)
                parts.append(rows)
        return np.concatenate(parts)

    # --- loading ----------------------------------------------------------------------------------
    def _episode(self, slot: int) -> _Episode:
        if slot in self._cache:
            self._cache.move_to_end(slot)
            return self._cache[slot]
        ep = self._load(slot)
        self._cache[slot] = ep
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ep

    def _read(self, ref: EpisodeRef, columns: list[str], only_episode: bool = False) -> pa.Table:
        """`columns` of the episode's data file (plus episode_index where the file is shared);
        with only_episode, just the episode's rows (v3.0 writes a row group per episode, so
        the filter skips the others' rows)."""
        if ref.shared_file:
            columns = [*columns, "episode_index"]
        filters = [("episode_index", "==", ref.index)] if only_episode and ref.shared_file else None
        return read_table_columns(ref.data_file, columns, f"episode {ref.index} data", filters)

    def _load(self, slot: int) -> _Episode:
        ref = self.episodes[slot]
        images = [c for c in CAMERAS if c not in self.video_cameras]
        columns = [self.keys[k] for k in (*images, "state", "actions")] + ["task_index"]
        table = self._read(ref, columns, only_episode=True)
        _check_rows(table.num_rows, ref, ref.data_file)
        cameras: dict[str, Frames] = {
            c: self._image_column(table, c, ref.data_file) for c in images
        }
        for ours in self.video_cameras:
            video = ref.videos[self.keys[ours]]
            # LeRobot queries a frame at its timestamp (frame_index / fps) + from_timestamp
            # (lerobot/datasets/dataset_reader.py `_query_videos`)
            times = video.from_timestamp + np.arange(ref.length) / float(self.fps)
            cameras[ours] = decode_frames(video.path, times, self.tolerance_s)
        return _Episode(
            cameras=cameras,
            states=self._vector_column(table, "state", self.state_dim, ref.data_file),
            actions=self._vector_column(table, "actions", self.action_dim, ref.data_file),
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

    def _camera(self, ep: _Episode, ours: str, frame: int, slot: int) -> np.ndarray:
        frames = ep.cameras[ours]
        if isinstance(frames, np.ndarray):  # a decoded video feature
            return frames[frame]
        return self._decode(frames[frame], ours, slot)

    def _decode(self, blob: bytes, ours: str, slot: int) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(blob)) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:  # PIL raises several types for corrupt data
            path = self.episodes[slot].data_file
            raise ValueError(
                f"{path}: column {self.keys[ours]!r} holds an undecodable image"
            ) from e
