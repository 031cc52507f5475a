"""Checkpoints and training state without Ray: exact in-process resume (EMA + pruner),
the checkpoint contract, and refusal of corrupted or partial checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from policies.normalize import load_norm_stats
from policies.pi05.checkpoint import CheckpointError
from policies.policy import Policy, load_checkpoint
from policies.pruning.config import PrunerConfig
from services.train import TrainConfig, run_train
from services.train.data import StepBatches, open_dataset
from services.train.driver import absolute, model_config, prepare_assets
from services.train.ema import EMA
from services.train.state import (
    STATE_FILE,
    STATE_JSON,
    checkpoint_dir,
    load_train_checkpoint,
    save_train_checkpoint,
    verify_checkpoint,
)
from services.train.step import Stepper, make_optimizer
from services.train.worker import build_model
from tests.fixtures import openpi_fixture_dir


def make_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        steps=6,
        batch_size=2,
        lr=3e-3,
        warmup_steps=1,
        image_size=28,
        ema_decay=0.9,
        pruning=PrunerConfig(enabled=True),
        wandb_mode="disabled",
    )
    return absolute(TrainConfig(**{**base, **kw})).resolved()


class Trainer:
    """The worker's objects, in one process (world size 1)."""

    def __init__(self, cfg: TrainConfig):
        run = Path(cfg.out)
        self.cfg, self.mc = cfg, model_config(cfg)
        self.policy_cfg, stats_path, self.tok = prepare_assets(cfg, run, self.mc)
        self.stats = load_norm_stats(stats_path)
        self.model = build_model(self.mc, cfg).train()  # seeded; init_from; checkpointing
        self.opt = make_optimizer(self.model, cfg)
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.step = Stepper(cfg, self.model, self.model, self.opt, self.ema, 0, torch.device("cpu"))
        ds = open_dataset(cfg.data, self.mc.action_horizon)
        self.batches = StepBatches(
            ds,
            self.mc,
            self.policy_cfg,
            self.tok,
            self.stats,
            batch_size=2,
            seed=0,
            rank=0,
            world=1,
        )

    def run(self, start: int, stop: int) -> list[dict]:
        return [self.step(*self.batches[s], s) for s in range(start, stop)]

    def save(self, folder: Path, step: int) -> Path:
        state = {"step": step, "data": {"num_samples": self.batches.num_samples}}
        return save_train_checkpoint(
            folder, self.model, self.opt, self.ema, self.policy_cfg, self.tok, self.stats, state
        )


@pytest.fixture(scope="module")
def halves(tiny_lerobot, tmp_path_factory):
    """3 steps straight vs 1 step, checkpoint, fresh objects, load, 2 steps."""
    out = tmp_path_factory.mktemp("state")
    cfg = make_cfg(tiny_lerobot, out / "a")
    straight = Trainer(cfg)
    m_straight = straight.run(0, 3)
    first = Trainer(dataclasses.replace(cfg, out=str(out / "b")))
    m_first = first.run(0, 1)
    ckpt = first.save(checkpoint_dir(out / "b", 1), 1)
    second = Trainer(dataclasses.replace(cfg, out=str(out / "b")))
    state = load_train_checkpoint(ckpt, second.model, second.opt, second.ema)
    m_second = second.run(state["step"], 3)
    return cfg, straight, second, m_straight, m_first + m_second, ckpt


def test_resume_is_exact(halves):
    cfg, straight, resumed, m_straight, m_resumed, _ = halves
    assert m_straight == m_resumed  # loss, grad norm and every prune/* metric, bitwise
    for (n, p), (_, q) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n
    for n in straight.ema.shadow:
        assert torch.equal(straight.ema.shadow[n], resumed.ema.shadow[n]), n
    sa, sb = straight.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[i][k], sb[i][k])


