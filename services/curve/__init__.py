"""Kept visual tokens against closed-loop success, one rollout per (selector, budget) point
(`prunepi curve`, driver.py)."""

from services.curve.config import CurveConfig
from services.curve.driver import run_curve

__all__ = ["CurveConfig", "run_curve"]
