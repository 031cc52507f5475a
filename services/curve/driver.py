"""`prunepi curve`: one rollout per (selector, budget) point on Ray, then the curve files.

Every point is `run_rollout` of the same checkpoint with the point's pruner (in-process on
the rollout actors, services/rollout/worker.py), on one Ray connection shared by all points.
After a point's rollout, while its actors are gone, the driver loads the same pruner and
times `sample_actions` at batch 1 on one real observation of the suite (a few warm calls,
then the median of `latency_repeats`, as benchmarks/pruning_latency.py times eval).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from prunepi import env
from prunepi.machine import machine_info
from services.curve.config import CurveConfig, Point, point_rollout
from services.curve.plot import plot_curve
from services.curve.report import (
    CURVE_FILES,
    leaves_interval,
    point_record,
    trained_vs_free,
    write_csv,
    write_json,
    write_markdown,
)
from services.rollout.config import RolloutConfig
from services.rollout.driver import run_rollout

log = logging.getLogger(__name__)


def probe_observation(rollout: RolloutConfig, image_size: int) -> dict[str, Any]:
    """A real observation of the suite's first task, from the first initial state of the
    block the rollouts use: the prompt length and scene that set the prefix length."""
    import envs

    task = (rollout.tasks or envs.suite_tasks(rollout.suite))[0]
    e = envs.make(
        rollout.suite,
        task,
        image_size=rollout.image_size or image_size,
        seed=rollout.seed,
        init_spread=rollout.init_spread,
    )
    try:
        obs, _ = e.unwrapped.reset(options={"init_state_id": rollout.init_state_start})
    finally:
        e.close()
    return obs


def measure_latency(
    rollout: RolloutConfig, cfg: CurveConfig, obs: dict[str, Any] | None
) -> tuple[float, int, dict[str, Any]]:
    """(median ms of `sample_actions` at batch 1, prefix length, the observation used) for
    the point's pruner, loaded as its rollout actors load it."""
    import torch

    from policies.loading import LoadOptions, load_policy
    from policies.policy import build_observation

    policy = load_policy(
        rollout.checkpoint,
        LoadOptions.of(rollout),
        device=cfg.latency_device,
        prune=rollout.prune,
    )
    mc = policy.model.config
    obs = obs or probe_observation(rollout, mc.vision.image_size)
    batch = build_observation([obs], mc, policy.config, policy.tokenizer, policy.norm_stats)
    batch = batch.to(policy.device)
    shape = (1, mc.action_horizon, mc.action_dim)  # fixed noise, as policies/policy.py uses
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(policy.device)
    steps = policy.config.num_steps
    cuda = policy.device.type == "cuda"

    def call():
        out = policy.model.sample(batch, noise, steps, prune=policy.prune)
        if cuda:
            torch.cuda.synchronize()
        return out

    for _ in range(cfg.latency_warmup):
        call()
    samples = []
    for _ in range(cfg.latency_repeats):
        t0 = time.perf_counter()
        out = call()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), int(out.prefix_len), obs


def run_point(
    cfg: CurveConfig, point: Point, rollout: RolloutConfig, obs: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Roll the point out on Ray, time its pruner; -> (point record, observation)."""
    log.info("[curve] point %s: %s", point.name, rollout.out)
    results = run_rollout(rollout, num_cpus=cfg.num_cpus)
    latency, prefix_len, obs = measure_latency(rollout, cfg, obs)
    pruning = rollout.pruning.to_dict() if rollout.prune else None
    record = point_record(
        point,
        results,
        latency_ms=latency,
        prefix_len=prefix_len,
        pruning=pruning,
        results_file=str(Path(rollout.out).relative_to(cfg.out_dir)),
    )
    return record, obs


def curve_header(cfg: CurveConfig, command: str) -> dict[str, Any]:
    import envs

    r = cfg.rollout
    tasks = r.tasks or envs.suite_tasks(r.suite)
    return {
        "suite": r.suite,
        "checkpoint": r.checkpoint,
        "command": command,
        "episodes_per_task": r.episodes_per_task,
        "episodes_per_point": r.episodes_per_task * len(tasks),
        "init_state_start": r.init_state_start,
        "latency_device": cfg.latency_device,
        "latency_repeats": cfg.latency_repeats,
        "machine": machine_info(),
        "config": dataclasses.asdict(cfg),
    }


def run_curve(cfg: CurveConfig, command: str | None = None) -> dict[str, Any]:
    """Every point of `cfg.points()` on one Ray connection, then the curve files in
    OUT_DIR (report.CURVE_FILES); returns curve.json's content. `command` defaults to this
    process's argv."""
    t0 = time.perf_counter()
    cfg.validate()
    # Absolute: the actors open these paths, and on a cluster they run in another folder.
    out = Path(env.absolute_path(cfg.out_dir))
    rollout = dataclasses.replace(cfg.rollout, checkpoint=env.absolute_path(cfg.rollout.checkpoint))
    cfg = dataclasses.replace(cfg, out_dir=str(out), rollout=rollout)
    own = cfg.own_pruner()
    header = curve_header(cfg, command or shlex.join(["prunepi", *sys.argv[1:]]))
    started = env.connect_ray(cfg.rollout.address, num_cpus=cfg.num_cpus)
    points, obs = [], None
    try:
        for i, point in enumerate(cfg.points()):
            rollout = point_rollout(
                cfg, point, own if point.checkpoint is None else cfg.own_pruner(point)
            )
            record, obs = run_point(cfg, point, rollout, obs)
            points.append(record)
            log.info(
                "[curve] %d/%d %s: success %.2f, kept %.1f, %.1f ms",
                *(i + 1, len(cfg.points()), point.name, record["success_rate"]),
                *(record["kept_tokens_mean"], record["latency_ms"]),
            )
    finally:
        if started:
            import ray

            ray.shutdown()
    return write_curve(out, header, points, time.perf_counter() - t0)


def write_curve(
    out: Path, header: dict[str, Any], points: list[dict[str, Any]], wall_s: float
) -> dict[str, Any]:
    """curve.{json,csv,png,md} under `out` (report.CURVE_FILES)."""
    tasks = list(dict.fromkeys(t for p in points for t in p["tasks"]))
    leaves = leaves_interval(points)
    curve = {
        **header,
        "wall_s": wall_s,
        "tasks": tasks,
        "points": points,
        "leaves_unpruned": {s: (None if p is None else p["name"]) for s, p in leaves.items()},
        "trained_vs_training_free": trained_vs_free(points),
    }
    curve = json.loads(json.dumps(curve))  # as curve.json reads back: tuples are lists
    write_json(curve, out / CURVE_FILES["json"])
    write_csv(points, out / CURVE_FILES["csv"])
    plot_curve(points, tasks, out / CURVE_FILES["png"])
    write_markdown(curve, out / CURVE_FILES["md"])
    return curve
