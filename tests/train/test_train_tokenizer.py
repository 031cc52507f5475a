"""The tokenizer trap of `--init-from`, and nested (openpi-style) asset ids. No Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policies.normalize import NormStats
from policies.pi05.config import tiny
from policies.pi05.model import Pi05Model
from policies.policy import PolicyConfig, save_checkpoint
from policies.tokenizer import train_sentencepiece
from services.train import TrainConfig
from services.train.driver import absolute, model_config, prepare_assets
from tests.fixtures import openpi_fixture_dir

OPENPI_ASSET_ID = "physical-intelligence/libero"


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    cfg = absolute(TrainConfig(data=str(data), out=str(out), **kw)).resolved()
    cfg.validate()
    return cfg


@pytest.mark.parametrize("as_file", [False, True])
def test_init_from_openpi_without_tokenizer_is_refused(tiny_lerobot, tmp_path, as_file):
    init = openpi_fixture_dir() / ("model.safetensors" if as_file else "")
    cfg = _config(tiny_lerobot, tmp_path / "run", init_from=str(init))
    with pytest.raises(ValueError, match="tokenizer_path is empty") as e:
        prepare_assets(cfg, Path(cfg.out), model_config(cfg))
    assert "index unrelated rows" in str(e.value) and "paligemma_tokenizer.model" in str(e.value)
    # refused before the norm stats were computed, and nothing was fitted
    assert not any((Path(cfg.out) / "assets").rglob("*"))


def test_init_from_openpi_with_tokenizer_checks_embedding_rows(tiny_lerobot, tmp_path):
    init = str(openpi_fixture_dir())
    small = train_sentencepiece(["pick up the red block"], tmp_path / "small.model", 300)
    cfg = _config(tiny_lerobot, tmp_path / "ok", init_from=init, tokenizer_path=str(small))
    _, _, tok = prepare_assets(cfg, Path(cfg.out), model_config(cfg))
    assert tok.read_bytes() == small.read_bytes()
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(400)]
    big = train_sentencepiece(
        [" ".join(rng.choice(words, 8)) for _ in range(200)], tmp_path / "big.model", 2000
    )
    cfg = _config(tiny_lerobot, tmp_path / "big", init_from=init, tokenizer_path=str(big))
    with pytest.raises(ValueError) as e:
        prepare_assets(cfg, Path(cfg.out), model_config(cfg))
    msg = str(e.value)
    assert "has 2000 pieces, more than the 1024 rows of the token embedding" in msg
    assert str(big) in msg and str(openpi_fixture_dir() / "model.safetensors") in msg


def test_init_from_prunepi_checkpoint_reuses_its_tokenizer(tiny_lerobot, tmp_path):
    torch.manual_seed(0)
    tok = train_sentencepiece(["open the top drawer"], tmp_path / "own.model", 300)
    rng = np.random.default_rng(0)
    stats = {
        "state": NormStats.from_data(rng.normal(size=(32, 8))),
        "actions": NormStats.from_data(rng.normal(size=(32, 7))),
    }
    ckpt = save_checkpoint(
        tmp_path / "ck", Pi05Model(tiny()), PolicyConfig(asset_id="a/b"), tok, stats
    )
    assert (ckpt / "assets" / "a" / "b" / "tokenizer.model").is_file()
    cfg = _config(tiny_lerobot, tmp_path / "run", init_from=str(ckpt))
    _, _, got = prepare_assets(cfg, Path(cfg.out), model_config(cfg))
    assert got.read_bytes() == tok.read_bytes()


def test_from_scratch_still_fits_a_tokenizer_under_a_nested_asset_id(tiny_lerobot, tmp_path):
    cfg = _config(tiny_lerobot, tmp_path / "run", asset_id=OPENPI_ASSET_ID)
    policy_cfg, stats, tok = prepare_assets(cfg, Path(cfg.out), model_config(cfg))
    assert policy_cfg.asset_id == OPENPI_ASSET_ID
    assert (
        stats == Path(cfg.out) / "assets" / "physical-intelligence" / "libero" / "norm_stats.json"
    )
    assert tok.parent == stats.parent and tok.is_file()


@pytest.mark.parametrize("bad", ["", "/abs/x", "../x", "a/../b", "a//b", "a/", "./a", "a\\b"])
def test_asset_ids_that_could_leave_assets_are_refused(bad):
    with pytest.raises(ValueError, match="train.asset_id must be a relative path") as e:
        TrainConfig(data="d", asset_id=bad).resolved().validate()
    assert str(e.value).endswith(f"got {bad!r}")
    with pytest.raises(ValueError, match="policy.asset_id must be a relative path"):
        PolicyConfig(asset_id=bad).validate()
    PolicyConfig(asset_id=OPENPI_ASSET_ID).validate()
