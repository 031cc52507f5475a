"""benchmarks/train_eval_gap.py on a tiny pruned checkpoint and real demos: the three losses
are of the same weights on the same batches, the pruner comes back after each unpruned
pass, and a checkpoint without a pruner has only the unpruned loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.train_eval_gap import losses
from tests.serve.conftest import tiny_checkpoint  # noqa: F401  (fixture)

pytestmark = [pytest.mark.ray, pytest.mark.render]
REFERENCE = Path(__file__).resolve().parents[2] / "models" / "reference"


@pytest.fixture(scope="module")
def demos_112(tmp_path_factory):
    from services.collect import CollectConfig, run_collect

    out = tmp_path_factory.mktemp("gap") / "demos"
    return run_collect(
        CollectConfig(
            suite="spatial", episodes_per_task=1, out=str(out), image_size=112, num_workers=1
        )
    )


def test_the_three_losses_of_a_pruned_checkpoint(demos_112, tiny_checkpoint):  # noqa: F811
    got = losses(str(tiny_checkpoint), str(demos_112), count=1, batch_size=4)
    assert got.pop("train_tokens") == "copies"  # as the checkpoint trained
    assert all(math.isfinite(v) and v > 0 for v in got.values())
    # train mode holds 192 slots of copies, eval mode the 32 kept: not the same forward
    assert got["train_mode"] != got["eval_mode"]
    again = losses(str(tiny_checkpoint), str(demos_112), count=1, batch_size=4)
    assert again == {**got, "train_tokens": "copies"}  # fixed batches, noise and time
    # the pruner is back after each unpruned pass: otherwise all three would be equal
    assert got["eval_mode"] != got["unpruned"]


def test_an_unpruned_checkpoint_has_only_its_unpruned_loss(demos_112):
    got = losses(str(REFERENCE), str(demos_112), count=1, batch_size=4)
    assert got["train_mode"] is None and got["eval_mode"] is None and got["train_tokens"] is None
    assert 0 < got["unpruned"] < 1  # the trained reference fits its own task's demos
