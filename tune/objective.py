"""Objectives: success rate up, kept tokens down.

The searcher (Optuna's multi-objective TPE) optimises the two objectives jointly. Early
stopping (ASHA) and PBT need one number; for them we scalarise, documented here:

    score = success_rate - kept_weight * kept_ratio,   kept_ratio = kept / total patches

With the default kept_weight = 0.25, keeping every patch costs as much as 25 points of
success: a setting that drops 80% of the tokens may lose up to 20 points and still tie.
"""

from __future__ import annotations

from typing import Any


def scalarize(metrics: dict[str, Any], kept_weight: float) -> float:
    return float(metrics["success_rate"]) - kept_weight * float(metrics["kept_ratio"])


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows not dominated in (success_rate max, kept_tokens_mean min), by kept tokens."""

    def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
        ge = (
            a["success_rate"] >= b["success_rate"]
            and a["kept_tokens_mean"] <= b["kept_tokens_mean"]
        )
        gt = a["success_rate"] > b["success_rate"] or a["kept_tokens_mean"] < b["kept_tokens_mean"]
        return ge and gt

    front = [r for r in rows if not any(dominates(o, r) for o in rows if o is not r)]
    return sorted(front, key=lambda r: r["kept_tokens_mean"])
