"""Data side: deterministic disjoint shards, norm stats, batches, assets (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policies.normalize import NormStats, load_norm_stats
from policies.pi05.model import Observation
from policies.tokenizer import PromptTokenizer
from services.train import TrainConfig
from services.train.data import (
    StepBatches,
    augment_observation,
    compute_norm_stats,
    global_batch,
    open_dataset,
    rank_batch,
    read_column,
)
from services.train.driver import absolute, model_config, prepare_assets


def test_shards_are_disjoint_deterministic_and_world_size_free():
    n, B, seed = 50, 8, 3
    spe = n // B
    for step in range(3 * spe):
        g = global_batch(n, B, seed, step)
        assert len(set(g.tolist())) == B
        for world in (1, 2, 4):
            parts = [rank_batch(n, B, seed, step, r, world) for r in range(world)]
            assert np.array_equal(np.concatenate(parts), g)  # disjoint, union = global batch
        assert np.array_equal(
            rank_batch(n, B, seed, step, 1, 2), rank_batch(n, B, seed, step, 1, 2)
        )
    epoch0 = np.concatenate([global_batch(n, B, seed, s) for s in range(spe)])
    assert len(set(epoch0.tolist())) == spe * B  # an epoch visits distinct samples
    epoch1 = np.concatenate([global_batch(n, B, seed, s) for s in range(spe, 2 * spe)])
    assert not np.array_equal(epoch0, epoch1)  # reshuffled per epoch
    assert not np.array_equal(global_batch(n, B, seed + 1, 0), global_batch(n, B, seed, 0))
    with pytest.raises(ValueError, match="batch_size"):
        global_batch(4, 8, 0, 0)


def test_norm_stats_are_the_datasets_quantiles(tiny_lerobot):
    stats = compute_norm_stats(tiny_lerobot)
    states = read_column(tiny_lerobot, "state")
    assert states.shape == (64, 8)
    np.testing.assert_allclose(stats["state"].q99, np.quantile(states, 0.99, axis=0), rtol=1e-5)
    assert stats["actions"].q01.shape == (7,)


@pytest.fixture(scope="module")
def assets(tiny_lerobot, tmp_path_factory):
    cfg = absolute(
        TrainConfig(data=str(tiny_lerobot), out=str(tmp_path_factory.mktemp("run")), image_size=56)
    ).resolved()
    mc = model_config(cfg)
    return cfg, mc, *prepare_assets(cfg, tmp_path_factory.mktemp("run2"), mc)


def test_assets_tokenizer_fits_the_model(assets):
    cfg, mc, policy_cfg, stats_path, tok_path = assets
    tok = PromptTokenizer(tok_path, mc.max_token_len)
    assert tok.vocab_size <= mc.vocab_size
    assert (policy_cfg.state_dim, policy_cfg.env_action_dim) == (8, 7)
    assert set(load_norm_stats(stats_path)) == {"state", "actions"}


def test_batches_normalize_and_pad_actions(assets):
    cfg, mc, policy_cfg, stats_path, tok_path = assets
    stats = load_norm_stats(stats_path)
    ds = open_dataset(cfg.data, mc.action_horizon)
    b = StepBatches(ds, mc, policy_cfg, tok_path, stats, batch_size=4, seed=0, rank=1, world=2)
    obs, actions = b[5]
    assert isinstance(obs, Observation)
    assert actions.shape == (2, mc.action_horizon, mc.action_dim)
    assert torch.all(actions[..., 7:] == 0)  # zero-padded past the 7 real dims
    idx = b.indices(5)
    raw = np.stack([ds[int(i)]["actions"] for i in idx])
    np.testing.assert_allclose(actions[..., :7].numpy(), stats["actions"].normalize(raw), atol=1e-6)
    assert obs.images["base_0_rgb"].shape == (2, 3, 56, 56)
    assert not obs.image_masks["right_wrist_0_rgb"].any()
    assert obs.tokenized_prompt.shape == (2, mc.max_token_len)
    # Same step, same batch (a resumed run re-reads exactly this).
    obs2, actions2 = b[5]
    assert torch.equal(actions, actions2) and torch.equal(obs.state, obs2.state)


def test_augmentation_is_seeded_and_skips_absent_cameras(assets):
    cfg, mc, policy_cfg, stats_path, tok_path = assets
    ds = open_dataset(cfg.data, mc.action_horizon)
    stats = {k: v for k, v in load_norm_stats(stats_path).items()}
    assert all(isinstance(v, NormStats) for v in stats.values())
    obs, _ = StepBatches(
        ds, mc, policy_cfg, tok_path, stats, batch_size=4, seed=0, rank=0, world=1
    )[0]
    a = augment_observation(obs, torch.Generator().manual_seed(1))
    b = augment_observation(obs, torch.Generator().manual_seed(1))
    c = augment_observation(obs, torch.Generator().manual_seed(2))
    assert torch.equal(a.images["base_0_rgb"], b.images["base_0_rgb"])
    assert not torch.equal(a.images["base_0_rgb"], c.images["base_0_rgb"])
    assert not torch.equal(a.images["base_0_rgb"], obs.images["base_0_rgb"])
    assert torch.equal(a.images["right_wrist_0_rgb"], obs.images["right_wrist_0_rgb"])
    assert a.images["base_0_rgb"].min() >= -1 and a.images["base_0_rgb"].max() <= 1


def test_user_tokenizer_is_copied_and_checked_against_the_vocab(tiny_lerobot, tmp_path):
    from policies.tokenizer import train_sentencepiece

    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(400)]
    texts = [" ".join(rng.choice(words, 8)) for _ in range(200)]
    small = train_sentencepiece(["pick up the red block"], tmp_path / "small.model", 300)
    big = train_sentencepiece(texts, tmp_path / "big.model", 2000)  # > tiny's 512 ids
    for tok, ok in ((small, True), (big, False)):
        cfg = absolute(
            TrainConfig(
                data=str(tiny_lerobot), out=str(tmp_path / tok.stem), tokenizer_path=str(tok)
            )
        ).resolved()
        run = Path(cfg.out)
        if ok:
            _, _, tok_path = prepare_assets(cfg, run, model_config(cfg))
            assert tok_path.read_bytes() == tok.read_bytes()
        else:
            with pytest.raises(
                ValueError, match="2000 pieces, more than the model's vocab_size 512"
            ):
                prepare_assets(cfg, run, model_config(cfg))