def test_checkpoint_holds_ema_weights_and_loads_as_a_policy(halves):
    cfg, _, _, _, _, ckpt = halves
    assert {p.name for p in ckpt.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "assets",
        STATE_FILE,
        STATE_JSON,
    }
    ts = load_file(ckpt / STATE_FILE)
    model, *_ = load_checkpoint(ckpt)
    for n, p in model.named_parameters():  # model.safetensors = the EMA, train_state = raw
        assert torch.equal(p, ts[f"ema.{n}"].to(p.dtype)), n
    assert any(
        not torch.equal(ts[f"ema.{n}"], ts[f"param.{n}"]) for n, _ in model.named_parameters()
    )
    policy = Policy.from_checkpoint(ckpt)
    ds = open_dataset(cfg.data, policy.model.config.action_horizon)
    out = policy.infer(ds[0])
    assert out["actions"].shape == (policy.model.config.action_horizon, 7)
    assert 1 <= out["pruning"]["kept_tokens"] <= out["pruning"]["total_tokens"]


# ---------------------------------------------------------------------------------------
# Corrupted / partial checkpoints are refused, naming the file and the key


@pytest.fixture
def broken_run(halves, tmp_path):
    """A RUN folder whose only checkpoint (step 1) is a copy of a good one."""
    cfg, *_, ckpt = halves
    run = tmp_path / "run"
    shutil.copytree(ckpt, checkpoint_dir(run, 1))
    bad_cfg = dataclasses.replace(cfg, out=str(run), resume=True)
    return bad_cfg, checkpoint_dir(run, 1)


def _refused(cfg: TrainConfig, *needles: str) -> None:
    with pytest.raises(CheckpointError) as e:
        run_train(cfg)  # refused in the driver, before Ray starts
    for needle in needles:
        assert needle in str(e.value), str(e.value)


