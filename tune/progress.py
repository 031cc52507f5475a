"""One line per finished trial, with the search's rate and ETA (`prunepi tune` progress).

Ray Tune's own status table (verbose=1) redraws every few seconds and says nothing of how
long the search has left; this callback prints once per trial, on the driver.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from prunepi.progress import Progress, say


def _interval(result: dict[str, Any]) -> str:
    """` [0.21, 0.94] n=3`: the rate's 95 % Wilson interval (tune/trial.py), when reported."""
    lo, hi = result.get("success_ci95_low"), result.get("success_ci95_high")
    if lo is None or hi is None:
        return ""
    return f" [{lo:.2f}, {hi:.2f}] n={result.get('episodes')}"


class TrialProgress(Callback):
    """Counts completed and errored trials against `total` (a Tune `Callback` hook set)."""

    def __init__(self, total: int):
        self.progress = Progress(total, "trials")
        self.done = 0

    def _line(self, trial: Any, outcome: str) -> str:
        self.done += 1
        result = trial.last_result or {}
        metrics = "  ".join(
            f"{k} {result[k]:.3g}{_interval(result) if k == 'success_rate' else ''}"
            for k in ("success_rate", "kept_tokens_mean", "score")
            if isinstance(result.get(k), int | float)
        )
        return f"[tune] {self.progress.line(self.done)}  {trial.trial_id} {outcome}  {metrics}"

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        say(self._line(trial, "done"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info) -> None:
        say(self._line(trial, "errored"))
