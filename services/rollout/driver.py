"""`prunepi rollout`: spread (task, episode) pairs over Ray actors, write RESULTS.json."""

from __future__ import annotations

import logging
from typing import Any

from prunepi import env
from services.rollout.config import RolloutConfig
from services.rollout.results import aggregate, write_results
from services.rollout.worker import RolloutWorker

log = logging.getLogger(__name__)


def episode_jobs(cfg: RolloutConfig) -> list[tuple[int, int]]:
    """(task_id, episode) pairs; the suite and task ids are ours or LIBERO's (`libero_*`),
    validated before any actor starts (without importing LIBERO)."""
    import envs

    tasks = cfg.tasks or envs.suite_tasks(cfg.suite)
    for t in tasks:
        envs.check_task(cfg.suite, t)  # raises naming the bad task id
    return [(t, k) for t in tasks for k in range(cfg.episodes_per_task)]


def format_table(results: dict[str, Any]) -> str:
    rows = [f"{'task':<72} {'success':>7} {'kept':>7} {'len':>6}"]
    for task, r in results["tasks"].items():
        rows.append(
            f"{task[:72]:<72} {r['success_rate']:>7.2f} {r['kept_tokens_mean']:>7.1f} "
            f"{r['episode_length_mean']:>6.1f}"
        )
    rows.append(
        f"{'all (' + str(results['episodes']) + ' episodes)':<72} "
        f"{results['success_rate']:>7.2f} {results['kept_tokens_mean']:>7.1f} "
        f"of {results['total_tokens']} tokens"
    )
    return "\n".join(rows)


def run_rollout(cfg: RolloutConfig, num_cpus: int = 2) -> dict[str, Any]:
    """Run every episode on Ray actors (starting a local Ray when none is connected)."""
    cfg.validate()
    jobs = episode_jobs(cfg)
    started = env.init_local_ray(num_cpus=num_cpus)
    import ray
    from ray.util import ActorPool

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
        pool = ActorPool(actors)
        for i, ep in enumerate(pool.map_unordered(lambda a, job: a.run.remote(*job), jobs)):
            episodes.append(ep)
            log.info(
                "[%d/%d] task %d ep %d: %s in %d steps, kept %.1f/%d",
                i + 1,
                len(jobs),
                ep.task_id,
                ep.episode,
                "success" if ep.success else "failure",
                ep.length,
                sum(ep.kept_tokens) / max(1, len(ep.kept_tokens)),
                ep.total_tokens,
            )
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
