"""`sample_actions` latency of π0.5: batch 1 and 8; `tiny` on CPU, `pi05` on a GPU.

Random weights (latency does not depend on their values). On CUDA the `pi05` rows run in
bf16 with openpi's fp32 keep-list, eager and with torch.compile side by side. The CPU rows
run on 1 intra-op thread (as rollout actors and Serve replicas do) and on 2, with batch 8
of random prompt lengths (`mixed`, a Serve micro-batch) beside batch 8 of one prompt
(`equal`, a lockstep rollout's batch per task): the ratio is what a sample's own lengths
cost (pi05/model.py `Pi05Model._runs`).

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


def bench(
    preset: str, device: str, batch: int, mode: str, iters: int, prompts: str = "mixed"
) -> dict:
    cfg = get_preset(preset)
    if device == "cuda":
        cfg = dataclasses.replace(cfg, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device(device):
        model = Pi05Model(cfg).eval()
    obs = random_observation(cfg, batch, torch.Generator().manual_seed(0)).to(device)
    if prompts == "equal":  # every sample the first one's prompt
        obs.tokenized_prompt[:] = obs.tokenized_prompt[0]
        obs.tokenized_prompt_mask[:] = obs.tokenized_prompt_mask[0]
    if mode == "compile":
        model.denoise_step = torch.compile(model.denoise_step, mode="max-autotune-no-cudagraphs")
        model.prefill = torch.compile(model.prefill, dynamic=False)
    r = time_ms(
        lambda: model.sample_actions(obs),
        warmup=3 if mode == "compile" else 1,
        iters=iters,
        cuda=device == "cuda",
    )
    info = {"preset": preset, "device": device, "batch": batch, "mode": mode, "prompts": prompts}
    return {**info, "threads": torch.get_num_threads(), **r}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="pi05_latency.json")
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    rows = []
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        for batch, prompts in ((1, "mixed"), (8, "mixed"), (8, "equal")):
            rows.append(bench("tiny", "cpu", batch, "eager", args.iters, prompts))
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        for batch in (1, 8):
            for mode in ("eager", "compile"):
                rows.append(bench("pi05", "cuda", batch, mode, args.iters))
    else:
        print("no CUDA device: the pi05 rows run only where CUDA is available")
    cols = ["preset", "device", "threads", "batch", "prompts", "mode", "median_ms", "p90_ms"]
    print_table(rows, cols)
    write_json(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
