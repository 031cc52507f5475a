"""`prunepi rollout --checkpoint <openpi folder>`: the in-process worker loads an openpi
checkpoint folder as it is and runs an episode (RolloutWorker without Ray)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from policies.pi05.checkpoint import CheckpointError
from policies.pruning.config import PrunerConfig
from services.rollout.config import RolloutConfig
from services.rollout.worker import RolloutWorker
from tests.openpi_folder import fixture_model_config, make_openpi_folder, make_tokenizer

pytestmark = [pytest.mark.ray, pytest.mark.render]


@pytest.fixture(scope="module")
def openpi_cfg(tmp_path_factory) -> RolloutConfig:
    root = tmp_path_factory.mktemp("openpi_rollout")
    return RolloutConfig(
        checkpoint=str(make_openpi_folder(root / "ckpt")),
        model_config=str(fixture_model_config()),
        tokenizer_path=str(make_tokenizer(root / "tok.model")),
        pruning=PrunerConfig(enabled=True, budget="keep_tokens", keep_tokens=12),
        suite="goal",
        tasks=(0,),
        episodes_per_task=1,
        max_steps=10,
        image_size=64,  # rendered small; the policy letterboxes to its 224 px
        num_workers=1,
    )


def test_in_process_worker_rolls_out_an_openpi_folder(openpi_cfg):
    torch.set_num_threads(1)
    openpi_cfg.validate()
    worker = RolloutWorker(openpi_cfg)
    try:
        result = worker.run(0, 0)
    finally:
        worker.close()
    assert 1 <= result.length <= 10
    # one query per 5 executed actions (openpi's replan_steps), 12 of 768 tokens each
    assert result.kept_tokens == [12] * -(-result.length // 5)
    assert result.total_tokens == 768


def test_rollout_config_says_what_an_openpi_folder_lacks(openpi_cfg):
    with pytest.raises(CheckpointError, match="carries no tokenizer"):
        dataclasses.replace(openpi_cfg, tokenizer_path=None).validate()
    with pytest.raises(CheckpointError, match="exactly one of preset .* or model_config"):
        dataclasses.replace(openpi_cfg, model_config=None).validate()
    served = dataclasses.replace(openpi_cfg, checkpoint=None, policy="ws://127.0.0.1:1")
    with pytest.raises(ValueError, match="model_config, tokenizer_path, pruning apply to an in"):
        served.validate()
    with pytest.raises(CheckpointError, match="checkpoint must be a checkpoint folder"):
        dataclasses.replace(openpi_cfg, checkpoint="/nonexistent/ckpt").validate()
