"""`prunepi demo` end to end at toy size on a real local Ray (slow: about two minutes).

A random tiny "reference" (56 px, pruner off) stands in for models/reference: the demo
collects demos, fine-tunes it with the pruner on 2 DDP workers, serves the three variants
on one Serve and rolls each out through openpi-client.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.suites import SUITES
from policies.normalize import NormStats
from policies.pi05.config import get_preset
from policies.pi05.model import Pi05Model
from policies.policy import PolicyConfig, save_checkpoint
from policies.tokenizer import train_sentencepiece
from services.demo import DemoConfig, demo_rollout, demo_train, run_demo

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.render]


def _reference(folder: Path) -> Path:
    torch.manual_seed(0)
    base = get_preset("tiny")
    cfg = dataclasses.replace(base, vision=dataclasses.replace(base.vision, image_size=56))
    tasks = [t.instruction for t in SUITES["spatial"]]
    tok = train_sentencepiece(tasks, folder.parent / "spm.model", vocab_size=512)
    rng = np.random.default_rng(0)
    stats = {
        "state": NormStats.from_data(rng.normal(size=(256, 8))),
        "actions": NormStats.from_data(rng.uniform(-1, 1, size=(256, 7))),
    }
    return save_checkpoint(folder, Pi05Model(cfg).eval(), PolicyConfig(), tok, stats)


def test_demo_fine_tunes_the_reference_and_reports_three_variants(tmp_path):
    ref = _reference(tmp_path / "reference")
    cfg = DemoConfig(
        out=str(tmp_path / "demo"),
        reference=str(ref),
        demos_per_task=1,
        train=dataclasses.replace(demo_train(), steps=2, batch_size=4, warmup_steps=1),
        rollout=dataclasses.replace(
            demo_rollout(), episodes_per_task=1, max_steps=5, num_workers=1, envs_per_worker=2
        ),
        address="local",
    )
    results = run_demo(cfg)
    assert list(results) == ["pruned", "unpruned", "lightvla"]
    valid = 2 * (56 // 14) ** 2  # two cameras; the third is masked
    kept = {name: r["kept_tokens_mean"] for name, r in results.items()}
    assert kept == {"pruned": valid / 2, "unpruned": valid, "lightvla": valid / 2}
    for r in results.values():
        assert r["episodes"] == 4 and r["init_states"] == {"start": 0, "count": 1}
    out = Path(cfg.out)
    assert json.loads((out / "results.json").read_text()).keys() == results.keys()
    assert (out / "success_vs_kept_tokens.png").is_file()
    train_stats = next((out / "train").rglob("norm_stats.json")).read_text()
    assert train_stats == next(ref.rglob("norm_stats.json")).read_text()  # the reference's
