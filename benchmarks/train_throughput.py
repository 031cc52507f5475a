"""Ray Train throughput of the tiny π0.5: 1 and 2 workers, pruner off and on, side by side.

Each Ray row is one `run_train` on the same local Ray (DDP over gloo, one torch thread per
worker) with the same global batch; samples/s and step time are the medians of the
per-step `train/samples_per_s` / `train/step_s` the workers log (data loading + forward +
backward + optimizer, all ranks averaged), skipping the first `warmup` steps. Ray's
worker-group start-up is in `fit_s`, not in the rates. The "0 (no Ray)" rows time the
same step in this process (data + step, one thread): what Ray and DDP add to it.

    python benchmarks/train_throughput.py                  # collects a tiny dataset first
    python benchmarks/train_throughput.py --data DATA --steps 40
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, write_json
from policies.pruning.config import PrunerConfig
from prunepi import env


def collect(out: Path, image_size: int) -> Path:
    from services.collect import CollectConfig, run_collect

    cfg = CollectConfig(
        suite="spatial",
        episodes_per_task=2,
        out=out,
        image_size=image_size,
        num_workers=1,
        seed=0,
        progress=False,
    )
    return run_collect(cfg)


def bench(data: Path, root: Path, workers: int, prune: bool, args) -> dict:
    from services.train import TrainConfig, run_train
    from services.train.metrics import read_metrics

    cfg = TrainConfig(
        preset="tiny",
        data=str(data),
        out=str(root / f"w{workers}_prune{int(prune)}"),
        workers=workers,
        batch_size=args.batch_size,
        steps=args.steps,
        save_every=args.steps,  # one checkpoint, at the end
        log_every=1,
        max_token_len=48,
        pruning=PrunerConfig(enabled=prune),
        wandb_mode="disabled",
        seed=0,
    )
    t0 = time.perf_counter()
    run = run_train(cfg)
    fit_s = time.perf_counter() - t0
    m = read_metrics(run)[args.warmup :]
    step_s = [r["train/step_s"] for r in m]
    return {
        "workers": workers,
        "pruner": prune,
        "batch": args.batch_size,
        "samples_per_s": statistics.median(r["train/samples_per_s"] for r in m),
        "step_ms": 1000 * statistics.median(step_s),
        "loss_last": m[-1]["train/loss"],
        "kept_tokens": m[-1].get("prune/kept_tokens_overall_mean"),
        "fit_s": fit_s,
        "startup_s": fit_s - sum(r["train/step_s"] for r in read_metrics(run)),
    }


def bench_in_process(data: Path, root: Path, prune: bool, args) -> dict:
    """The same step without Ray or DDP (one torch thread): the floor Ray adds to."""
    import torch

    from policies.normalize import load_norm_stats
    from policies.pi05.model import Pi05Model
    from services.train import TrainConfig
    from services.train.data import StepBatches, open_dataset
    from services.train.driver import absolute, model_config, prepare_assets
    from services.train.step import Stepper, make_optimizer

    torch.set_num_threads(1)
    cfg = absolute(
        TrainConfig(
            data=str(data),
            out=str(root / f"inproc_prune{int(prune)}"),
            batch_size=args.batch_size,
            steps=args.steps,
            max_token_len=48,
            pruning=PrunerConfig(enabled=prune),
        )
    ).resolved()
    mc = model_config(cfg)
    policy_cfg, stats, tok = prepare_assets(cfg, Path(cfg.out), mc)
    torch.manual_seed(0)
    model = Pi05Model(mc).train()
    step = Stepper(cfg, model, model, make_optimizer(model, cfg), None, 0, torch.device("cpu"))
    ds = open_dataset(cfg.data, mc.action_horizon)
    b = StepBatches(
        ds, mc, policy_cfg, tok, load_norm_stats(stats), batch_size=cfg.batch_size, seed=0,
        rank=0, world=1,
    )  # fmt: skip
    times = []
    for s in range(args.steps):
        t0 = time.perf_counter()
        step(*b[s], s)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times[args.warmup :])
    return {
        "workers": "0 (no Ray)",
        "pruner": prune,
        "batch": args.batch_size,
        "samples_per_s": args.batch_size / step_s,
        "step_ms": 1000 * step_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="", help="LeRobot dataset (default: collect one)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default="train_throughput.json")
    args = ap.parse_args()

    load_start = os.getloadavg()[0]
    env.init_local_ray(num_cpus=2)
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp:
        root = Path(tmp)
        data = Path(args.data) if args.data else collect(root / "demos", image_size=128)
        rows = [bench_in_process(data, root, prune, args) for prune in (False, True)]
        rows += [
            bench(data, root, workers, prune, args) for workers in (1, 2) for prune in (False, True)
        ]
    cols = ["workers", "pruner", "batch", "samples_per_s", "step_ms", "kept_tokens", "fit_s"]
    print_table(rows, cols)
    write_json(
        args.out,
        {
            "description": "Ray Train samples/s of the tiny preset (112 px, 3 cameras, 64 "
            "patches each), global batch split over DDP workers (gloo, 1 torch thread each)",
            "load_avg_1m": {"start": load_start, "end": os.getloadavg()[0]},
            "note": "2 CPUs shared with other jobs; medians over steps after warm-up",
            "config": {
                "steps": args.steps,
                "warmup": args.warmup,
                "data": args.data or "collected: spatial suite, 2 demos per task, 128 px",
            },
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
