"""Process-wide environment defaults that keep Ray on loopback and wandb offline.

Imported by every entry point before Ray, MuJoCo or wandb are imported (DEVELOPERS.md
machine facts): Ray binds the machine's eth0 address unless told otherwise, and the
default health-check interval makes every Train report wait 2 s.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MUJOCO_GL": "egl",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",
}

RAY_OBJECT_STORE_BYTES = 512 * 1024**2
# Loggers too chatty for a terminal, and the level they are held to in every Ray worker:
# Train v2's PlacementGroupCleaner polls the State API, which `include_dashboard=False` leaves
# out, so it warns every few seconds that the API is unavailable; Train's worker context logs
# every report (all metrics, one line per rank per step) at INFO on a logger named by its
# *file path*, which Train's own `LoggingConfig(log_level=...)` filter does not catch. Our own
# loggers are untouched.
QUIET_LOGGERS = {
    "ray.train.v2._internal.execution.controller.placement_group_cleaner": "ERROR",
    "<ray>/train/v2/_internal/execution/context.py": "WARNING",
}


def quiet_ray_logs() -> None:
    """Ray `worker_process_setup_hook`: hold QUIET_LOGGERS to their levels in each worker."""
    import logging

    import ray

    ray_dir = os.path.dirname(ray.__file__)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name.replace("<ray>", ray_dir)).setLevel(level)


def apply_defaults() -> None:
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)


def init_local_ray(num_cpus: int = 2) -> bool:
    """Start an embedded local Ray on 127.0.0.1 unless one is already connected.

    Returns True when this call started Ray (the caller then owns its shutdown).
    """
    apply_defaults()
    import ray

    if ray.is_initialized():
        return False
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        object_store_memory=RAY_OBJECT_STORE_BYTES,
        _node_ip_address="127.0.0.1",
        log_to_driver=True,
        configure_logging=False,
        runtime_env={"worker_process_setup_hook": "prunepi.env.quiet_ray_logs"},
    )
    return True


apply_defaults()
