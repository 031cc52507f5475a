from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from envs.video import write_video


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif"])
def test_write_video_round_trips(tmp_path, name):
    frames = np.zeros((6, 33, 40, 3), np.uint8)  # odd height: mp4 pads to even
    for t in range(6):  # distinct frames (a GIF writer merges identical ones)
        frames[t, :, : 5 * (t + 1)] = 200
    path = write_video(list(frames), tmp_path / "sub" / name, fps=10)
    assert path.is_file() and path.stat().st_size > 0
    back = iio.imread(path)
    assert back.shape[0] == 6 and back.shape[2] == 40 and back.shape[1] in (33, 34)


def test_write_video_rejects_bad_input(tmp_path):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="path: extension"):
        write_video(frames, tmp_path / "x.avi")
    with pytest.raises(ValueError, match="frames: expected dtype uint8"):
        write_video(frames.astype(np.float32), tmp_path / "x.gif")
    with pytest.raises(ValueError, match="frames: need at least one frame"):
        write_video([], tmp_path / "x.gif")