def test_truncated_model_is_refused(broken_run):
    cfg, ckpt = broken_run
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    _refused(cfg, "model.safetensors", "not a readable safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(ckpt)


def test_missing_train_state_is_refused(broken_run):
    cfg, ckpt = broken_run
    (ckpt / STATE_JSON).unlink()
    _refused(cfg, "train_state.json is missing")


def test_truncated_train_state_is_refused(broken_run):
    cfg, ckpt = broken_run
    data = (ckpt / STATE_FILE).read_bytes()
    (ckpt / STATE_FILE).write_bytes(data[:100])
    _refused(cfg, STATE_FILE)


def test_wrong_shapes_are_refused(broken_run):
    cfg, ckpt = broken_run
    good = load_file(ckpt / "model.safetensors")
    key = "action_in_proj.weight"
    save_file({**good, key: torch.zeros(3, 3)}, ckpt / "model.safetensors")
    _refused(cfg, "model.safetensors", key, "[3, 3]")
    save_file(good, ckpt / "model.safetensors")
    ts = load_file(ckpt / STATE_FILE)
    name = next(k for k in ts if k.startswith("opt.") and k.endswith(".exp_avg"))
    ts[name] = torch.zeros(2)
    save_file(ts, ckpt / STATE_FILE)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        verify_checkpoint(ckpt, model_config(cfg), ema=True)


def test_bad_train_state_json_is_refused(broken_run):
    cfg, ckpt = broken_run
    (ckpt / STATE_JSON).write_text(json.dumps({"format": "prunepi.train_state/1", "step": -3}))
    _refused(cfg, STATE_JSON, "'data'")


def test_other_model_config_is_refused(broken_run):
    cfg, ckpt = broken_run
    _refused(dataclasses.replace(cfg, image_size=56), "config.json", "vision.image_size")


def test_fresh_run_refuses_to_overwrite_checkpoints(broken_run):
    cfg, _ = broken_run
    with pytest.raises(ValueError, match="already holds checkpoints"):
        run_train(dataclasses.replace(cfg, resume=False))


# ---------------------------------------------------------------------------------------
# Starting points


@pytest.mark.parametrize("source", ["openpi", "prunepi"])
def test_init_from_a_checkpoint(source, halves, tiny_lerobot, tmp_path):
    if source == "openpi":
        # Saved by openpi's PI0Pytorch: sizes come from the weights. Fails, never skips,
        # when the committed fixture is missing.
        folder = openpi_fixture_dir()
        # An openpi checkpoint carries no tokenizer, and fitting one is refused for init_from
        # (services/train/driver.py `tokenizer_source`): bring one that fits its 1024 rows.
        from policies.tokenizer import train_sentencepiece

        tok = train_sentencepiece(["pick up the red block"], tmp_path / "tok.model", 300)
        extra = {"tokenizer_path": str(tok)}
    else:
        folder = halves[-1]  # one of ours: sizes from its config.json
        extra = {}
    cfg = make_cfg(tiny_lerobot, tmp_path / "run", init_from=str(folder), image_size=None, **extra)
    mc = model_config(cfg)
    model = build_model(mc, cfg)
    weights = load_file(folder / "model.safetensors")
    for key in ("action_in_proj.weight", "time_mlp_out.bias"):
        assert torch.equal(model.state_dict()[key], weights[key])
    embed = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
    assert torch.equal(
        model.state_dict()[embed], weights["paligemma_with_expert.paligemma.lm_head.weight"]
    )
    trainer = Trainer(cfg)  # and it trains
    trainer.model.load_state_dict(model.state_dict())
    assert all(math.isfinite(m["train/loss"]) for m in trainer.run(0, 1))


def test_prune_checkpoints_keeps_the_newest(tmp_path):
    from services.train.state import list_checkpoints, prune_checkpoints

    for step in (3, 10, 7, 1):
        (checkpoint_dir(tmp_path, step)).mkdir(parents=True)
    (tmp_path / "checkpoints" / "12.abc.tmp").mkdir()  # an unfinished save is not a checkpoint
    assert prune_checkpoints(tmp_path, None) == []
    assert prune_checkpoints(tmp_path, 2) == [1, 3]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [7, 10]


def test_bf16_with_gradient_checkpointing_trains_and_checkpoints(tiny_lerobot, tmp_path):
    """openpi's pi05_libero precision recipe on the tiny model (CPU): bf16 weights with the
    fp32 keep-list, activation checkpointing, EMA kept in fp32."""
    cfg = make_cfg(
        tiny_lerobot, tmp_path / "run", precision="bfloat16", gradient_checkpointing=True
    )
    t = Trainer(cfg)
    assert t.model.gradient_checkpointing and t.model.compute_dtype == torch.bfloat16
    assert all(math.isfinite(m["train/loss"]) for m in t.run(0, 2))
    assert all(v.dtype == torch.float32 for v in t.ema.shadow.values())
    ckpt = t.save(checkpoint_dir(tmp_path / "run", 2), 2)
    verify_checkpoint(ckpt, t.mc, ema=True)
    fresh = Trainer(cfg)
    load_train_checkpoint(ckpt, fresh.model, fresh.opt, fresh.ema)
    for (n, p), (_, q) in zip(t.model.named_parameters(), fresh.model.named_parameters()):
        assert p.dtype == q.dtype and torch.equal(p, q), n


def test_export_policy_drops_train_state_and_loads(tmp_path):
    """models/reference/ is a run's last checkpoint without its optimizer state."""
    from services.train.export import export_policy

    run = tmp_path / "run"
    for step in (1, 2):
        folder = run / "checkpoints" / str(step)
        folder.mkdir(parents=True)
        (folder / "marker").write_text(str(step))
    (run / "checkpoints" / "2" / STATE_FILE).write_bytes(b"optimizer")
    dest = export_policy(run, tmp_path / "models" / "ref")
    assert (dest / "marker").read_text() == "2" and not (dest / STATE_FILE).exists()
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        export_policy(tmp_path / "empty", tmp_path / "x")
