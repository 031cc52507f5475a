"""Collect scripted-expert demonstrations on Ray actors into the LeRobot v2.1 layout.

Each actor owns its environments and records whole episodes; a successful one is written by
the actor to a staging parquet and only a small summary travels back, so the driver never
holds images. Every attempt uses a layout seed derived from (seed, attempt number) outside
the evaluation init states, and each task keeps its first `episodes_per_task` successes in
attempt order, so the dataset is the same whatever order the actors finish in. The dataset is
assembled in a temporary directory beside `out` and renamed into place at the end.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from envs import lerobot_format as lf
from envs.layouts import check_init_spread
from envs.scene import CONTROL_HZ
from envs.suites import SUITES
from prunepi.checks import check_fields, int_at_least, real_at_least
from prunepi.env import check_address, connect_ray

_SEED_STRIDE = 1_000_000  # layout seed = seed * stride + attempt: disjoint across seeds


COLLECT_RULES = {
    "episodes_per_task": int_at_least(1),
    "num_workers": int_at_least(1),
    "image_size": int_at_least(16),
    "seed": int_at_least(0),
    "max_attempts_per_demo": real_at_least(1),
}


@dataclass(frozen=True)
class CollectConfig:
    """What `prunepi collect` collects."""

    suite: str = "spatial"  # spatial / object / goal / long, or "all" for the four
    episodes_per_task: int = 50  # successful demos kept per task (LIBERO has 50 per task)
    out: pathlib.Path = pathlib.Path("data/prunepi_demos")  # dataset root to create
    image_size: int = 224  # square camera resolution (openpi's LIBERO input is 224)
    num_workers: int = 2  # Ray actors recording episodes in parallel
    seed: int = 0  # base of the layout seeds: same seed and config, same dataset
    max_attempts_per_demo: float = 3.0  # give up on a task after this many tries per demo
    overwrite: bool = False  # replace an existing dataset at `out`
    progress: bool = True  # show a tqdm progress bar
    # LIBERO-style init regions (m) around each object's home; None = anywhere on the table
    init_spread: float | None = None
    # Ray cluster to join (HOST:PORT, "auto", ray://HOST:PORT); None: RAY_ADDRESS if set (as
    # `ray job submit` sets it), else the embedded local Ray; "local": always embedded
    address: str | None = None

    def __post_init__(self):
        if self.suite != "all" and self.suite not in SUITES:
            raise ValueError(
                f"suite: unknown suite {self.suite!r}; expected one of {sorted(SUITES)} or 'all'"
            )
        check_fields("collect", self, COLLECT_RULES)
        check_init_spread(self.init_spread)
        check_address("address", self.address)
        object.__setattr__(self, "out", pathlib.Path(self.out))

    @property
    def suites(self) -> tuple[str, ...]:
        """The suites to collect, in SUITES order."""
        return tuple(SUITES) if self.suite == "all" else (self.suite,)


class EpisodeWorker:
    """Ray actor body: records expert episodes, writes the successful ones to staging."""

    def __init__(self, image_size: int, staging: str, init_spread: float | None = None):
        self.image_size = image_size
        self.init_spread = init_spread
        self.staging = pathlib.Path(staging)
        self._envs: dict[tuple[str, int], Any] = {}

    def _env(self, suite: str, task_id: int):
        import envs
        from envs.experts import make_expert

        key = (suite, task_id)
        if key not in self._envs:
            env = envs.make(
                suite, task_id, image_size=self.image_size, init_spread=self.init_spread
            )
            self._envs[key] = (env, make_expert(env))
        return self._envs[key]

    def run(self, suite: str, task_id: int, attempt: int, layout_seed: int) -> dict[str, Any]:
        from envs.demos import record_expert_episode

        env, expert = self._env(suite, task_id)
        demo = record_expert_episode(env, expert, layout_seed=layout_seed)
        out: dict[str, Any] = {
            "suite": suite,
            "task_id": task_id,
            "attempt": attempt,
            "success": demo.success,
            "length": demo.length,
            "instruction": demo.instruction,
        }
        if demo.success:
            table = lf.frame_table(
                demo.images, demo.wrist_images, demo.states, demo.actions, CONTROL_HZ
            )
            path = self.staging / f"{suite}-{task_id}-{attempt:06d}.parquet"
            pq.write_table(table, path)
            out["path"] = str(path)
            out["stats"] = demo.stats
        return out

    def close(self) -> None:
        for env, _ in self._envs.values():
            env.close()
        self._envs.clear()


@dataclass
class _TaskProgress:
    suite: str
    task_id: int
    instruction: str
    next_attempt: int = 0
    in_flight: int = 0
    attempts: int = 0
    successes: dict[int, dict[str, Any]] = field(default_factory=dict)  # attempt -> result


def run_collect(cfg: CollectConfig) -> pathlib.Path:
    """Collect `cfg.episodes_per_task` successful expert demos for every task of the suite(s)
    and write the dataset to `cfg.out` (returned)."""
    import ray

    out = cfg.out.absolute()  # the actors write staging files; on a cluster from another cwd
    if out.exists() and not cfg.overwrite:
        raise FileExistsError(f"out: {out} already exists (set overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging = tmp / "staging"
    staging.mkdir(parents=True)

    started_ray = connect_ray(cfg.address, num_cpus=max(2, cfg.num_workers))
    actors = []
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        worker_cls = ray.remote(num_cpus=min(1.0, cpus / cfg.num_workers))(EpisodeWorker)
        actors = [
            worker_cls.remote(cfg.image_size, str(staging), cfg.init_spread)
            for _ in range(cfg.num_workers)
        ]
        progress = _Attempts(cfg, actors).run()
        _assemble(tmp, progress, cfg)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_ray:
            ray.shutdown()
        shutil.rmtree(staging, ignore_errors=True)
    _replace(out, tmp)
    return out


class _Attempts:
    """Hands expert attempts to idle actors, task by task, until every task has its demos.

    Attempt k of a task always uses layout seed `seed * _SEED_STRIDE + k`, and the dataset
    keeps the first `episodes_per_task` successful attempts in attempt order, so the
    dataset does not depend on which actor finished first.
    """

    def __init__(self, cfg: CollectConfig, actors: list[Any]):
        self.cfg, self.idle = cfg, list(actors)
        self.tasks = [
            _TaskProgress(suite, t.task_id, t.instruction)
            for suite in cfg.suites
            for t in SUITES[suite]
        ]
        self.max_attempts = int(np.ceil(cfg.episodes_per_task * cfg.max_attempts_per_demo)) + 10
        self.pending: dict[Any, tuple[_TaskProgress, Any]] = {}

    def dispatch(self) -> None:
        n = self.cfg.episodes_per_task
        for task in self.tasks:
            while self.idle and len(task.successes) + task.in_flight < n:
                if task.next_attempt >= self.max_attempts:
                    raise RuntimeError(
                        f"collect: the expert solved only {len(task.successes)} of "
                        f"{task.attempts} attempts on {task.suite}-{task.task_id} "
                        f"({task.instruction!r}); giving up"
                    )
                actor = self.idle.pop()
                seed = self.cfg.seed * _SEED_STRIDE + task.next_attempt
                ref = actor.run.remote(task.suite, task.task_id, task.next_attempt, seed)
                self.pending[ref] = (task, actor)
                task.next_attempt += 1
                task.in_flight += 1

    def run(self) -> list[_TaskProgress]:
        import ray
        from tqdm import tqdm

        n = self.cfg.episodes_per_task
        bar = tqdm(total=n * len(self.tasks), desc="collect", disable=not self.cfg.progress)
        self.dispatch()
        while self.pending:
            done, _ = ray.wait(list(self.pending), num_returns=1)
            task, actor = self.pending.pop(done[0])
            result = ray.get(done[0])
            task.in_flight -= 1
            task.attempts += 1
            self.idle.append(actor)
            if result["success"]:
                task.successes[result["attempt"]] = result
                if len(task.successes) <= n:
                    bar.update(1)
            self.dispatch()
        bar.close()
        return self.tasks


def _replace(out: pathlib.Path, tmp: pathlib.Path) -> None:
    """Move the finished dataset `tmp` to `out`, replacing what is there."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def _assemble(root: pathlib.Path, progress: list[_TaskProgress], cfg: CollectConfig) -> None:
    """Turn the staged successful episodes into the final layout under `root`."""
    feats = lf.features(cfg.image_size)
    tasks = [t.instruction for t in progress]
    episodes, stats_rows, stats = [], [], {}
    index = 0
    for task_index, task in enumerate(progress):
        kept = [task.successes[a] for a in sorted(task.successes)[: cfg.episodes_per_task]]
        for result in kept:
            ep = len(episodes)
            frames = pq.read_table(result["path"])
            table = lf.finish_episode_table(frames, ep, index, task_index, feats)
            lf.write_episode(root, table, ep)
            length = table.num_rows
            episodes.append({"episode_index": ep, "tasks": [task.instruction], "length": length})
            ep_stats = dict(result["stats"])
            ep_stats["timestamp"] = lf.vector_stats(np.arange(length) / CONTROL_HZ)
            ep_stats["frame_index"] = lf.vector_stats(np.arange(length))
            ep_stats["episode_index"] = lf.vector_stats(np.full(length, ep))
            ep_stats["index"] = lf.vector_stats(np.arange(index, index + length))
            ep_stats["task_index"] = lf.vector_stats(np.full(length, task_index))
            stats_rows.append({"episode_index": ep, "stats": ep_stats})
            index += length
        stats[task.instruction] = {
            "success_rate": len(task.successes) / max(task.attempts, 1),
            "episodes": task.attempts,
        }
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    info = lf.info_json(feats, len(episodes), index, len(tasks), CONTROL_HZ)
    (meta / "info.json").write_text(json.dumps(info, indent=2))
    lf.write_jsonl(meta / "episodes.jsonl", episodes)
    lf.write_jsonl(
        meta / "tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(tasks)]
    )
    lf.write_jsonl(meta / "episodes_stats.jsonl", stats_rows)
    (meta / "expert_stats.json").write_text(
        json.dumps({"tasks": stats, "init_spread": cfg.init_spread}, indent=2)
    )
