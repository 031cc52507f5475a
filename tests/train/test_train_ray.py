"""Ray Train on a real local Ray, 2 CPU workers (DDP over gloo), tiny preset with the
pruner on, on a dataset collected by the scripted experts.

Three runs of the same config (16 steps, checkpoint every 4):
  straight     uninterrupted; loss, metric names, wandb files, checkpoint contract;
  interrupted  rank 1 dies (os._exit) before step 7, Ray restarts the group from
               checkpoint 4, and the invocation stops after step 8 (`stop_after`);
  resumed      `resume=True` continues the interrupted run to step 16.
The resumed run must end with the straight run's weights and have the same metrics.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from policies.pruning import METRIC_NAMES
from policies.pruning.config import PrunerConfig
from services.train import TrainConfig, run_train
from services.train.metrics import read_metrics
from services.train.state import STATE_FILE, list_checkpoints, read_state_json

pytestmark = pytest.mark.ray

STEPS = 16
BASE = dict(
    preset="tiny",
    workers=2,
    batch_size=4,
    steps=STEPS,
    lr=3e-3,
    warmup_steps=2,
    save_every=4,
    image_size=56,  # 16 patches per camera
    max_token_len=48,  # the collected task strings need ~40 tokens
    pruning=PrunerConfig(enabled=True),
    cpus_per_worker=0.5,
    wandb_mode="disabled",
    seed=0,
)
TIMING = ("train/samples_per_s", "train/step_s")


@pytest.fixture(scope="module")
def straight(collected, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    return run_train(
        TrainConfig(**{**BASE, "wandb_mode": "offline"}, data=str(collected), out=str(out))
    )


@pytest.fixture(scope="module")
def interrupted(collected, tmp_path_factory):
    out = tmp_path_factory.mktemp("interrupted") / "run"
    cfg = TrainConfig(**BASE, data=str(collected), out=str(out))
    run = run_train(dataclasses.replace(cfg, fail_at_step=7, stop_after=8))
    first = read_metrics(run)
    checkpoints = [s for s, _ in list_checkpoints(run)]
    shutil.copytree(run / "checkpoints" / "8", run.parent / "ckpt8")
    run_train(dataclasses.replace(cfg, resume=True))
    return run, first, checkpoints


def _losses(metrics):
    return [m["train/loss"] for m in metrics]


def test_loss_falls(straight):
    loss = _losses(read_metrics(straight))
    assert len(loss) == STEPS
    first, last = sum(loss[:4]) / 4, sum(loss[-4:]) / 4
    assert last < first - 0.05, loss


def test_metrics_every_step_with_every_name(straight):
    metrics = read_metrics(straight)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    required = {*METRIC_NAMES, "train/loss", "train/lr", "train/samples_per_s", "step"}
    for m in metrics:
        assert required <= set(m), required - set(m)
    noise = [m["prune/noise_scale"] for m in metrics]  # LightVLA: 1 - step / total_steps
    assert noise[0] == pytest.approx(1.0) and noise[-1] == pytest.approx(1 / STEPS)
    assert list((straight / "wandb").glob("offline-run-*"))  # wandb offline, inside RUN


def test_checkpoints_follow_the_contract(straight):
    assert [s for s, _ in list_checkpoints(straight)] == [4, 8, 12, 16]
    last = straight / "checkpoints" / "16"
    state = read_state_json(last)
    assert state["step"] == 16 and state["world_size"] == 2
    assert state["data"]["batch_in_epoch"] == 16 % state["data"]["steps_per_epoch"]
    assert (last / "assets" / "prunepi" / "norm_stats.json").is_file()
    assert (last / "assets" / "prunepi" / "tokenizer.model").is_file()
    cfg = json.loads((last / "config.json").read_text())
    assert cfg["model"]["pruning"]["enabled"] and cfg["policy"]["env_action_dim"] == 7


def test_worker_kill_recovers_without_losing_steps(interrupted, straight):
    run, first, checkpoints = interrupted
    assert (run / ".fail_at_step_7.done").is_file()  # rank 1 did die once
    assert [m["step"] for m in first] == list(range(1, 9))  # each step exactly once
    assert checkpoints == [4, 8]
    # Steps 5-7 ran twice (before the kill and after the restart from checkpoint 4); what
    # was kept equals the straight run's: the replay is exact.
    ref = read_metrics(straight)[:8]
    for a, b in zip(first, ref):
        assert {k: v for k, v in a.items() if k not in TIMING} == {
            k: v for k, v in b.items() if k not in TIMING
        }
    for f in ("model.safetensors", STATE_FILE):
        a, b = load_file(run.parent / "ckpt8" / f), load_file(straight / "checkpoints" / "8" / f)
        assert all(torch.equal(a[k], b[k]) for k in b), f


def test_resume_matches_the_straight_run(interrupted, straight):
    run, _, _ = interrupted
    resumed, ref = read_metrics(run), read_metrics(straight)
    assert [m["step"] for m in resumed] == list(range(1, STEPS + 1))
    for a, b in zip(resumed, ref):
        assert {k: v for k, v in a.items() if k not in TIMING} == {
            k: v for k, v in b.items() if k not in TIMING
        }
    for f in ("model.safetensors", STATE_FILE):
        a = load_file(run / "checkpoints" / "16" / f)
        b = load_file(straight / "checkpoints" / "16" / f)
        assert a.keys() == b.keys()
        for k in b:
            assert torch.equal(a[k], b[k]), (f, k)  # bit-exact, as the README says
