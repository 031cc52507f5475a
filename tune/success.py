"""A trial row's success with its uncertainty, for the tune outputs (table, plot, report).

Rows carry `success_rate`, `successes`, `episodes` and the 95 % Wilson interval as
`success_ci95_low` / `success_ci95_high` (tune/trial.py `success_metrics`, from the rollout's
RESULTS.json, docs/architecture.md §3.7).
"""

from __future__ import annotations

from typing import Any


def success_yerr(rows: list[dict[str, Any]]) -> list[list[float]]:
    """matplotlib's asymmetric error bars [[below...], [above...]] from each row's interval
    (0 where a row has none: one restored from a search made before intervals existed)."""
    below, above = [], []
    for r in rows:
        lo, hi = r.get("success_ci95_low"), r.get("success_ci95_high")
        rate = r["success_rate"]
        below.append(0.0 if lo is None else rate - lo)
        above.append(0.0 if hi is None else hi - rate)
    return [below, above]


def success_text(row: dict[str, Any]) -> str:
    """`0.67 [0.21, 0.94] n=3` (the rate alone for a row without an interval)."""
    lo, hi = row.get("success_ci95_low"), row.get("success_ci95_high")
    if lo is None or hi is None:
        return f"{row['success_rate']:.2f}"
    return f"{row['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] n={row['episodes']}"
