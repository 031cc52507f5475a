"""Write rollout frames to a video file (`prunepi rollout --video`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from envs.scene import CONTROL_HZ


def _check_frames(frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    if len(frames) == 0:
        raise ValueError("frames: need at least one frame")
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [T, H, W, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames: expected dtype uint8, got {arr.dtype}")
    return arr


def write_video(
    frames: Sequence[np.ndarray] | np.ndarray, path: str | Path, fps: int = CONTROL_HZ
) -> Path:
    """Write uint8 HxWx3 frames as .mp4 (H.264 through imageio-ffmpeg) or .gif, chosen by the
    file extension. Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"path: extension must be .mp4 or .gif, got {path.name!r}")
    arr = _check_frames(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    import imageio.v2 as imageio

    if suffix == ".mp4":
        # H.264 with yuv420p needs even sizes: pad by edge replication rather than resize.
        pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
        if pad_h or pad_w:
            arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        with imageio.get_writer(
            path, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1, quality=7
        ) as writer:
            for frame in arr:
                writer.append_data(frame)
    else:
        imageio.mimsave(path, list(arr), format="GIF", duration=1000.0 / fps, loop=0)
    return path
