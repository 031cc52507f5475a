"""curve.png: success with its 95 % interval against kept tokens, one line per selector;
the overall panel first, then one per task; the unpruned interval drawn as a band."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from services.curve.config import UNPRUNED


def _yerr(rows: list[dict[str, Any]]) -> list[list[float]]:
    """matplotlib's asymmetric error bars [[below...], [above...]] from the intervals."""
    return [
        [r["success_rate"] - r["ci95"][0] for r in rows],
        [r["ci95"][1] - r["success_rate"] for r in rows],
    ]


def _panel(ax, points: list[dict[str, Any]], pick, title: str) -> None:
    """One axes: `pick(point)` is the row (overall or a task's) to draw of each point."""
    ref = next((p for p in points if p["selector"] == UNPRUNED), None)
    if ref is not None:
        r = pick(ref)
        ax.axhspan(r["ci95"][0], r["ci95"][1], color="0.85", zorder=0, label="unpruned 95 % CI")
        ax.axhline(r["success_rate"], color="0.5", lw=1, zorder=1)
        ax.plot([r["kept_tokens_mean"]], [r["success_rate"]], "k*", ms=9, label=UNPRUNED)
    selectors = list(dict.fromkeys(p["selector"] for p in points if p["selector"] != UNPRUNED))
    for i, sel in enumerate(selectors):
        rows = sorted((pick(p) for p in points if p["selector"] == sel), key=_kept)
        xs, ys = [r["kept_tokens_mean"] for r in rows], [r["success_rate"] for r in rows]
        ax.errorbar(
            xs, ys, _yerr(rows), fmt="o-", color=f"C{i}", capsize=3, elinewidth=1, label=sel
        )
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title[:60], fontsize=9)
    ax.set_xlabel("kept visual tokens (mean per query)")
    ax.set_ylabel("success rate")
    ax.grid(True, alpha=0.3)


def _kept(r: dict[str, Any]) -> float:
    return r["kept_tokens_mean"]


def plot_curve(points: list[dict[str, Any]], tasks: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 1 + len(tasks)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    flat = axes.ravel()
    _panel(flat[0], points, lambda p: p, f"all tasks ({points[0]['episodes']} episodes/point)")
    for ax, task in zip(flat[1:], tasks):
        _panel(ax, points, lambda p, t=task: p["tasks"][t], task)
    for ax in flat[n:]:
        ax.set_visible(False)
    flat[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
