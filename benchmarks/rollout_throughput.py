"""Closed-loop episodes per minute: one environment at a time per Ray worker vs several in
lockstep with one batched policy query per step (`RolloutConfig.envs_per_worker`).

Same checkpoint, same jobs, same Ray workers and CPUs, in one run; in-process policies by
default, through Ray Serve with `--serve` (one replica, `@serve.batch`). Every mode must give
identical results (an episode depends only on checkpoint, task, initial state and seed);
the benchmark checks it and says so.

    .venv/bin/python benchmarks/rollout_throughput.py [--checkpoint CKPT] [--slots 1 16]
        [--episodes-per-task 50] [--max-steps N] [--serve]

By default the committed reference (models/reference, spatial suite, its 1.5 cm init
regions): its episodes succeed at different steps, so lockstep slots free up at different
times, as in every real evaluation (the worker starts a job on the next replan boundary so
the batches stay full). `--checkpoint random` builds a random tiny π0.5 (pruner on, keep
25 %) that never succeeds: every episode runs `--max-steps` policy steps in every mode.
Wall time covers the episodes (environments built on demand included) once the actors are
up.
Writes benchmarks/results/rollout_throughput.json and prints a table. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path

from prunepi import env

env.apply_defaults()

from benchmarks.common import print_table, write_json  # noqa: E402
from benchmarks.serve_throughput import build_checkpoint  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_episodes(cfg) -> tuple[dict, float]:
    """RESULTS of `cfg`'s jobs on `cfg.num_workers` rollout actors, and the seconds the
    episodes took once every actor was up (policy loaded): what the driver runs
    (services/rollout/driver.py), with actor start-up left out of the time."""
    import ray

    from services.rollout.driver import episode_jobs
    from services.rollout.results import aggregate
    from services.rollout.worker import RolloutWorker, run_on_actors

    jobs = episode_jobs(cfg)
    actor_cls = ray.remote(RolloutWorker).options(num_cpus=cfg.num_cpus_per_worker)
    actors = [actor_cls.remote(cfg) for _ in range(cfg.num_workers)]
    try:
        ray.get([a.advance.remote([]) for a in actors])  # constructed: policy loaded
        t0 = time.perf_counter()
        episodes = list(run_on_actors(actors, jobs, cfg.envs_per_worker))
        wall = time.perf_counter() - t0
        ray.get([a.close.remote() for a in actors])
    finally:
        for a in actors:
            ray.kill(a)
    return aggregate(episodes), wall


def mode_rows(base, slots: list[int], label: str) -> list[dict]:
    """One row per `envs_per_worker`; all must give the first one's results."""
    import dataclasses

    rows, first = [], None
    for n in slots:
        results, wall = timed_episodes(dataclasses.replace(base, envs_per_worker=n))
        first = first or results
        rows.append(
            {
                "policy": label,
                "envs_per_worker": n,
                "episodes": results["episodes"],
                "wall_s": wall,
                "episodes_per_min": results["episodes"] / wall * 60,
                "success_rate": results["success_rate"],
                "identical_results": results == first,
            }
        )
        print(rows[-1], flush=True)
    for r in rows:
        r["speedup"] = r["episodes_per_min"] / rows[0]["episodes_per_min"]
    return rows


def served_base(base, slots: list[int]):
    """Start one Serve replica of `checkpoint` (1 CPU); the workers share what is left."""
    import dataclasses

    from services.serve import ServeConfig, start_serve

    # every lockstep slot of every worker may be in flight at once: one forward for them all
    most = base.num_workers * max(slots)
    cfg = ServeConfig(
        checkpoint=base.checkpoint, port=free_port(), app_name="rollout_bench", max_batch_size=most
    )
    handle = start_serve(cfg)
    workers = dataclasses.replace(
        base, checkpoint=None, policy=handle.ws_url, num_cpus_per_worker=0.5
    )
    return handle, workers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="models/reference", help="folder, or random")
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 16], help="envs_per_worker")
    parser.add_argument("--suite", default="spatial")
    parser.add_argument("--init-spread", type=float, default=0.015, help="init regions (m)")
    parser.add_argument("--episodes-per-task", type=int, default=50)  # LIBERO's protocol
    parser.add_argument("--max-steps", type=int, default=None, help="None: the suite's limit")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--serve", action="store_true", help="also through Ray Serve")
    return parser.parse_args()


def run_modes(base, args: argparse.Namespace) -> list[dict]:
    """Every mode's rows on one embedded local Ray (its start-up is not timed)."""
    started = env.init_local_ray(num_cpus=2)
    try:
        rows = mode_rows(base, args.slots, "in_process")
        if args.serve:
            handle, served = served_base(base, args.slots)
            try:
                rows += mode_rows(served, args.slots, "serve")
            finally:
                handle.stop()
    finally:
        if started:
            import ray

            ray.shutdown()
    return rows


def main() -> None:
    args = parse_args()
    from services.rollout import RolloutConfig

    tmp = Path(tempfile.mkdtemp(prefix="rollout_bench_"))
    random = args.checkpoint == "random"
    checkpoint = str(build_checkpoint(tmp)) if random else args.checkpoint
    base = RolloutConfig(
        checkpoint=checkpoint,
        suite=args.suite,
        init_spread=args.init_spread,
        episodes_per_task=args.episodes_per_task,
        max_steps=args.max_steps,
        num_workers=args.workers,
        num_cpus_per_worker=1.0,  # Ray gives each actor OMP_NUM_THREADS=1
        out=str(tmp / "RESULTS.json"),
    )
    rows = run_modes(base, args)
    cols = ["policy", "envs_per_worker", "episodes", "success_rate", "wall_s", "episodes_per_min"]
    cols.append("speedup")
    print_table(rows, cols + ["identical_results"])
    write_json(
        "rollout_throughput.json",
        {
            "description": "closed-loop episodes per minute, one env at a time per worker vs "
            "envs_per_worker in lockstep with one batched policy query per step",
            "checkpoint": "random tiny pi0.5, pruner keep_ratio 0.25" if random else checkpoint,
            "config": {
                "suite": args.suite,
                "init_spread": args.init_spread,
                "episodes_per_task": args.episodes_per_task,
                "max_steps": args.max_steps,
                "workers": args.workers,
                "replan_steps": base.replan_steps,
            },
            "load_avg_1m_at_end": os.getloadavg()[0],
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
