"""The prune/* telemetry of docs/problem.md §4, plus kept tokens / ratio and the noise scale.

All values are batch means of per-sample statistics over VALID tokens only (valid
patches from the camera masks, valid prompt tokens from tokenized_prompt_mask), computed
under torch.no_grad() and fetched with one host sync.

- *_std_mean: std over tokens (population std) of the normalised tensor, mean over
  channels (docs/problem.md §4 table).
- argmax_union_mean / argmax_top1_share_mean: size of the union of the valid rows'
  argmaxes / share of valid rows voting for the most popular patch; "_noisy" = with the
  training noise (in eval they equal the deterministic ones).
- score_abs_max_det_mean / score_top1_gap_det_mean: max |S| over valid rows x columns /
  mean over valid rows of the top1 - top2 score (samples with >= 2 valid patches).
- noise_scale: the training noise scale (batch mean for the per-sample "gap" schedule).
- kept_tokens_overall_mean: what inference keeps (no noise, after the budget);
  kept_tokens_overall_mean_noisy: distinct patches the training slots selected.
- kept_ratio_overall_mean: kept / ALL pooled patch slots N (masked cameras included), as in
  the user's log (2.2963 / 768 = 0.0030, docs/problem.md); `kept_ratio` is that one
  definition, shared by Tune's trials and the reports. kept_ratio_valid_mean: per-sample
  kept / valid patches, batch mean (a different number when a camera is masked).
- queries_std_mean: of the cross-attention queries BEFORE any residual (scorers.Scores
  `queries`); with a residual, alpha * P would add the patches' own spread.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policies.pruning.selection import Selection

METRIC_NAMES: tuple[str, ...] = (
    "prune/task_valid_len_mean",
    "prune/argmax_union_mean",
    "prune/argmax_top1_share_mean",
    "prune/argmax_union_mean_noisy",
    "prune/argmax_top1_share_mean_noisy",
    "prune/patches_std_mean",
    "prune/task_std_mean",
    "prune/queries_std_mean",
    "prune/score_abs_max_det_mean",
    "prune/score_top1_gap_det_mean",
    "prune/kept_tokens_overall_mean",
    "prune/kept_tokens_overall_mean_noisy",
    "prune/kept_ratio_overall_mean",
    "prune/kept_ratio_valid_mean",
    "prune/noise_scale",
)


def kept_ratio(kept_tokens: float | Tensor, pooled_slots: int) -> float | Tensor:
    """Kept patches over all pooled patch slots (every camera's, masked ones included): the
    user's `prune/kept_ratio_overall_mean` (docs/problem.md). The one definition."""
    if pooled_slots <= 0:
        raise ValueError(f"pooled_slots must be >= 1, got {pooled_slots}")
    return kept_tokens / pooled_slots


def batch_mean(x: Tensor, ok: Tensor) -> Tensor:
    """Mean of per-sample values x (B,) over the samples where ok (B,); 0 if none."""
    ok = ok.float()
    return (x.float() * ok).sum() / ok.sum().clamp_min(1.0)


def token_std_mean(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B,) std over the masked tokens, mean over channels."""
    m = mask.unsqueeze(-1).float()  # (B, T, 1)
    n = m.sum(1).clamp_min(1.0)  # (B, 1)
    mean = (x * m).sum(1) / n  # (B, D)
    var = ((x - mean.unsqueeze(1)).pow(2) * m).sum(1) / n  # (B, D)
    return var.sqrt().mean(-1)


def top1_gap(scores_m: Tensor, patch_valid: Tensor) -> Tensor:
    """(B,) mean over valid rows of the top1 - top2 column-masked score (0 if < 2 valid)."""
    n_valid = patch_valid.sum(1)  # (B,)
    if scores_m.shape[-1] < 2:
        return torch.zeros(scores_m.shape[0], device=scores_m.device)
    top2 = scores_m.topk(2, dim=-1).values  # (B, N, 2)
    gap = torch.where(patch_valid, top2[..., 0] - top2[..., 1], 0.0)  # (B, N)
    per_sample = gap.sum(1) / n_valid.clamp_min(1)
    return torch.where(n_valid >= 2, per_sample, 0.0)


def top1_share(sel: Selection, patch_valid: Tensor) -> Tensor:
    """(B,) share of valid rows voting for the most popular patch."""
    return sel.votes.amax(1).float() / patch_valid.sum(1).clamp_min(1)


@torch.no_grad()
def compute_metrics(
    *,
    scores: Tensor,
    scores_m: Tensor,
    patches_n: Tensor,
    task_n: Tensor,
    queries: Tensor,
    patch_valid: Tensor,
    task_mask: Tensor,
    det: Selection,
    noisy: Selection,
    selected_count: Tensor,
    noise_scale: float | Tensor,
) -> dict[str, float]:
    """All METRIC_NAMES as Python floats (see the module docstring)."""
    n_valid = patch_valid.sum(1)  # (B,)
    has_p = n_valid > 0
    has_t = task_mask.sum(1) > 0
    cell = patch_valid.unsqueeze(-1) & patch_valid.unsqueeze(1)  # (B, N, N) valid row x col
    abs_max = scores.abs().masked_fill(~cell, 0.0).flatten(1).amax(1)  # (B,)
    values = [
        task_mask.sum(1).float().mean(),
        batch_mean(det.union, has_p),
        batch_mean(top1_share(det, patch_valid), has_p),
        batch_mean(noisy.union, has_p),
        batch_mean(top1_share(noisy, patch_valid), has_p),
        batch_mean(token_std_mean(patches_n, patch_valid), has_p),
        batch_mean(token_std_mean(task_n, task_mask), has_t),
        batch_mean(token_std_mean(queries, patch_valid), has_p),
        batch_mean(abs_max, has_p),
        batch_mean(top1_gap(scores_m, patch_valid), n_valid >= 2),
        det.count.float().mean(),
        selected_count.float().mean(),
        kept_ratio(det.count.float(), patch_valid.shape[1]).mean(),
        batch_mean(det.count.float() / n_valid.clamp_min(1), has_p),
        torch.as_tensor(noise_scale, device=scores.device).float().mean(),
    ]
    floats = torch.stack([v.float() for v in values]).tolist()  # one host sync
    return dict(zip(METRIC_NAMES, floats))
