"""Process-wide environment defaults that keep Ray on loopback and wandb offline.

Imported by every entry point before Ray, MuJoCo or wandb are imported (docs/architecture.md
§5): Ray binds the machine's eth0 address unless told otherwise, and the
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


# Every driver's job-level runtime env: Ray runs the hook in each worker process it starts for
# this job. Under `ray job submit` Ray merges it with the job's own runtime env (working_dir)
# instead of replacing either (ray-project/ray PR #39208, "Merge Driver/Job's runtime env").
RUNTIME_ENV = {"worker_process_setup_hook": "prunepi.env.quiet_ray_logs"}
LOCAL = "local"  # `address` value that always starts the embedded Ray, whatever RAY_ADDRESS says


def check_address(name: str, address: str | None) -> None:
    """Config validation of an `address` field (`name` is the qualified field name)."""
    if address is not None and (not address.strip() or address != address.strip()):
        raise ValueError(
            f"{name} must be None, 'local', 'auto', HOST:PORT or ray://HOST:PORT, got {address!r}"
        )


def cluster_address(address: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The Ray cluster a driver joins: `address` (a config's `--address`), else RAY_ADDRESS
    (`ray job submit` sets it for the job's driver; users export it), else None = start the
    embedded local Ray. "local" always means the embedded Ray."""
    environ = os.environ if environ is None else environ
    target = address if address is not None else (environ.get("RAY_ADDRESS") or None)
    return None if target == LOCAL else target


def ray_init_kwargs(address: str | None, num_cpus: int) -> dict:
    """`ray.init` arguments for joining `address`, or for the embedded Ray when it is None.

    Joining, Ray refuses num_cpus, object_store_memory and node options ("When connecting to
    an existing cluster, num_cpus and num_gpus must not be provided", ray/_private/worker.py),
    so only the logging options and the runtime env go with the address. The embedded Ray is
    started with address="local" so a stray RAY_ADDRESS cannot turn it into a join (ray.init
    reads RAY_ADDRESS when address is None or "auto", ray/_private/worker.py).
    """
    common = {"log_to_driver": True, "configure_logging": False, "runtime_env": dict(RUNTIME_ENV)}
    if address is not None:
        return {"address": address, **common}
    return {
        "address": LOCAL,
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "object_store_memory": RAY_OBJECT_STORE_BYTES,
        "_node_ip_address": "127.0.0.1",
        **common,
    }


def connect_ray(address: str | None = None, num_cpus: int = 2) -> bool:
    """Reuse the Ray this process is connected to, else join `address` / RAY_ADDRESS, else
    start an embedded Ray on 127.0.0.1 with `num_cpus` CPUs.

    Returns True when the caller owns the shutdown of this connection: `ray.shutdown()` then
    stops an embedded Ray, or only disconnects from a cluster, which lives on (ray.shutdown's
    docstring, ray/_private/worker.py). False when Ray was already initialized (the caller's
    caller, a Tune trial or a Ray worker owns it).
    """
    check_address("address", address)
    apply_defaults()
    import ray

    if ray.is_initialized():
        return False
    ray.init(**ray_init_kwargs(cluster_address(address), num_cpus))
    return True


def absolute_path(path: str | None) -> str | None:
    """`path` made absolute in the driver: Ray workers run in other folders (a `ray start`
    node's session dir, a job's working dir), where a relative path names another file."""
    return None if path is None else os.path.abspath(os.path.expanduser(path))


def init_local_ray(num_cpus: int = 2) -> bool:
    """Start an embedded local Ray on 127.0.0.1 unless one is already connected (tests,
    benchmarks); True when this call started it."""
    return connect_ray(LOCAL, num_cpus)


apply_defaults()


def set_torch_threads(num_cpus: float) -> int:
    """Intra-op torch threads for an actor or replica holding `num_cpus` Ray CPUs (at least
    one), set explicitly rather than left to what Ray exported: the batch-invariant
    inference paths are probed and chosen per thread count (policies/invariant.py), so an
    evaluation's numbers must not hang on an environment variable. -> the count set."""
    import torch

    threads = max(1, int(num_cpus))
    torch.set_num_threads(threads)
    return threads
