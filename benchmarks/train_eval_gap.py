"""The loss a pruned checkpoint trains on against the loss of what it runs.

Training with the pruner as LightVLA does (`pruning.train_tokens="copies"`) keeps all N
patch slots, each holding a copy of the patch it selected (policies/pruning/pruner.py), so a
patch chosen by many slots appears many times and draws attention in proportion; eval keeps
each chosen patch once. The flow-matching loss of the same weights on the same batches (same
noise and time) in the two modes measures that mismatch; beside it the same weights
unpruned. A checkpoint trained with `train_tokens="masked"` trains on eval's sequence: its
ratio is 1 by construction (the check that it is).

    .venv/bin/python benchmarks/train_eval_gap.py --data runs/refdata \
        [--trained-from runs/abl] [CKPT ...] [--batches 4] [--batch-size 32]

Writes benchmarks/results/train_eval_gap.json and prints a table. CPU, a few seconds a
checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, write_json  # noqa: E402


def batches(policy, data: str, count: int, batch_size: int):
    """`count` fixed training batches with fixed flow noise and time (seeded)."""
    from services.train.data import StepBatches, open_dataset

    mc = policy.model.config
    tokenizer = Path(policy.tokenizer.path)
    sb = StepBatches(
        open_dataset(data, mc.action_horizon),
        mc,
        policy.config,
        tokenizer,
        policy.norm_stats,
        batch_size=batch_size,
        seed=123,
        rank=0,
        world=1,
    )
    for step in range(count):
        obs, acts = sb[step]
        g = torch.Generator().manual_seed(step)
        noise = torch.randn(acts.shape, generator=g)  # (B, H, A)
        time = torch.rand(acts.shape[0], generator=g) * 0.999 + 0.001  # (B,)
        yield obs, acts, noise, time


@torch.no_grad()
def losses(ckpt: str, data: str, count: int, batch_size: int) -> dict[str, float | None]:
    """Mean flow loss: unpruned, pruner in train mode (no noise), pruner in eval mode."""
    from policies.loading import LoadOptions, load_policy

    policy = load_policy(ckpt, LoadOptions(), device="cpu", prune=False)
    model = policy.model
    pruner = model.pruner
    sums: dict[str, float] = {"unpruned": 0.0, "train_mode": 0.0, "eval_mode": 0.0}
    for obs, acts, noise, time in batches(policy, data, count, batch_size):
        model.eval()
        model.pruner = None  # the same weights with every patch (the forward's pruner off)
        sums["unpruned"] += float(model.forward(obs, acts, noise, time).loss.mean())
        model.pruner = pruner
        if pruner is None:
            continue
        for mode in ("train_mode", "eval_mode"):
            model.train(mode == "train_mode")  # step=None: no selection noise
            sums[mode] += float(model.forward(obs, acts, noise, time).loss.mean())
    out: dict[str, float | str | None] = {k: v / count for k, v in sums.items()}
    if pruner is None:
        out["train_mode"] = out["eval_mode"] = None
    out["train_tokens"] = None if pruner is None else pruner.cfg.train_tokens
    return out


def main() -> None:
    from services.curve.config import parse_trained, tune_trials

    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="*", help="LABEL=CKPT or CKPT")
    ap.add_argument("--data", required=True, help="LeRobot dataset the batches come from")
    ap.add_argument("--trained-from", default=None, help="a `prunepi tune` OUT folder")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default="train_eval_gap.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    entries = list(args.checkpoints) + (tune_trials(args.trained_from) if args.trained_from else [])
    rows = []
    for entry in entries:
        point = parse_trained(entry)
        row = {"checkpoint": point.selector.split(":", 1)[1], "path": point.checkpoint}
        row.update(losses(point.checkpoint, args.data, args.batches, args.batch_size))
        if row["train_mode"]:
            row["eval_over_train"] = row["eval_mode"] / row["train_mode"]
        rows.append(row)
        print(f"{row['checkpoint']}: {row}", flush=True)
    cols = ["checkpoint", "train_tokens", "unpruned", "train_mode", "eval_mode", "eval_over_train"]
    print_table(rows, cols)
    write_json(
        args.out,
        {
            "description": "mean flow loss of the same weights on the same batches (fixed "
            "noise and time): unpruned, pruner in train mode (no noise; as the checkpoint "
            "trained: train_tokens copies = N slots, masked = eval's sequence), pruner in "
            "eval mode (kept tokens only)",
            "data": args.data,
            "batches": args.batches,
            "batch_size": args.batch_size,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
