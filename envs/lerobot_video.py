"""Frames of a LeRobot video feature at given timestamps, decoded with PyAV (LeRobot's `pyav`
backend, `decode_video_frames_pyav` in lerobot/datasets/video_utils.py).

As there: seek to the keyframe at or before the first timestamp, decode forward until the last
one is covered, and give each query the decoded frame nearest in presentation time, which must
be within `tolerance_s` (LeRobot's default 1e-4 s). A v3.0 file holds many episodes one after
another, so the queries are an episode's own timestamps shifted by its `from_timestamp`.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

TOLERANCE_S = 1e-4  # LeRobotDataset's tolerance_s default (lerobot/datasets/lerobot_dataset.py)


def _decode_span(
    path: Path, first: float, last: float, tolerance_s: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Decoded presentation times [M] (seconds) and RGB frames (uint8 HxWx3) covering
    [first - tolerance_s, last], in presentation order."""
    times: list[float] = []
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        # seek() with a stream takes its time_base units; backward=True lands on a keyframe
        # at or before the target (one tick early, as LeRobot does, against rounding).
        container.seek(
            max(0, round(first / stream.time_base) - 1),
            backward=True,
            any_frame=False,
            stream=stream,
        )
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            if t >= first - tolerance_s:  # frames of an earlier episode in the file are dropped
                times.append(t)
                frames.append(frame.to_ndarray(format="rgb24"))
            if t >= last:
                break
    return np.asarray(times, dtype=np.float64), frames


def decode_frames(
    path: Path, timestamps: np.ndarray, tolerance_s: float = TOLERANCE_S
) -> np.ndarray:
    """uint8 [N, H, W, 3]: the frame of video file `path` at each of `timestamps` ([N] seconds
    into the file, N >= 1)."""
    if not path.is_file():
        raise FileNotFoundError(f"LeRobot dataset: video file {path} is missing")
    query = np.asarray(timestamps, dtype=np.float64)
    try:
        times, frames = _decode_span(path, float(query.min()), float(query.max()), tolerance_s)
    except av.error.FFmpegError as e:
        raise ValueError(f"{path}: cannot decode video ({e})") from e
    if not frames:
        raise ValueError(
            f"{path}: no frames decoded in [{query.min():.4f}, {query.max():.4f}] s "
            "(from_timestamp past the end of the file?)"
        )
    # nearest decoded frame: the neighbour just below or at searchsorted's insertion point
    right = np.clip(np.searchsorted(times, query), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    nearest = np.where(np.abs(times[left] - query) <= np.abs(times[right] - query), left, right)
    error = np.abs(times[nearest] - query)
    if np.any(error > tolerance_s):
        k = int(np.argmax(error > tolerance_s))
        raise ValueError(
            f"{path}: no frame within tolerance_s={tolerance_s} of t={query[k]:.4f} s (nearest "
            f"{times[nearest[k]]:.4f} s; decoded {times[0]:.4f}..{times[-1]:.4f} s)"
        )
    return np.stack([frames[j] for j in nearest])
