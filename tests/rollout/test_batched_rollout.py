"""Batched rollouts: an episode depends only on (checkpoint, task, initial state, seed).

The same episodes run one at a time, in lockstep (`envs_per_worker` > 1), on 1 and 2 Ray
workers, in-process and through Serve's micro-batching give identical successes, lengths,
kept tokens and action chunks (services/rollout/worker.py, policies/invariant.py).
The checkpoint prunes with an adaptive budget, so kept counts (and prefix lengths) vary
from query to query and lockstep batches mix samples of different lengths.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.normalize import NormStats
from policies.pi05.config import get_preset
from policies.pi05.model import Pi05Model
from policies.policy import PolicyConfig, save_checkpoint
from policies.pruning.config import PrunerConfig
from policies.tokenizer import train_sentencepiece
from services.rollout import RolloutConfig, run_rollout
from services.rollout.results import aggregate
from services.rollout.worker import RolloutWorker
from tests.serve.conftest import TASKS, session_port

pytestmark = [pytest.mark.ray, pytest.mark.render]

JOBS = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]  # (task_id, initial state id)
MAX_STEPS = 15  # three policy queries per episode (replan every 5)


@pytest.fixture(scope="module")
def adaptive_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("adaptive") / "ckpt"
    torch.manual_seed(1)
    pruning = PrunerConfig(enabled=True, budget="adaptive", min_keep=8)
    model = Pi05Model(dataclasses.replace(get_preset("tiny"), pruning=pruning)).eval()
    tok = train_sentencepiece(TASKS, folder.parent / "spm.model", vocab_size=512)
    rng = np.random.default_rng(1)
    stats = {
        "state": NormStats.from_data(rng.normal(size=(256, 8))),
        "actions": NormStats.from_data(rng.uniform(-1, 1, size=(256, 7))),
    }
    return save_checkpoint(folder, model, PolicyConfig(), tok, stats)


class Recorder:
    """Wraps a worker's policy: every chunk answered, keyed by the observation's bytes."""

    def __init__(self, policy):
        self.policy, self.chunks, self.batch_sizes = policy, {}, []

    @property
    def metadata(self) -> dict:
        return self.policy.metadata

    def infer_batch(self, observations: list[dict]) -> list[dict]:
        answers = self.policy.infer_batch(observations)
        self.batch_sizes.append(len(observations))
        for obs, answer in zip(observations, answers):
            key = hashlib.sha256()
            for k in sorted(obs):
                key.update(np.asarray(obs[k]).tobytes())
            self.chunks.setdefault(key.hexdigest(), []).append(np.asarray(answer["actions"]))
        return answers

    def close(self) -> None:
        if hasattr(self.policy, "close"):
            self.policy.close()


def run_worker(cfg: RolloutConfig) -> tuple[list, Recorder]:
    torch.set_num_threads(1)  # what a 1-CPU Ray actor or Serve replica runs with
    worker = RolloutWorker(cfg)
    worker.policy = recorder = Recorder(worker.policy)
    try:
        episodes = worker.run_jobs(JOBS)
    finally:
        worker.close()
    return sorted(episodes, key=lambda e: (e.task_id, e.episode)), recorder


def base_config(**kw) -> RolloutConfig:
    return RolloutConfig(suite="goal", max_steps=MAX_STEPS, **kw)


@pytest.fixture(scope="module")
def one_at_a_time(adaptive_checkpoint):
    return run_worker(base_config(checkpoint=str(adaptive_checkpoint)))


def assert_same(episodes, recorder, reference) -> None:
    ref_episodes, ref_recorder = reference
    assert [dataclasses.asdict(e) for e in episodes] == [
        dataclasses.asdict(e) for e in ref_episodes
    ]
    assert recorder.chunks.keys() == ref_recorder.chunks.keys()  # the same observations...
    for key, chunks in recorder.chunks.items():  # ...answered with bitwise the same chunks
        ref = ref_recorder.chunks[key]
        assert len(chunks) == len(ref) and all(map(np.array_equal, chunks, ref)), key


def test_reference_episodes_vary(one_at_a_time):
    episodes, recorder = one_at_a_time
    assert [(e.task_id, e.episode) for e in episodes] == JOBS
    assert all(len(e.kept_tokens) == MAX_STEPS // 5 for e in episodes)
    assert len({k for e in episodes for k in e.kept_tokens}) > 1  # adaptive: counts vary
    assert set(recorder.batch_sizes) == {1}


@pytest.mark.parametrize("slots", [2, 3])
def test_lockstep_in_process_equals_one_at_a_time(adaptive_checkpoint, one_at_a_time, slots):
    cfg = base_config(checkpoint=str(adaptive_checkpoint), envs_per_worker=slots)
    episodes, recorder = run_worker(cfg)
    assert max(recorder.batch_sizes) == slots  # one forward for several environments
    assert_same(episodes, recorder, one_at_a_time)


@pytest.fixture(scope="module")
def served_adaptive(local_ray, adaptive_checkpoint):
    from services.serve import ServeConfig, start_serve

    cfg = ServeConfig(
        checkpoint=str(adaptive_checkpoint),
        port=session_port(),
        num_cpus_per_replica=0.25,
        max_batch_size=8,
        batch_wait_timeout_s=0.02,
        app_name="adaptive",
        route_prefix="/adaptive",
    )
    handle = start_serve(cfg)
    yield handle
    handle.stop()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_lockstep_through_serve_equals_one_at_a_time(served_adaptive, one_at_a_time):
    cfg = base_config(policy=served_adaptive.ws_url, envs_per_worker=3)
    episodes, recorder = run_worker(cfg)
    assert max(recorder.batch_sizes) == 3  # three requests in flight at once
    assert_same(episodes, recorder, one_at_a_time)


@pytest.mark.ray
@pytest.mark.timeout(300)
@pytest.mark.parametrize("served", [False, True], ids=["in_process", "serve"])
def test_two_ray_workers_lockstep_equal_one_at_a_time(
    served, served_adaptive, adaptive_checkpoint, one_at_a_time, tmp_path
):
    source = (
        {"policy": served_adaptive.ws_url} if served else {"checkpoint": str(adaptive_checkpoint)}
    )
    cfg = base_config(
        **source,
        tasks=(0, 1),
        episodes_per_task=2,
        num_workers=2,
        num_cpus_per_worker=0.5,
        envs_per_worker=2,
        out=str(tmp_path / "RESULTS.json"),
        video_dir=str(tmp_path / "videos"),
    )
    results = run_rollout(cfg)
    ref = [e for e in one_at_a_time[0] if e.episode < 2]  # the same 2 x 2 jobs
    assert results == aggregate(ref)
    assert len(list((tmp_path / "videos").iterdir())) == 4


def test_freed_slot_takes_a_job_of_its_task_first():
    """A freed slot keeps its environment busy: the finished task's next job comes first."""
    import collections

    from services.rollout.worker import take

    pending = collections.deque([(0, 3), (1, 0), (1, 1), (2, 0)])
    assert take(pending, 2, prefer=[1]) == [(1, 0), (0, 3)]
    assert take(pending, 5, prefer=[7]) == [(1, 1), (2, 0)]  # no job of task 7: the front
    assert take(pending, 1) == [] and not pending


