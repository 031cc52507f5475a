"""TrainConfig: presets, resolution, validation messages, CLI parsing; the LR schedule."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest

from policies.pruning.config import NoiseScheduleConfig, PrunerConfig
from prunepi import cli
from services.train import TRAIN_PRESETS, TrainConfig
from services.train.driver import model_config
from services.train.lr import lr_at


def test_presets_resolve_and_validate():
    for name, preset in TRAIN_PRESETS.items():
        cfg = TrainConfig(preset=name, data="d").resolved()
        cfg.validate()
        assert cfg.steps == preset.steps and cfg.batch_size == preset.batch_size
        assert cfg.decay_steps == (preset.decay_steps or preset.steps)
    libero = TrainConfig(preset="pi05_libero", data="d").resolved()
    # openpi pi05_libero (training/config.py)
    assert (libero.batch_size, libero.lr, libero.warmup_steps, libero.steps) == (
        256,
        5e-5,
        10_000,
        30_000,
    )
    assert libero.ema_decay == 0.999 and libero.precision == "bfloat16"
    assert libero.gradient_checkpointing is True
    assert (libero.adam_b1, libero.adam_b2, libero.adam_eps, libero.weight_decay) == (
        0.9,
        0.95,
        1e-8,
        1e-10,
    )


def test_overrides_win_and_ema_zero_turns_it_off():
    cfg = TrainConfig(preset="pi05_libero", data="d", batch_size=64, ema_decay=0).resolved()
    assert cfg.batch_size == 64 and not cfg.use_ema and cfg.lr == 5e-5
    assert cfg.resolved() == cfg  # idempotent (run_train may get a resolved config)
    assert TrainConfig(preset="pi05_libero", data="d").resolved().use_ema


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"preset": "huge"}, "preset must be one of"),
        (
            {"workers": 3, "batch_size": 8},
            "train.batch_size must be divisible by workers (3), got 8",
        ),
        ({"steps": 0}, "train.steps must be an integer >= 1, got 0"),
        ({"lr": -1.0}, "train.lr must be > 0, got -1.0"),
        ({"precision": "fp8"}, "train.precision must be one of"),
        (
            {"image_size": 50},
            "train.image_size must be a positive multiple of 14 (SigLIP patch size) or None, "
            "got 50",
        ),
        ({"wandb_mode": "cloud"}, "train.wandb_mode must be one of"),
        ({"ema_decay": 1.5}, "train.ema_decay must be in [0, 1) (0: off) or None, got 1.5"),
        ({"fail_at_step": 99, "steps": 10}, "train.fail_at_step must be in [1, steps=10], got 99"),
        ({"data": ""}, "train.data must be a LeRobot dataset folder, got ''"),
        (
            {"pruning": PrunerConfig(keep_ratio=1.5)},
            "train.pruning.keep_ratio must be in (0, 1], got 1.5",
        ),
    ],
)
def test_validation_names_field_and_value(change, needle):
    with pytest.raises(ValueError) as e:
        TrainConfig(**{"data": "d", **change}).resolved().validate()
    assert needle in str(e.value)


def test_dict_roundtrip_and_cli():
    cfg = TrainConfig(
        data="d", pruning=PrunerConfig(enabled=True, noise=NoiseScheduleConfig("cosine"))
    )
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    parsed = cli.parse(
        "train",
        [
            "--preset", "tiny", "--data", "DATA", "--out", "RUN", "--steps", "7",
            "--workers", "2", "--resume", "--pruning.enabled",
            "--pruning.noise.kind", "constant",
        ],
    )  # fmt: skip
    assert (parsed.data, parsed.out, parsed.steps, parsed.workers, parsed.resume) == (
        "DATA",
        "RUN",
        7,
        2,
        True,
    )
    assert parsed.pruning.enabled and parsed.pruning.noise.kind == "constant"


def test_model_config_noise_spans_the_run():
    cfg = TrainConfig(data="d", steps=123, image_size=56, pruning=PrunerConfig(enabled=True))
    mc = model_config(cfg.resolved())
    assert mc.pruning.noise.total_steps == 123 and mc.vision.image_size == 56
    kept = dataclasses.replace(cfg, noise_steps_from_run=False)
    assert model_config(kept.resolved()).pruning.noise.total_steps == 1000


def test_lr_schedule_matches_openpi():
    kw = dict(peak=1.0, warmup_steps=10, decay_steps=110, end=0.1)
    assert math.isclose(lr_at(0, **kw), 1 / 11)  # peak / (warmup + 1)
    assert math.isclose(lr_at(10, **kw), 1.0)
    assert math.isclose(lr_at(60, **kw), 0.55)  # half way down the cosine
    assert math.isclose(lr_at(110, **kw), 0.1) and math.isclose(lr_at(500, **kw), 0.1)
    assert all(lr_at(s, **kw) < lr_at(s + 1, **kw) for s in range(10))


def test_progress_line_is_terse_and_names_kept_tokens_only_when_pruning():
    from prunepi.progress import Progress
    from services.train.worker import progress_line

    m = {"step": 250, "train/loss": 0.1012, "train/samples_per_s": 121.4}
    p = Progress(2000, "steps", done0=50, start=time.monotonic() - 100.0)  # 2 steps/s
    line = progress_line(m, p)
    assert line.startswith("[train] 250/2000 steps  2.00 steps/s  elapsed 1m40s  ETA 14m35s")
    assert line.endswith("loss 0.1012  121 samples/s") and "kept" not in line
    m["prune/kept_tokens_overall_mean"] = 16.0
    assert "kept 16.0" in progress_line(m, p)


def test_python_m_services_train_parses_flags_as_prunepi_train():
    """`ray job submit -- python -m services.train ...` and `prunepi train ...` are one parser:
    the same help text but for the program name."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    bin_dir = Path(sys.executable).parent

    def usage(cmd: list[str], prog: str) -> str:
        out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, cwd=repo)
        assert out.returncode == 0, out.stderr
        return out.stdout.replace(prog, "PROG")

    a = usage([sys.executable, "-m", "services.train"], "python -m services.train")
    b = usage([str(bin_dir / "prunepi"), "train"], "prunepi train")
    assert "--resume, --no-resume" in a and a == b
