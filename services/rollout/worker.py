"""The rollout Ray actor: steps up to `envs_per_worker` episodes in lockstep, one batched
policy query per step, and owns their environments and its policy connections.

One-at-a-time (`envs_per_worker=1`) and lockstep rollouts give the same episodes: an
episode depends only on (checkpoint, task, initial state, seed). Environments reset to a
fixed state id deterministically (envs/tabletop_env.py `reset`, envs/libero.py reseeds per
state), and the policy's actions for an observation are bitwise the same in any batch
(policies/invariant.py, tests/pi05/test_batch_invariance.py), through Serve's micro-batching
too (services/serve/deployment.py `@serve.batch`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from services.rollout.config import RolloutConfig
from services.rollout.episode import EpisodeResult, EpisodeRun, step_lockstep

Job = tuple[int, int]  # (task_id, absolute initial state id)


class ServedPolicy:
    """`size` openpi-client connections to a served policy, one per lockstep slot.

    openpi-client is synchronous (one request in flight per connection), so `infer_batch`
    sends each observation on its own connection from a thread pool: the requests arrive
    together and the deployment's `@serve.batch` fuses them into one forward.
    """

    def __init__(self, url: str, api_key: str | None, size: int):
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        # host may be a full ws:// URL (openpi-client then appends nothing when port=None).
        self.clients = [WebsocketClientPolicy(url, None, api_key=api_key) for _ in range(size)]
        self._pool = ThreadPoolExecutor(size) if size > 1 else None

    @property
    def metadata(self) -> dict[str, Any]:
        return self.clients[0].get_server_metadata()

    def infer_batch(self, observations: Sequence[dict]) -> list[dict]:
        if len(observations) > len(self.clients):
            raise ValueError(
                f"{len(observations)} observations for {len(self.clients)} connections"
            )
        if self._pool is None or len(observations) == 1:
            return [c.infer(o) for c, o in zip(self.clients, observations)]
        return list(self._pool.map(lambda c, o: c.infer(o), self.clients, observations))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for c in self.clients:
            c._ws.close()  # openpi-client keeps its connection private


def make_policy(cfg: RolloutConfig):
    """openpi-client connections to a served policy, or the checkpoint's Policy in this
    process; either answers `infer_batch(observations)` and has `metadata`."""
    if cfg.policy is not None:
        return ServedPolicy(cfg.policy, cfg.api_key, cfg.envs_per_worker)
    from policies.loading import LoadOptions, load_policy

    # a prunepi or an openpi checkpoint folder (with the options it lacks)
    return load_policy(cfg.checkpoint, LoadOptions.of(cfg), device="cpu", prune=cfg.prune)


def take(pending: collections.deque, n: int, prefer: Iterable[int] = ()) -> list[Job]:
    """Up to n jobs from `pending`: first the next job of each task in `prefer` (those of the
    episodes that just finished, so a freed slot reuses its idle environment instead of
    building one, ~0.1-1 s), then from the front."""
    out: list[Job] = []
    for task in prefer:
        job = next((j for j in pending if j[0] == task), None)
        if job is not None and len(out) < n:
            pending.remove(job)
            out.append(job)
    while len(out) < n and pending:
        out.append(pending.popleft())
    return out


class RolloutWorker:
    """Wrapped with `ray.remote` by the driver (driver.py), so it also runs without Ray."""

    def __init__(self, cfg: RolloutConfig):
        import envs
        from prunepi.env import set_torch_threads

        self.cfg = cfg
        self.slots = cfg.envs_per_worker
        self.torch_threads = set_torch_threads(cfg.num_cpus_per_worker)
        self.policy = make_policy(cfg)
        self.image_size = cfg.image_size or int(self.policy.metadata.get("image_size", 224))
        self.max_steps = cfg.max_steps or envs.suite_max_steps(cfg.suite)
        self._idle: dict[int, list] = {}  # task_id -> environments between episodes
        self._active: list[tuple[EpisodeRun, Any]] = []  # running episodes and their envs
        self._waiting: list[Job] = []  # given, started at the next replan boundary
        self._tick = 0  # lockstep steps since the running episodes' common start

    def _env(self, task_id: int):
        """An idle environment of `task_id`, or a new one (lockstep slots may share a task)."""
        idle = self._idle.setdefault(task_id, [])
        if idle:
            return idle.pop()
        import envs

        env = envs.make(
            self.cfg.suite,
            task_id,
            image_size=self.image_size,
            seed=self.cfg.seed,
            init_spread=self.cfg.init_spread,
        )
        # openpi counts warm-up outside the policy's step budget: bypass the TimeLimit wrapper.
        return env.unwrapped

    def _start(self, task_id: int, episode: int) -> None:
        env = self._env(task_id)
        run = EpisodeRun(
            env,
            task_id=task_id,
            episode=episode,
            max_steps=self.max_steps,
            replan_steps=self.cfg.replan_steps,
            num_warmup_steps=self.cfg.warmup_steps,
            record=self.cfg.video_dir is not None,
        )
        self._active.append((run, env))

    def _finish(self, run: EpisodeRun, env) -> EpisodeResult:
        self._idle[run.result.task_id].append(env)
        result = run.result
        if self.cfg.video_dir is not None:
            from envs.video import write_video

            tag = "success" if result.success else "failure"
            name = f"{self.cfg.suite}_task{result.task_id}_ep{result.episode:03d}_{tag}.mp4"
            write_video(result.frames, Path(self.cfg.video_dir) / name)
        return dataclasses.replace(result, frames=[])  # frames stay in the actor

    def advance(self, jobs: Iterable[Job] = ()) -> list[EpisodeResult]:
        """Take `jobs` beside the running episodes, then step them all in lockstep until at
        least one finishes; return the finished ones (none only when nothing runs).

        A job starts on a replan boundary (every `replan_steps` lockstep steps), so every
        episode asks for its chunks on the same steps as the others and one forward serves
        all of them: started where a finished episode left off, it would ask on its own
        steps, and the batches would thin out to one or two observations a query. The
        episode itself is the same either way; only when it starts moves.
        """
        self._waiting += list(jobs)
        if len(self._active) + len(self._waiting) > self.slots:
            raise ValueError(f"advance: more than envs_per_worker={self.slots} episodes")
        while self._active or self._waiting:
            if not self._active:
                self._tick = 0
            if self._tick % self.cfg.replan_steps == 0:
                for task_id, episode in self._waiting:
                    self._start(task_id, episode)
                self._waiting = []
            step_lockstep([run for run, _ in self._active], self.policy.infer_batch)
            self._tick += 1
            done = [(run, env) for run, env in self._active if run.done]
            if done:
                self._active = [(r, e) for r, e in self._active if not r.done]
                return [self._finish(run, env) for run, env in done]
        return []

    def run_jobs(self, jobs: Iterable[Job]) -> list[EpisodeResult]:
        """Every job, `envs_per_worker` at a time (a finished episode frees its slot)."""
        pending, results, finished = collections.deque(jobs), [], []
        while pending or self._active or self._waiting:
            busy = len(self._active) + len(self._waiting)
            new = take(pending, self.slots - busy, [e.task_id for e in finished])
            finished = self.advance(new)
            results += finished
        return results

    def run(self, task_id: int, episode: int) -> EpisodeResult:
        """One episode alone (on an idle worker)."""
        [result] = self.run_jobs([(task_id, episode)])
        return result

    def close(self) -> None:
        for env in [e for envs in self._idle.values() for e in envs]:
            env.close()
        for _, env in self._active:
            env.close()
        self._idle.clear()
        self._active.clear()
        self._waiting.clear()
        if hasattr(self.policy, "close"):
            self.policy.close()


def run_on_actors(actors: Sequence, jobs: Iterable[Job], slots: int) -> Iterator[EpisodeResult]:
    """Keep `slots` episodes running on every actor (`RolloutWorker.advance` on Ray) until the
    jobs run out; yield each episode as it finishes. A finished episode's slot takes the
    next job at once, so actors stay busy whatever their episodes' lengths."""
    import ray

    pending = collections.deque(jobs)
    running = [0] * len(actors)
    calls: dict = {}

    def submit(i: int, cap: int = slots, prefer: Iterable[int] = ()) -> None:
        new = take(pending, cap - running[i], prefer)
        running[i] += len(new)
        if running[i]:
            calls[actors[i].advance.remote(new)] = i

    share = -(-len(pending) // max(1, len(actors)))  # fewer jobs than slots: spread them
    for i in range(len(actors)):
        submit(i, min(slots, share))
    while calls:
        [ref], _ = ray.wait(list(calls), num_returns=1)
        i = calls.pop(ref)
        finished = ray.get(ref)
        running[i] -= len(finished)
        yield from finished
        submit(i, prefer=[e.task_id for e in finished])
