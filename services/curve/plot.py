"""curve.png: success with its 95 % interval against kept tokens, one line per selector;
the overall panel first, then one per task; the unpruned interval drawn as a band."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

from services.curve.config import TRAINED, UNPRUNED


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
    free = [s for s in selectors if not s.startswith(TRAINED)]
    trained = [s for s in selectors if s.startswith(TRAINED)]
    for i, sel in enumerate(free):  # training-free: a line over budgets each
        _series(ax, points, pick, sel, "o-", f"C{i % 10}", sel)
    for i, sel in enumerate(trained):  # trained checkpoints: one marker each, own colour
        colour = matplotlib.colormaps["tab20"](i % 20)
        _series(ax, points, pick, sel, "D", colour, sel[len(TRAINED) :])
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title[:60], fontsize=9)
    ax.set_xlabel("kept visual tokens (mean per query)")
    ax.set_ylabel("success rate")
    ax.grid(True, alpha=0.3)


def _series(ax, points, pick, selector: str, fmt: str, colour, label: str) -> None:
    rows = sorted((pick(p) for p in points if p["selector"] == selector), key=_kept)
    xs, ys = [r["kept_tokens_mean"] for r in rows], [r["success_rate"] for r in rows]
    ax.errorbar(xs, ys, _yerr(rows), fmt=fmt, color=colour, capsize=3, elinewidth=1, label=label)


def _kept(r: dict[str, Any]) -> float:
    return r["kept_tokens_mean"]


def plot_curve(points: list[dict[str, Any]], tasks: list[str], path: Path) -> Path:
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
    if len(flat) > n:  # a spare panel holds the legend (a dozen trained points hide the data)
        flat[n].set_visible(True)
        flat[n].axis("off")
        flat[n].legend(*flat[0].get_legend_handles_labels(), fontsize=8, loc="center")
    else:
        flat[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
