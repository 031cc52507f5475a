"""`prunepi rollout`: spread (task, episode) pairs over Ray actors, write RESULTS.json."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from prunepi import env
from prunepi.progress import Progress
from services.rollout.config import RolloutConfig, check_init_block
from services.rollout.results import aggregate, write_results
from services.rollout.worker import RolloutWorker, run_on_actors

log = logging.getLogger(__name__)


def episode_jobs(cfg: RolloutConfig) -> list[tuple[int, int]]:
    """(task_id, init_state_id) pairs: episode k of a task starts from the absolute state id
    cfg.init_state_start + k. The suite, task ids and state block are ours or LIBERO's
    (`libero_*`), validated before any actor starts (without importing LIBERO)."""
    import envs

    tasks = cfg.tasks or envs.suite_tasks(cfg.suite)
    for t in tasks:
        envs.check_task(cfg.suite, t)  # raises naming the bad task id
    check_init_block(cfg.suite, cfg.init_state_start, cfg.episodes_per_task)
    states = range(cfg.init_state_start, cfg.init_state_start + cfg.episodes_per_task)
    return [(t, k) for t in tasks for k in states]


def episode_summary(ep: Any) -> str:
    """`task 2 state 107: success in 83 steps, kept 16.0/48` (one line per finished episode)."""
    kept = sum(ep.kept_tokens) / max(1, len(ep.kept_tokens))
    outcome = "success" if ep.success else "failure"
    return (
        f"task {ep.task_id} state {ep.episode}: {outcome} in {ep.length} steps, "
        f"kept {kept:.1f}/{ep.total_tokens}"
    )


def format_success(row: dict[str, Any]) -> str:
    """`0.84 [0.71, 0.92] n=50`: the rate, its 95 % Wilson interval and the episodes."""
    lo, hi = row["success_ci95"]
    return f"{row['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] n={row['episodes']}"


def format_table(results: dict[str, Any]) -> str:
    block = results["init_states"]
    rows = [f"{'task':<64} {'success [95% CI] n':>25} {'kept':>7} {'len':>6}"]
    for task, r in results["tasks"].items():
        rows.append(
            f"{task[:64]:<64} {format_success(r):>25} {r['kept_tokens_mean']:>7.1f} "
            f"{r['episode_length_mean']:>6.1f}"
        )
    first, last = block["start"], block["start"] + block["count"] - 1
    rows.append(
        f"{'all (init states ' + str(first) + '-' + str(last) + ')':<64} "
        f"{format_success(results):>25} {results['kept_tokens_mean']:>7.1f} "
        f"of {results['total_tokens']} tokens"
    )
    return "\n".join(rows)


def run_rollout(cfg: RolloutConfig, num_cpus: int = 2) -> dict[str, Any]:
    """Run every episode on Ray actors: on the Ray this process is connected to, else on the
    cluster `cfg.address` / RAY_ADDRESS names, else on an embedded local Ray."""
    cfg.validate()
    jobs = episode_jobs(cfg)
    # The actors open these paths; on a cluster they run in another folder.
    paths = {k: env.absolute_path(getattr(cfg, k)) for k in ("checkpoint", "video_dir")}
    cfg = dataclasses.replace(cfg, **paths)
    started = env.connect_ray(cfg.address, num_cpus=num_cpus)
    import ray

    episodes = []
    actors = []
    try:
        n = min(cfg.num_workers, len(jobs))
        total = ray.cluster_resources().get("CPU", 0.0)
        if n * cfg.num_cpus_per_worker > total:
            raise ValueError(
                f"num_workers ({n}) x num_cpus_per_worker ({cfg.num_cpus_per_worker}) exceeds "
                f"the cluster's {total} CPUs"
            )
        # "DEFAULT": outside any placement group of a caller (a Tune trial holds one sized
        # for its own driver only), so rollout actors can run inside a Tune trial.
        actor_cls = ray.remote(RolloutWorker).options(
            num_cpus=cfg.num_cpus_per_worker, scheduling_strategy="DEFAULT"
        )
        actors = [actor_cls.remote(cfg) for _ in range(n)]
        progress = Progress(len(jobs), "episodes")
        # envs_per_worker episodes in lockstep on each actor, a freed slot refilled at once
        for i, ep in enumerate(run_on_actors(actors, jobs, cfg.envs_per_worker)):
            episodes.append(ep)
            log.info("[rollout] %s  %s", progress.line(i + 1), episode_summary(ep))
        ray.get([a.close.remote() for a in actors])
    finally:
        for a in actors:
            ray.kill(a)
        if started:
            ray.shutdown()
    results = aggregate(episodes)
    write_results(results, cfg.out)
    print(format_table(results))
    return results