def test_a_job_given_mid_chunk_waits_for_the_replan_boundary(adaptive_checkpoint, one_at_a_time):
    """Episodes ask for chunks on the same lockstep steps: a job given while the others are
    mid-chunk starts at the next replan boundary and shares their forward, and is still the
    episode it is alone."""
    torch.set_num_threads(1)
    worker = RolloutWorker(base_config(checkpoint=str(adaptive_checkpoint), envs_per_worker=2))
    worker.policy = recorder = Recorder(worker.policy)
    try:
        [short] = worker.advance([(0, 0)])  # alone, to its step limit: 15 steps
        worker._start(0, 2)
        worker._start(1, 0)
        worker._active[0][0].max_steps = 7  # (0, 2) ends at step 7, mid-chunk of (1, 0)
        [cut] = worker.advance()
        assert (cut.task_id, cut.episode, cut.length) == (0, 2, 7)
        recorder.batch_sizes.clear()
        [full] = worker.advance([(1, 1)])  # given at step 7: starts at step 10
        rest = worker.run_jobs([])
    finally:
        worker.close()
    assert recorder.batch_sizes[0] == 2  # step 10: (1, 0)'s next chunk and (1, 1)'s first
    assert (full.task_id, full.episode) == (1, 0)
    alone = {(e.task_id, e.episode): dataclasses.asdict(e) for e in one_at_a_time[0]}
    for ep in (short, full, *rest):
        assert dataclasses.asdict(ep) == alone[(ep.task_id, ep.episode)]
    assert [(e.task_id, e.episode) for e in rest] == [(1, 1)]


def test_a_worker_sets_its_torch_threads_from_its_cpus(adaptive_checkpoint):
    """Not left to OMP_NUM_THREADS: the inference fast paths are chosen per thread count."""
    before = torch.get_num_threads()
    try:
        for cpus, threads in ((0.5, 1), (2.0, 2)):
            torch.set_num_threads(3 - threads)  # the other count, so setting it shows
            cfg = base_config(checkpoint=str(adaptive_checkpoint), num_cpus_per_worker=cpus)
            worker = RolloutWorker(cfg)
            worker.close()
            assert worker.torch_threads == threads == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
