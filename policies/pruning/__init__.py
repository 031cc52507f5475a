"""LightVLA-style visual-token pruner for π0.5 (tensor code; knows nothing of the model).

    from policies.pruning import PrunerConfig, TokenPruner
    pruner = TokenPruner(PrunerConfig(enabled=True), width=2048)
    r = pruner(patches, patch_valid, task, task_mask, step=step)  # PruneResult

Modules: config (PrunerConfig, NoiseScheduleConfig), schedule (make_schedule), scorers
(score functions and the collapse mechanism), selection (votes, budgets, slots),
telemetry (METRIC_NAMES), pruner (TokenPruner, PruneResult), synthetic (the collapse,
reproduced: `python -m policies.pruning.synthetic`), training_free (the "random" and
"grid" scorers and the curve's selectors).
"""

from policies.pruning.config import NoiseScheduleConfig, PrunerConfig
from policies.pruning.pruner import PruneResult, TokenPruner
from policies.pruning.schedule import NoiseSchedule, make_schedule
from policies.pruning.telemetry import METRIC_NAMES

__all__ = [
    "METRIC_NAMES",
    "NoiseSchedule",
    "NoiseScheduleConfig",
    "PruneResult",
    "PrunerConfig",
    "TokenPruner",
    "make_schedule",
]
