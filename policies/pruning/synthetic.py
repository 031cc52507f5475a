"""The selection collapse of docs/problem.md §4, reproduced on synthetic embeddings.

Embeddings with the user's statistics (docs/collapse-notes.md): every patch is one shared
direction plus a small per-token spread (std 0.2 per channel), the task tokens are their
own shared direction (cosine ~0.6 to the patches') plus spread 0.3; 87 valid prompt
tokens then padding. This reproduces the user's telemetry: patches_std ~0.2, task_std
~0.29, queries_std ~0.002, score gap ~0.04, union of row argmaxes 1 of 768.

Mechanism (scorers.py has the long version): the patch->task attention logits differ
between patches only through the small spread, so every patch reads the same mix of
task tokens, every query is the same vector, every score row ranks the patches the same
way and all rows vote for the same patch. Scorers that make the queries patch-aware
("residual", "lowrank", "centered") escape the signature; the second RMSNorm
("no_query_norm") and the attention temperature do not.

    python -m policies.pruning.synthetic            # table at D = 2048 (the user's width)
    python -m policies.pruning.synthetic --width 512

Escaping the signature on synthetic data is not a cure: only training with rollouts shows
where the union settles and what it costs in success (docs/collapse-notes.md).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from policies.pruning.config import PrunerConfig
from policies.pruning.pruner import TokenPruner
from policies.pruning.registry import table_variants

HEALTHY_UNION = 16  # a union of row argmaxes at least this large "escapes the collapse"


@dataclass
class SyntheticBatch:
    patches: Tensor  # (B, N, D) pooled patch embeddings
    patch_valid: Tensor  # (B, N) bool
    task: Tensor  # (B, L, D) prompt embeddings (padded slots hold the pad-token embedding)
    task_mask: Tensor  # (B, L) bool, True for the first `task_len` slots


def _unit(v: Tensor) -> Tensor:
    return v / v.norm()


def make_embeddings(
    *,
    batch: int = 4,
    num_patches: int = 768,
    task_len: int = 87,
    prompt_slots: int = 200,
    width: int = 2048,
    spread: float = 0.2,
    task_spread: float = 0.3,
    task_cosine: float = 0.6,
    patches_per_camera: int = 256,
    masked_cameras: tuple[int, ...] = (),
    seed: int = 0,
) -> SyntheticBatch:
    """Deterministic embeddings with the collapse statistics (module docstring).

    Shared directions have per-channel RMS 1; the task is scaled by sqrt(width) as Gemma
    scales its token embeddings (the pruner's RMSNorms remove any scale).
    `masked_cameras`: camera blocks of `patches_per_camera` patches marked invalid.
    """
    if not 0 <= task_len <= prompt_slots:
        raise ValueError(f"task_len must be in [0, prompt_slots], got {task_len}")
    g = torch.Generator().manual_seed(seed)
    D = width
    c = _unit(torch.randn(D, generator=g))  # patches' shared direction
    o = torch.randn(D, generator=g)
    o = _unit(o - (o @ c) * c)  # orthogonal to c
    ct = task_cosine * c + math.sqrt(1.0 - task_cosine**2) * o  # task's: cos(c, ct) = 0.6
    c, ct = c * math.sqrt(D), ct * math.sqrt(D)  # per-channel RMS 1
    patches = c + spread * torch.randn(batch, num_patches, D, generator=g)  # (B, N, D)
    task = ct + task_spread * torch.randn(batch, prompt_slots, D, generator=g)  # (B, L, D)
    pad = torch.randn(D, generator=g)  # embedding of pad token id 0
    task_mask = torch.zeros(batch, prompt_slots, dtype=torch.bool)
    task_mask[:, :task_len] = True
    task = torch.where(task_mask.unsqueeze(-1), task, pad) * math.sqrt(D)
    patch_valid = torch.ones(batch, num_patches, dtype=torch.bool)
    for cam in masked_cameras:
        patch_valid[:, cam * patches_per_camera : (cam + 1) * patches_per_camera] = False
    return SyntheticBatch(patches, patch_valid, task, task_mask)


# (label, config) of the scorers compared in the table (registry.SCORERS[...].table); eval
# mode, adaptive budget.
VARIANTS: tuple[tuple[str, PrunerConfig], ...] = table_variants()


def build_pruner(cfg: PrunerConfig, width: int, seed: int = 0) -> TokenPruner:
    """Eval-mode pruner; the lowrank projections drawn from `seed` (deterministic)."""
    pruner = TokenPruner(replace(cfg, enabled=True, telemetry=True), width).eval()
    if pruner.scorer.lowrank is not None:
        pruner.scorer.lowrank.reset_parameters(torch.Generator().manual_seed(seed))
    return pruner


@torch.no_grad()
def collapse_table(
    *,
    width: int = 2048,
    batch: int = 4,
    num_patches: int = 768,
    seed: int = 0,
    variants: tuple[tuple[str, PrunerConfig], ...] = VARIANTS,
) -> list[dict[str, float | str]]:
    """One row of eval-mode telemetry per scorer variant on the same synthetic batch."""
    b = make_embeddings(batch=batch, num_patches=num_patches, width=width, seed=seed)
    rows = []
    for label, cfg in variants:
        r = build_pruner(cfg, width, seed)(b.patches, b.patch_valid, b.task, b.task_mask)
        m = r.metrics
        rows.append(
            {
                "scorer": label,
                "union": m["prune/argmax_union_mean"],
                "queries_std": m["prune/queries_std_mean"],
                "top1_share": m["prune/argmax_top1_share_mean"],
                "gap": m["prune/score_top1_gap_det_mean"],
                "score_abs_max": m["prune/score_abs_max_det_mean"],
                "patches_std": m["prune/patches_std_mean"],
                "task_std": m["prune/task_std_mean"],
                "task_valid_len": m["prune/task_valid_len_mean"],
                "kept_tokens": m["prune/kept_tokens_overall_mean"],
                "healthy": "yes" if m["prune/argmax_union_mean"] >= HEALTHY_UNION else "no",
            }
        )
    return rows


def format_table(rows: list[dict[str, float | str]], num_patches: int = 768) -> str:
    """Markdown table: union / queries_std / top1_share (and more) per scorer."""
    head = f"| scorer | union of {num_patches} | queries_std | top1_share | top1-top2 gap |"
    head += " |S| max |"
    head += f" union >= {HEALTHY_UNION} |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['scorer']} | {r['union']:.1f} | {r['queries_std']:.4f} | "
            f"{r['top1_share']:.3f} | {r['gap']:.3f} | {r['score_abs_max']:.1f} | {r['healthy']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=2048, help="embedding width D")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--patches", type=int, default=768, help="pooled patches N")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rows = collapse_table(width=a.width, batch=a.batch, num_patches=a.patches, seed=a.seed)
    b = rows[0]
    print(
        f"synthetic: B={a.batch} N={a.patches} L=87 valid of 200, D={a.width}; "
        f"patches_std={b['patches_std']:.3f} task_std={b['task_std']:.3f}"
    )
    print(format_table(rows, a.patches))


if __name__ == "__main__":
    main()
