"""`train.norm_stats`: normalize with a given norm_stats.json (a fine-tuned checkpoint's)
instead of statistics computed from the data. No Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policies.normalize import NormStats, load_norm_stats, save_norm_stats
from services.train import TrainConfig
from services.train.data import compute_norm_stats
from services.train.driver import absolute, model_config, prepare_assets


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    cfg = absolute(TrainConfig(data=str(data), out=str(out), **kw)).resolved()
    cfg.validate()
    return cfg


def _stats(state_dim: int, action_dim: int) -> dict[str, NormStats]:
    rng = np.random.default_rng(3)
    return {
        "state": NormStats.from_data(rng.normal(5.0, 2.0, size=(64, state_dim))),
        "actions": NormStats.from_data(rng.normal(-1.0, 0.5, size=(64, action_dim))),
    }


@pytest.mark.parametrize("as_folder", [False, True])
def test_given_norm_stats_replace_the_computed_ones(tiny_lerobot, tmp_path, as_folder):
    computed = compute_norm_stats(tiny_lerobot)
    given = _stats(len(computed["state"].mean), len(computed["actions"].mean))
    path = tmp_path / "assets" / "norm_stats.json"
    save_norm_stats(given, path)
    arg = path.parent if as_folder else path
    cfg = _config(tiny_lerobot, tmp_path / "run", norm_stats=str(arg))
    _, stats_path, _ = prepare_assets(cfg, Path(cfg.out), model_config(cfg))
    got = load_norm_stats(stats_path)
    for key in ("state", "actions"):
        for f in ("mean", "std", "q01", "q99"):
            np.testing.assert_allclose(getattr(got[key], f), getattr(given[key], f), rtol=1e-6)
        assert not np.allclose(got[key].mean, computed[key].mean)


def test_norm_stats_of_other_widths_are_refused(tiny_lerobot, tmp_path):
    computed = compute_norm_stats(tiny_lerobot)
    width = len(computed["state"].mean)
    path = tmp_path / "norm_stats.json"
    save_norm_stats(_stats(width + 2, 7), path)
    cfg = _config(tiny_lerobot, tmp_path / "run", norm_stats=str(path))
    with pytest.raises(ValueError, match=f"'state' has {width + 2} dims, the dataset") as e:
        prepare_assets(cfg, Path(cfg.out), model_config(cfg))
    assert str(path) in str(e.value)
    missing = _config(tiny_lerobot, tmp_path / "run2", norm_stats=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="train.norm_stats must be a norm_stats.json file"):
        prepare_assets(missing, Path(missing.out), model_config(missing))
