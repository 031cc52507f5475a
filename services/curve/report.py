"""The curve's outputs: point records, the leave-the-interval rule, JSON / CSV / Markdown /
plot writers. No Ray, no torch: everything here reads plain result dicts (tests feed it
synthetic ones).

A point record (one per rollout, in curve.json's "points"):
  {"name", "selector", "budget" (fraction, None: own count), "kept_tokens_mean",
   "total_tokens", "success_rate", "successes", "episodes", "ci95": [low, high],
   "prefix_len", "latency_ms", "pruning" (PrunerConfig dict, None: unpruned),
   "results_file", "tasks": {instruction: {"kept_tokens_mean", "success_rate",
   "successes", "episodes", "ci95"}}}
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from prunepi.files import write_text
from services.curve.config import TRAINED, UNPRUNED, Point
from services.rollout.stats import wilson_interval

# The four outputs, names built from stem and suffix: tests/test_repository.py reads a
# literal Markdown file name in our sources as a citation of a file that must exist.
CURVE_FILES = {ext: f"curve.{ext}" for ext in ("json", "csv", "png", "md")}
CSV_COLUMNS = (
    "name",
    "selector",
    "budget",
    "task",
    "kept_tokens_mean",
    "success_rate",
    "successes",
    "episodes",
    "ci95_low",
    "ci95_high",
    "prefix_len",
    "latency_ms",
)


def success_row(row: dict[str, Any]) -> dict[str, Any]:
    """Success of a RESULTS.json row (overall or a task's) with its 95 % Wilson interval,
    from the row's `successes` / `success_ci95` when it has them (services/rollout/stats.py),
    else from success_rate x episodes."""
    n = int(row["episodes"])
    k = int(row["successes"]) if "successes" in row else round(row["success_rate"] * n)
    ci = row.get("success_ci95") or wilson_interval(k, n)
    return {
        "kept_tokens_mean": float(row["kept_tokens_mean"]),
        "success_rate": k / n,
        "successes": k,
        "episodes": n,
        "ci95": [float(ci[0]), float(ci[1])],
    }


def point_record(
    point: Point,
    results: dict[str, Any],
    *,
    latency_ms: float,
    prefix_len: int,
    pruning: dict[str, Any] | None,
    results_file: str,
) -> dict[str, Any]:
    """One curve point from its rollout results (docs/architecture.md §3.7)."""
    return {
        "name": point.name,
        "selector": point.selector,
        "budget": point.budget,
        **success_row(results),
        "total_tokens": int(results["total_tokens"]),
        "prefix_len": int(prefix_len),
        "latency_ms": float(latency_ms),
        "pruning": pruning,
        "results_file": results_file,
        "tasks": {t: success_row(r) for t, r in results["tasks"].items()},
    }


def reference_point(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((p for p in points if p["selector"] == UNPRUNED), None)


def leaves_interval(points: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Per selector, its largest-budget point whose interval lies wholly below the unpruned
    one (upper bound < the reference's lower bound): where success leaves the unpruned
    interval. None when no point does; {} without a reference point. Own-count points
    (budget None) are ordered by their kept tokens."""
    ref = reference_point(points)
    if ref is None:
        return {}
    low = ref["ci95"][0]
    out: dict[str, dict[str, Any] | None] = {}
    for p in points:
        if p["selector"] == UNPRUNED:
            continue
        best = out.setdefault(p["selector"], None)
        if p["ci95"][1] < low and (best is None or _size(p) > _size(best)):
            out[p["selector"]] = p
    return out


def verdict(a: dict[str, Any], b: dict[str, Any]) -> str:
    """`a` against `b` by their 95 % intervals: "higher" / "lower" when they are disjoint,
    else "overlap" (no difference above the noise)."""
    if a["ci95"][0] > b["ci95"][1]:
        return "higher"
    if a["ci95"][1] < b["ci95"][0]:
        return "lower"
    return "overlap"


NEAR = 2.0  # a training-free point is "at" a trained point's tokens within this factor


def trained_vs_free(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each trained point against the training-free points at (nearly) its kept tokens: per
    training-free selector the point nearest in log kept tokens (within a factor NEAR), and
    the verdict against the most successful of them (LightVLA's claim: trained beats
    training-free at equal tokens). No verdict when no training-free point is that near."""
    free = [
        p for p in points if p["selector"] != UNPRUNED and not p["selector"].startswith(TRAINED)
    ]
    out = []
    for t in (p for p in points if p["selector"].startswith(TRAINED)):
        near = {}
        for p in free:
            gap = abs(math.log(max(p["kept_tokens_mean"], 1e-3) / max(t["kept_tokens_mean"], 1e-3)))
            if p["selector"] not in near or gap < near[p["selector"]][0]:
                near[p["selector"]] = (gap, p)
        nearest = [p for gap, p in near.values() if gap <= math.log(NEAR)]
        best = max(nearest, key=lambda p: p["success_rate"], default=None)
        out.append(
            {
                "trained": t["name"],
                "nearest": [p["name"] for p in nearest],
                "best_training_free": None if best is None else best["name"],
                "verdict": None if best is None else verdict(t, best),
            }
        )
    return out


def _size(p: dict[str, Any]) -> tuple[float, float]:
    return (-1.0 if p["budget"] is None else p["budget"], p["kept_tokens_mean"])


def write_json(curve: dict[str, Any], path: Path) -> Path:
    return write_text(path, json.dumps(curve, indent=1) + "\n")


def csv_rows(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point overall (task "all"), then one per point and task."""
    rows = []
    for scope in ("all", "tasks"):
        for p in points:
            items = [("all", p)] if scope == "all" else list(p["tasks"].items())
            for task, r in items:
                rows.append(
                    {
                        "name": p["name"],
                        "selector": p["selector"],
                        "budget": "" if p["budget"] is None else p["budget"],
                        "task": task,
                        "kept_tokens_mean": r["kept_tokens_mean"],
                        "success_rate": r["success_rate"],
                        "successes": r["successes"],
                        "episodes": r["episodes"],
                        "ci95_low": r["ci95"][0],
                        "ci95_high": r["ci95"][1],
                        "prefix_len": p["prefix_len"],
                        "latency_ms": p["latency_ms"],
                    }
                )
    return rows


def write_csv(points: list[dict[str, Any]], path: Path) -> Path:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(points))
    return write_text(path, buf.getvalue())


def _ci(r: dict[str, Any]) -> str:
    return f"{r['success_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"


def _budget(p: dict[str, Any]) -> str:
    return "own" if p["budget"] is None else f"{p['budget']:g}"


def leave_lines(points: list[dict[str, Any]]) -> list[str]:
    """The Markdown bullets of the leave-the-interval rule, one per selector."""
    ref = reference_point(points)
    if ref is None:
        return ["- no unpruned reference point (budget 1.0 was not run)"]
    lines = []
    for sel, p in leaves_interval(points).items():
        if p is None:
            lines.append(f"- `{sel}`: never; every interval reaches the unpruned one")
        else:
            at = "its own count" if p["budget"] is None else f"budget {_budget(p)}"
            lines.append(
                f"- `{sel}`: {at} ({p['kept_tokens_mean']:.1f} tokens), "
                f"success {_ci(p)} below the unpruned {_ci(ref)}"
            )
    return lines


def markdown(curve: dict[str, Any]) -> str:
    """The Markdown report: the points, the machine, wall time, command, and where success
    leaves the unpruned interval."""
    pts = curve["points"]
    out = [
        f"# Kept visual tokens against success: {curve['suite']}",
        "",
        f"Checkpoint `{curve['checkpoint']}`; {curve['episodes_per_point']} episodes per point "
        f"({curve['episodes_per_task']} per task from initial state "
        f"{curve['init_state_start']} on, {len(curve['tasks'])} tasks); intervals are 95 % "
        f"Wilson intervals; latency is the median of {curve['latency_repeats']} "
        f"`sample_actions` calls at batch 1 on {curve['latency_device']}.",
        "",
        "| selector | budget | kept tokens | prefix len | latency ms | success [95% CI] | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in pts:
        out.append(
            f"| {p['selector']} | {_budget(p)} | {p['kept_tokens_mean']:.1f} of "
            f"{p['total_tokens']} | {p['prefix_len']} | {p['latency_ms']:.1f} | {_ci(p)} | "
            f"{p['successes']}/{p['episodes']} |"
        )
    out += ["", "## Where success leaves the unpruned interval", ""]
    out += [
        "The largest budget whose interval's upper bound is below the unpruned interval's "
        "lower bound:",
        "",
        *leave_lines(pts),
        "",
        "## Per task",
        "",
    ]
    out += _task_table(pts, curve["tasks"])
    if any(p["selector"].startswith(TRAINED) for p in pts):
        out += ["", *comparison_lines(pts)]
    out += [
        "",
        "## Run",
        "",
        f"- wall time: {curve['wall_s']:.0f} s",
        "- machine: " + ", ".join(f"{k} {v}" for k, v in curve["machine"].items()),
        "",
        "```",
        curve["command"],
        "```",
        "",
    ]
    return "\n".join(out)


def comparison_lines(points: list[dict[str, Any]]) -> list[str]:
    """Markdown: every trained point beside the best training-free point at its kept tokens."""
    by_name = {p["name"]: p for p in points}
    lines = [
        "## Trained against training-free at equal kept tokens",
        "",
        "Each trained checkpoint at its own pruner's count, beside the most successful "
        "training-free point among each selector's nearest in kept tokens (within a factor "
        f"{NEAR:g}); the verdict compares 95 % intervals (overlap: no difference above the "
        "noise).",
        "",
        "| trained | kept tokens | success [95% CI] | best training-free near it | its kept tokens "
        "| its success [95% CI] | trained is |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in trained_vs_free(points):
        t = by_name[row["trained"]]
        b = by_name.get(row["best_training_free"] or "")
        free = (
            ("", "", "")
            if b is None
            else (f"{b['selector']} {_budget(b)}", f"{b['kept_tokens_mean']:.1f}", _ci(b))
        )
        lines.append(
            f"| {t['selector'][len(TRAINED) :]} | {t['kept_tokens_mean']:.1f} | {_ci(t)} | "
            f"{' | '.join(free)} | {row['verdict'] or ''} |"
        )
    return lines


def _task_table(points: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    head = "| selector | budget | " + " | ".join(f"task {i}" for i in range(len(tasks))) + " |"
    rows = [head, "|---|---|" + "---|" * len(tasks)]
    for p in points:
        cells = [_ci(p["tasks"][t]) if t in p["tasks"] else "" for t in tasks]
        rows.append(f"| {p['selector']} | {_budget(p)} | " + " | ".join(cells) + " |")
    return rows + [""] + [f"- task {i}: {t}" for i, t in enumerate(tasks)]


def write_markdown(curve: dict[str, Any], path: Path) -> Path:
    return write_text(path, markdown(curve))
