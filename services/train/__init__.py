"""Ray Train fine-tuning service for π0.5 with the token pruner.

    from services.train import TrainConfig, run_train
    run = run_train(TrainConfig(preset="tiny", data="DATA", out="RUN", steps=100, workers=2))

Files, one idea each: config (TrainConfig, TRAIN_PRESETS), data (LeRobot -> batches,
sharding, norm stats), lr (openpi schedule), ema, step (one optimizer step, Ray-free),
state (checkpoints + training state), metrics (jsonl, wandb, rank averaging), worker (the
per-worker loop Ray Train runs), driver (run_train), __main__ (`python -m services.train`).
"""

from services.train.config import TRAIN_PRESETS, TrainConfig, TrainPreset
from services.train.driver import run_train

__all__ = ["TRAIN_PRESETS", "TrainConfig", "TrainPreset", "run_train"]
