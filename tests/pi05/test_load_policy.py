"""policies/loading.py: an openpi checkpoint folder served as it is, and prunepi's unchanged.

The openpi folder is tests/openpi_folder.py's: openpi's own tiny π0.5 weights, openpi's
converter config.json and assets/physical-intelligence/libero/norm_stats.json (no Ray).
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from policies.loading import LoadOptions, load_policy, plan_load
from policies.normalize import NormStats
from policies.pi05.checkpoint import CheckpointError, load_openpi_weights, save_openpi_weights
from policies.pi05.config import tiny
from policies.pi05.model import Pi05Model
from policies.policy import Policy, PolicyConfig, save_checkpoint, set_policy_fields
from policies.pruning.config import PrunerConfig
from policies.tokenizer import train_sentencepiece
from tests.openpi_folder import (
    ASSET_ID,
    fixture_model_config,
    libero_observation,
    make_openpi_folder,
    make_tokenizer,
    write_norm_stats,
)

KEEP = PrunerConfig(enabled=True, scorer="lightvla", budget="keep_tokens", keep_tokens=20)
LOWRANK = PrunerConfig(enabled=True, scorer="lowrank", budget="keep_tokens", keep_tokens=20)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_openpi_folder(tmp_path_factory.mktemp("openpi") / "pi05_libero_tiny")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tok.model")


def options(tokenizer, **kw) -> LoadOptions:
    return LoadOptions(
        model_config=str(fixture_model_config()), tokenizer_path=str(tokenizer), **kw
    )


def test_openpi_folder_infers_pruned_and_unpruned(folder, tokenizer):
    torch.set_num_threads(1)
    full = load_policy(folder, options(tokenizer))
    pruned = load_policy(folder, options(tokenizer, pruning=KEEP))
    # openpi's weights, openpi's norm stats, dims from the norm stats' lengths
    ref = load_file(folder / "model.safetensors")
    assert torch.equal(full.model.action_in_proj.weight, ref["action_in_proj.weight"])
    body = json.loads((folder / "assets" / ASSET_ID / "norm_stats.json").read_text())
    q99 = np.asarray(body["norm_stats"]["actions"]["q99"], np.float32)
    np.testing.assert_array_equal(full.norm_stats["actions"].q99, q99)
    assert (full.config.asset_id, full.config.state_dim, full.config.env_action_dim) == (
        ASSET_ID,
        8,
        7,
    )
    assert full.metadata == {
        "action_horizon": 10,
        "action_dim": 7,
        "image_size": 224,
        "total_tokens": 768,
        "pruning": False,
    }
    assert pruned.metadata["pruning"] is True
    obs = libero_observation(np.random.default_rng(0))
    a, b = full.infer(obs), pruned.infer(obs)
    assert a["actions"].shape == b["actions"].shape == (10, 7)
    assert np.isfinite(a["actions"]).all() and np.isfinite(b["actions"]).all()
    # LIBERO's third camera is absent (masked): 2 x 256 valid patches unpruned, 20 kept
    assert a["pruning"] == {"kept_tokens": 512, "total_tokens": 768}
    assert b["pruning"] == {"kept_tokens": 20, "total_tokens": 768}
    assert not np.allclose(a["actions"], b["actions"])
    np.testing.assert_array_equal(b["actions"], pruned.infer(obs)["actions"])  # seeded noise


def test_prunepi_folder_loads_as_before(tmp_path, tokenizer):
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny(), pruning=KEEP)
    rng = np.random.default_rng(0)
    stats = {
        "state": NormStats.from_data(rng.normal(size=(64, 8))),
        "actions": NormStats.from_data(rng.normal(size=(64, 7))),
    }
    ckpt = save_checkpoint(tmp_path / "ck", Pi05Model(cfg), PolicyConfig(), tokenizer, stats)
    ours, before = load_policy(ckpt), Policy.from_checkpoint(ckpt)
    assert plan_load(ckpt).layout == "prunepi"
    obs = libero_observation(rng, size=112)
    np.testing.assert_array_equal(ours.infer(obs)["actions"], before.infer(obs)["actions"])
    # a pruner given at load replaces the checkpoint's (eval-time budget)
    wider = load_policy(ckpt, LoadOptions(pruning=dataclasses.replace(KEEP, keep_tokens=40)))
    assert wider.infer(obs)["pruning"]["kept_tokens"] == 40
    with pytest.raises(CheckpointError, match="preset, tokenizer_path apply to openpi"):
        plan_load(ckpt, LoadOptions(preset="tiny", tokenizer_path=str(tokenizer)))
    (ckpt / "assets" / "prunepi" / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match=r"is missing assets/prunepi/tokenizer.model"):
        plan_load(ckpt)


def test_missing_tokenizer_names_paligemmas(folder):
    with pytest.raises(CheckpointError, match="carries no tokenizer.*paligemma_tokenizer.model"):
        plan_load(folder, LoadOptions(model_config=str(fixture_model_config())))
    with pytest.raises(CheckpointError, match="tokenizer_path must be a sentencepiece"):
        plan_load(folder, LoadOptions(model_config=str(fixture_model_config()), tokenizer_path="x"))


def test_missing_norm_stats_and_ambiguous_asset_ids(tmp_path, tokenizer):
    ck = make_openpi_folder(tmp_path / "ck")
    shutil.rmtree(ck / "assets")
    with pytest.raises(CheckpointError, match=r"no assets/<asset_id>/norm_stats.json.*norm_stats"):
        plan_load(ck, options(tokenizer))
    other = write_norm_stats(tmp_path / "elsewhere", "x", seed=1)
    plan = plan_load(ck, options(tokenizer, norm_stats=str(other.parent)))
    assert plan.norm_stats == other
    write_norm_stats(ck, ASSET_ID)
    write_norm_stats(ck, "physical-intelligence/droid", seed=2)
    with pytest.raises(CheckpointError, match=r"several asset ids \['physical-intelligence/droid'"):
        plan_load(ck, options(tokenizer))
    assert plan_load(ck, options(tokenizer, asset_id=ASSET_ID)).policy.asset_id == ASSET_ID
    with pytest.raises(CheckpointError, match=r"asset_id 'libero': .* does not exist"):
        plan_load(ck, options(tokenizer, asset_id="libero"))
    with pytest.raises(CheckpointError, match=r"asset_id must be a relative path.*'\.\./x'"):
        plan_load(ck, options(tokenizer, asset_id="../x"))
    with pytest.raises(CheckpointError, match=r"state_dim must be in \[1, 8\].*got 9"):
        plan_load(ck, options(tokenizer, asset_id=ASSET_ID, state_dim=9))


def test_preset_that_does_not_match_the_weights_names_field_key_and_shapes(folder, tokenizer):
    with pytest.raises(CheckpointError) as e:
        plan_load(folder, LoadOptions(preset="pi05_libero", tokenizer_path=str(tokenizer)))
    msg = str(e.value)
    assert "does not match preset 'pi05_libero'" in msg
    assert "vision.width = 1152 but the checkpoint has 32" in msg
    assert (
        "key 'action_in_proj.weight': checkpoint shape [32, 32] != preset 'pi05_libero' shape "
        "[1024, 32]" in msg
    )
    with pytest.raises(CheckpointError, match="exactly one of preset .* or model_config"):
        plan_load(folder, LoadOptions(tokenizer_path=str(tokenizer)))
    # openpi's converter config.json records the horizon the shapes cannot tell
    with pytest.raises(CheckpointError, match="says action_horizon 10 but preset 'pi05' has 50"):
        plan_load(folder, LoadOptions(preset="pi05", tokenizer_path=str(tokenizer)))


def test_tokenizer_with_more_pieces_than_embedding_rows(tmp_path, folder):
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(400)]
    texts = [" ".join(rng.choice(words, 8)) for _ in range(200)]
    big = train_sentencepiece(texts, tmp_path / "big.model", 2000)
    with pytest.raises(CheckpointError, match=r"2000 pieces, more than the 1024 rows"):
        plan_load(folder, options(big))


def test_learnable_scorer_without_pruner_weights_is_refused(tmp_path, folder, tokenizer):
    with pytest.raises(CheckpointError, match=r"'lowrank' has learnable weights.*pruner"):
        plan_load(folder, options(tokenizer, pruning=LOWRANK))
    # the weights loader itself: "required" refuses, "init" (fine-tuning) keeps the init
    cfg = dataclasses.replace(tiny(), pruning=LOWRANK)
    model = Pi05Model(cfg)
    save_openpi_weights(model, tmp_path)
    (tmp_path / "pruner.safetensors").unlink()  # as an openpi checkpoint: no pruner weights
    before = {k: v.clone() for k, v in model.pruner.state_dict().items()}
    with pytest.raises(CheckpointError, match="pruner.safetensors does not exist"):
        load_openpi_weights(Pi05Model(cfg), tmp_path / "model.safetensors")
    load_openpi_weights(model, tmp_path / "model.safetensors", pruner="init")
    assert all(torch.equal(v, before[k]) for k, v in model.pruner.state_dict().items())
    with pytest.raises(ValueError, match="pruner must be one of"):
        load_openpi_weights(model, tmp_path / "model.safetensors", pruner="skip")


def test_sampler_options_noise_seed_and_scale(tmp_path, tokenizer):
    """A prunepi checkpoint's sampler (PolicyConfig.noise_seed, noise_scale) is what it
    answers with; `noise_seed` given at load replaces it (the reference's was chosen on the
    selection block); noise_scale 0 starts every chunk from the Gaussian's mean."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    stats = {
        "state": NormStats.from_data(rng.normal(size=(64, 8))),
        "actions": NormStats.from_data(rng.normal(size=(64, 7))),
    }
    ckpt = save_checkpoint(tmp_path / "ck", Pi05Model(tiny()), PolicyConfig(), tokenizer, stats)
    obs = libero_observation(rng, size=112)
    seed0 = load_policy(ckpt).infer(obs)["actions"]
    seed2 = load_policy(ckpt, LoadOptions(noise_seed=2)).infer(obs)["actions"]
    assert not np.allclose(seed0, seed2)
    set_policy_fields(ckpt, {"noise_seed": 2})
    assert load_policy(ckpt).config.noise_seed == 2
    np.testing.assert_array_equal(load_policy(ckpt).infer(obs)["actions"], seed2)
    with pytest.raises(CheckpointError, match="noise_seed must be an int >= 0, got -1"):
        plan_load(ckpt, LoadOptions(noise_seed=-1))
    with pytest.raises(ValueError, match="PolicyConfig fields, got \\['noise_sed'\\]"):
        set_policy_fields(ckpt, {"noise_sed": 1})
    with pytest.raises(ValueError, match="policy.noise_scale must be a real >= 0, got -0.5"):
        set_policy_fields(ckpt, {"noise_scale": -0.5})
    set_policy_fields(ckpt, {"noise_scale": 0.0})
    zero = [load_policy(ckpt, LoadOptions(noise_seed=s)).infer(obs)["actions"] for s in (0, 5)]
    np.testing.assert_array_equal(zero[0], zero[1])  # no draw left to seed
    assert not np.allclose(zero[0], seed2)
