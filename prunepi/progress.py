"""Progress lines for long work (train, rollout, tune): done/total, rate and ETA, one line each.

A plain line, not a redrawn bar: these lines travel through Ray's log forwarding from workers
to the driver, and into log files, where a carriage-return bar turns into noise.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


def format_duration(seconds: float) -> str:
    """`1h02m`, `4m05s`, `37s` (ETA and elapsed time in progress lines)."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


@dataclass
class Progress:
    """Counts `done` of `total` units from `start` (time.monotonic) and formats a line.

    The rate is over the units done since `start` (and since `done0`, the units already done
    when this process started, e.g. a resumed run's first step), so a resumed run's ETA does
    not count the steps it did not do.
    """

    total: int
    unit: str
    done0: int = 0
    start: float = field(default_factory=time.monotonic)

    def rate(self, done: int, now: float | None = None) -> float:
        elapsed = (time.monotonic() if now is None else now) - self.start
        return (done - self.done0) / elapsed if elapsed > 0 else 0.0

    def line(self, done: int, now: float | None = None) -> str:
        """`12/40 episodes  0.85 episodes/s  elapsed 14s  ETA 33s`."""
        now = time.monotonic() if now is None else now
        r = self.rate(done, now)
        left = self.total - done
        eta = format_duration(left / r) if r > 0 else "?"
        rate = f"{r:.2f}" if r < 10 else f"{r:.0f}"
        return (
            f"{done}/{self.total} {self.unit}  {rate} {self.unit}/s  "
            f"elapsed {format_duration(now - self.start)}  ETA {eta}"
        )


def say(line: str) -> None:
    """Write one line to stdout, once.

    Inside a Ray Train worker `print` is patched (ray/train/v2/_internal/logging/
    patch_print.py) to log every message through the root logger AND tee it to the original
    print whenever sys.stdout is wrapped, which it is in a Ray worker: every printed progress
    line reached the driver twice. Writing to the stream sidesteps the patch.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
