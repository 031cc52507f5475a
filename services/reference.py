"""`prunepi reference` (`make reference`): rebuild the committed reference policy.

The reference is what every science command starts from (`prunepi demo` fine-tunes it,
`prunepi curve` prunes it): an unpruned tiny π0.5 on one of our suites, trained on 2 CPU
cores. This file is the one place its recipe lives: the demos (suite, count, camera size,
LIBERO-style init regions, seed), the `reference` training preset
(services/train/config.py) on 2 Ray Train DDP workers, and the export of the last
checkpoint without its optimizer state to models/reference/. Same seeds, same data, same
weights; reports/reference.md has its learning curve and closed-loop success.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from prunepi import env
from prunepi.checks import check_fields, int_at_least, optional

# The suite, init regions and camera size the reference was trained for: the demo and the
# curve evaluate it under the same ones (services/demo.py, reports/curve_reference.md).
SUITE = "spatial"
INIT_SPREAD = 0.015  # m: each object within +-1.5 cm (and 0.15 rad) of its home
IMAGE_SIZE = 112  # 2 cameras x 64 valid patches, plus the masked third camera's 64 slots
MODEL_DIR = "models/reference"
# The sampler's one fixed noise draw (PolicyConfig.noise_seed), chosen after training on the
# selection block (initial states 100-149, 50 episodes a task) among seeds 0-7, by
# `prunepi rollout --checkpoint models/reference --noise-seed S --init-state-start 100`:
# success moved 0.86-0.94 with the draw alone (reports/reference.md). The report block
# (states 0-49) then judges the choice.
NOISE_SEED = 2


@dataclass(frozen=True)
class ReferenceConfig:
    """Defaults are the committed reference's recipe; change one to try another."""

    run: str = "runs/reference"  # data/ and train/ (the training run, with its checkpoints)
    dest: str = MODEL_DIR  # where the exported policy folder goes
    suite: str = SUITE  # envs suite of the demos
    demos_per_task: int = 200  # scripted expert demos per task (they cost about 0.1 s each)
    image_size: int = IMAGE_SIZE  # camera side in px (multiple of 14)
    init_spread: float | None = INIT_SPREAD  # LIBERO-style init regions (m); None: anywhere
    preset: str = "reference"  # training preset (steps, batch, LR schedule, EMA)
    steps: int | None = None  # None: the preset's (a short run tests the rebuild's determinism)
    workers: int = 2  # Ray Train DDP workers, one CPU each
    augment: bool = False  # off: the schedule is short and the demos are many
    seed: int = 0  # collection and training seed
    noise_seed: int = NOISE_SEED  # the exported policy's sampler draw (chosen, see above)
    num_cpus: int = 2  # CPUs of the embedded local Ray
    wandb_mode: str = "offline"  # "offline" | "online" | "disabled"
    address: str | None = None  # Ray cluster to join; None: RAY_ADDRESS, else embedded

    def validate(self) -> None:
        rules = dict.fromkeys(("demos_per_task", "workers", "num_cpus"), int_at_least(1))
        rules["noise_seed"] = int_at_least(0)
        rules["steps"] = optional(int_at_least(1))
        check_fields("reference", self, rules)
        env.check_address("address", self.address)


def collect(cfg: ReferenceConfig) -> Path:
    """Scripted demos into RUN/data (replacing what is there)."""
    from services.collect import CollectConfig, run_collect

    return run_collect(
        CollectConfig(
            suite=cfg.suite,
            episodes_per_task=cfg.demos_per_task,
            out=Path(cfg.run) / "data",
            image_size=cfg.image_size,
            num_workers=cfg.num_cpus,
            seed=cfg.seed,
            overwrite=True,
            progress=False,
            init_spread=cfg.init_spread,
            address=cfg.address,
        )
    )


def train(cfg: ReferenceConfig, data: Path) -> Path:
    from services.train import TrainConfig, run_train

    out = Path(cfg.run) / "train"
    shutil.rmtree(out, ignore_errors=True)  # a rebuild, never a resume of another recipe
    return run_train(
        TrainConfig(
            preset=cfg.preset,
            steps=cfg.steps,
            data=str(data),
            out=str(out),
            workers=cfg.workers,
            cpus_per_worker=cfg.num_cpus / cfg.workers,
            ray_num_cpus=cfg.num_cpus,
            augment=cfg.augment,
            seed=cfg.seed,
            wandb_mode=cfg.wandb_mode,
            address=cfg.address,
        )
    )


def run_reference(cfg: ReferenceConfig) -> Path:
    """collect -> train -> export; -> the exported policy folder."""
    from services.train.export import export_policy

    cfg.validate()
    t0 = time.monotonic()
    data = collect(cfg)
    print(f"[reference] {data} collected at {time.monotonic() - t0:.0f} s", flush=True)
    run = train(cfg, data)
    print(f"[reference] {run} trained at {time.monotonic() - t0:.0f} s", flush=True)
    dest = export_policy(run, cfg.dest, policy={"noise_seed": cfg.noise_seed})
    print(f"[reference] exported to {dest} ({time.monotonic() - t0:.0f} s)", flush=True)
    return dest
