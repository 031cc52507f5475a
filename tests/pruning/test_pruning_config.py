"""PrunerConfig / NoiseScheduleConfig validation and (de)serialisation."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from policies.pruning import NoiseScheduleConfig, PrunerConfig, TokenPruner


def test_defaults_are_valid():
    PrunerConfig().validate()
    NoiseScheduleConfig().validate()
    for kind in ("none", "constant", "linear", "cosine", "gap"):
        PrunerConfig(noise=NoiseScheduleConfig(kind=kind)).validate()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("keep_ratio", 1.5, "pruning.keep_ratio must be in (0, 1], got 1.5"),
        ("keep_ratio", 0.0, "pruning.keep_ratio must be in (0, 1], got 0.0"),
        ("keep_tokens", 0, "pruning.keep_tokens must be an integer >= 1, got 0"),
        ("min_keep", 0, "pruning.min_keep must be an integer >= 1, got 0"),
        ("temperature", 0.0, "pruning.temperature must be > 0, got 0.0"),
        ("residual_alpha", -0.1, "pruning.residual_alpha must be >= 0, got -0.1"),
        ("lowrank_rank", 0, "pruning.lowrank_rank must be an integer >= 1, got 0"),
        ("scorer", "gumbel", "pruning.scorer must be one of"),
        ("budget", "topk", "pruning.budget must be one of"),
        ("position_ids", "rope", "pruning.position_ids must be one of"),
        ("buckets", (64, 32), "pruning.buckets must be strictly increasing integers >= 1"),
        ("buckets", (0, 32), "pruning.buckets must be strictly increasing"),
        ("trim_prompt_padding", "yes", "pruning.trim_prompt_padding must be a bool"),
        ("train_tokens", "dropped", "pruning.train_tokens must be one of ('copies', 'masked')"),
    ],
)
def test_validation_names_field_and_value(field, value, message):
    cfg = dataclasses.replace(PrunerConfig(), **{field: value})
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        cfg.validate()
    assert repr(value) in str(e.value)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("kind", "exp", "pruning.noise.kind must be one of"),
        ("scale", -1.0, "pruning.noise.scale must be >= 0, got -1.0"),
        ("total_steps", 0, "pruning.noise.total_steps must be an integer >= 1, got 0"),
        ("final_scale", -0.5, "pruning.noise.final_scale must be >= 0, got -0.5"),
    ],
)
def test_noise_validation_names_field_and_value(field, value, message):
    noise = dataclasses.replace(NoiseScheduleConfig(), **{field: value})
    with pytest.raises(ValueError, match=re.escape(message)):
        PrunerConfig(noise=noise).validate()


def test_pruner_validates_its_config():
    with pytest.raises(ValueError, match="pruning.keep_ratio"):
        TokenPruner(PrunerConfig(keep_ratio=2.0), 16)
    with pytest.raises(ValueError, match="pruning.lowrank_rank must be <= width 16, got 32"):
        TokenPruner(PrunerConfig(scorer="lowrank", lowrank_rank=32), 16)


def test_dict_round_trip_through_json():
    cfg = PrunerConfig(
        enabled=True,
        scorer="lowrank",
        budget="keep_ratio",
        buckets=(32, 64, 128),
        noise=NoiseScheduleConfig(kind="cosine", scale=0.5, total_steps=10),
    )
    back = PrunerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    back.validate()
