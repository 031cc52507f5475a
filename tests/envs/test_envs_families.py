"""Suite families (envs/families.py): every suite name is answered by exactly one family,
and Meta-World is reachable through the same `envs.make` and rollout config as ours."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import envs
from envs.families import FAMILIES, METAWORLD_SUITE, all_suites, family_of
from services.rollout.config import RolloutConfig


def test_each_suite_has_one_family():
    names = all_suites()
    assert len(names) == len(set(names))
    assert {"spatial", "goal", "libero_goal", METAWORLD_SUITE} <= set(names)
    for family in FAMILIES:
        for suite in family.suites():
            assert family_of(suite) is family


def test_suite_facts_come_from_the_family():
    assert envs.suite_tasks("spatial") == (0, 1, 2, 3)
    assert envs.suite_warmup_steps("spatial") == 5
    assert envs.suite_warmup_steps("libero_goal") == 10  # openpi num_steps_wait
    assert envs.suite_max_steps("libero_10") == 520  # openpi's LIBERO limits
    assert envs.suite_num_init_states("libero_goal") == 50
    assert envs.suite_tasks(METAWORLD_SUITE) == tuple(range(10))
    assert envs.suite_max_steps(METAWORLD_SUITE) == 500
    assert envs.suite_warmup_steps(METAWORLD_SUITE) == 0


def test_unknown_suites_and_tasks_are_named():
    with pytest.raises(ValueError, match="suite: unknown suite 'nope'; expected one of"):
        envs.suite_tasks("nope")
    with pytest.raises(ValueError, match=r"task_id: 10 is out of range for suite 'metaworld_mt10'"):
        envs.make(METAWORLD_SUITE, 10)
    with pytest.raises(ValueError, match="init_spread: Meta-World uses its own fixed init states"):
        envs.make(METAWORLD_SUITE, 0, init_spread=0.01)


def test_rollout_config_takes_a_metaworld_suite():
    reference = Path(__file__).parents[2] / "models" / "reference"
    cfg = RolloutConfig(suite=METAWORLD_SUITE, checkpoint=str(reference), episodes_per_task=50)
    cfg.validate()
    assert cfg.warmup_steps == 0


@pytest.mark.skipif(importlib.util.find_spec("metaworld") is not None, reason="metaworld here")
def test_metaworld_make_without_the_extra_says_what_to_install():
    with pytest.raises(ImportError, match="metaworld"):
        envs.make(METAWORLD_SUITE, 0)
