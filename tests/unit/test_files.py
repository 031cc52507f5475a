"""prunepi/files.py: the one atomic write (umask honoured, nothing half-written)."""

from __future__ import annotations

import os

import pytest

from prunepi.files import write_text, write_with


def test_write_text_honours_the_umask_and_keeps_line_ends(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_text(tmp_path / "sub" / "a.csv", "x,y\r\n1,2\r\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"x,y\r\n1,2\r\n"
    assert os.stat(path).st_mode & 0o777 == 0o640  # 0666 less the umask, not mkstemp's 0600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = write_text(tmp_path / "r.json", "old")

    def fail(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(path, fail)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
