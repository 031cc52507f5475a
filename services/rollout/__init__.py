"""Closed-loop rollouts on Ray actors against a served or in-process policy (driver.py)."""

from services.rollout.config import RolloutConfig
from services.rollout.driver import run_rollout

__all__ = ["RolloutConfig", "run_rollout"]
