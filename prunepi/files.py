"""The one atomic file write: a temp file in the same folder, then `os.replace`.

A reader (a resuming run, a server loading a checkpoint, a plot of a curve still being
written) sees the old file or the new one, never half of one. mkstemp creates 0600 whatever
the umask; checkpoints and results are read by other processes and users of a cluster
(serving, evaluation), so the file gets the mode open() would have given it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def umask_mode(mode: int) -> int:
    """`mode` less the process umask: what open()/mkdir() would have given the file."""
    current = os.umask(0)
    os.umask(current)
    return mode & ~current


def write_with(path: str | Path, write: Callable[[str], None]) -> Path:
    """Atomically create `path` by calling `write(temp_path)`; -> path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, umask_mode(0o666))
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write `text` (no newline translation: a CSV keeps its own line ends)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            f.write(text)

    return write_with(path, write)
