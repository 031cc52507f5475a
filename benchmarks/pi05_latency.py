"""`sample_actions` latency of π0.5: batch 1 and 8; `tiny` on CPU, `pi05` on a GPU.

Random weights (latency does not depend on their values). On CUDA the `pi05` rows run in
bf16 with openpi's fp32 keep-list, eager and with torch.compile side by side.

    python benchmarks/pi05_latency.py            # tiny on CPU (+ pi05 when CUDA exists)
    python benchmarks/pi05_latency.py --out X.json
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from benchmarks.common import print_table, time_ms, write_json
from policies.pi05.config import get_preset
from policies.pi05.model import Pi05Model
from prunepi.quickstart import random_observation


def bench(preset: str, device: str, batch: int, mode: str, iters: int) -> dict:
    cfg = get_preset(preset)
    if device == "cuda":
        cfg = dataclasses.replace(cfg, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device(device):
        model = Pi05Model(cfg).eval()
    obs = random_observation(cfg, batch, torch.Generator().manual_seed(0)).to(device)
    if mode == "compile":
        model.denoise_step = torch.compile(model.denoise_step, mode="max-autotune-no-cudagraphs")
        model.prefill = torch.compile(model.prefill, dynamic=False)
    r = time_ms(
        lambda: model.sample_actions(obs),
        warmup=3 if mode == "compile" else 1,
        iters=iters,
        cuda=device == "cuda",
    )
    return {"preset": preset, "device": device, "batch": batch, "mode": mode, **r}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="pi05_latency.json")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    rows = []
    for batch in (1, 8):
        rows.append(bench("tiny", "cpu", batch, "eager", args.iters))
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        for batch in (1, 8):
            for mode in ("eager", "compile"):
                rows.append(bench("pi05", "cuda", batch, mode, args.iters))
    else:
        print("no CUDA device: the pi05 rows run only where CUDA is available")
    print_table(rows, ["preset", "device", "batch", "mode", "median_ms", "p90_ms"])
    write_json(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
