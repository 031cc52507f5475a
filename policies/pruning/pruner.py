"""LightVLA-style visual-token pruner for π0.5, as tensor code that knows only tensors and masks.

Port of LightVLA's `TokenPruner` (prismatic/extern/hf/modeling_prismatic.py, docs/references.md
§2) as docs/problem.md §2 describes the user's π0.5 port: one pool of all cameras' patches
(B, N, D) with a validity mask; the prompt tokens as task context with their padding
masked. The model calls it from `embed_prefix` on the LLM input embeddings.

train(): the sequence is NOT shortened. Each of the N slots selects one patch:
    S_noisy = S + U[0,1) * noise_scale           (uniform, not Gumbel; only in training)
    hard    = one_hot(slot's selection)          (argmax of its noisy row, see below)
    soft    = softmax(S_noisy over valid columns)
    out     = (hard + soft - soft.detach()) @ patches
  computed as gather(patches, index) + (y - y.detach()) with y = soft @ patches.detach():
  the same value (exactly the selected patches) and the same gradients as LightVLA's
  W @ patches (d/dpatches through the hard one-hot, d/dS through the soft path).
  With a budget the slot's selection is made consistent with eval (selection.slot_index):
  at zero noise the distinct selected patches are exactly what eval keeps.
  `train_tokens="masked"` trains on eval's sequence instead: each slot holds its own patch,
  and the patches not kept leave attention through a straight-through keep gate on the
  attention logits (`keep_gate_bias`, DynamicViT's attention masking), so a kept patch
  draws attention once, as in eval (benchmarks/train_eval_gap.py measures the difference).
eval(): tokens are really dropped: keep = budgeted union of the rows' argmaxes (no noise),
  gathered in original order, padded to K = max count over the batch (rounded up to a
  bucket). A sample's result does not depend on the rest of the batch beyond K.

Differences from LightVLA, on purpose: prompt padding is masked (docs/problem.md §2.2); masked
cameras' patches are never kept/selected and their rows do not vote; works at any batch
size (LightVLA's only at 1); budgets, buckets and min_keep are ours (docs/problem.md §4 (c)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from policies.pruning.config import PrunerConfig
from policies.pruning.objectives import keep_ratio_loss, soft_keep
from policies.pruning.registry import build_scorer
from policies.pruning.schedule import make_schedule
from policies.pruning.selection import (
    count_votes,
    gather_kept,
    mask_columns,
    select,
    slot_index,
)
from policies.pruning.telemetry import METRIC_NAMES, compute_metrics, top1_gap

__all__ = ["METRIC_NAMES", "PruneResult", "TokenPruner"]


@dataclass
class PruneResult:
    # train mode (self.training): sequence length unchanged
    patches: Tensor  # train: (B, N, D) = W @ patches; eval: (B, K, D) kept, zeros in padding
    index: Tensor  # train: (B, N) long patch each slot selected; eval: (B, K) ascending, 0 pad
    valid: Tensor  # train: (B, N) bool = patch_valid; eval: (B, K) bool, False in padding
    kept_tokens: Tensor  # (B,) long: kept (eval) / distinct selected (train, noisy) patches
    metrics: dict[str, float]  # METRIC_NAMES -> value ({} when cfg.telemetry is False)
    keep_mask: Tensor | None = None  # (B, N) bool: eval kept / train distinct selected patches
    aux_loss: Tensor | None = None  # () training objective on the selection (objectives.py)
    key_bias: Tensor | None = None  # train "masked": (B, N) attention-logit bias of each patch


class TokenPruner(nn.Module):
    """See the module docstring. `width` = D of the patch tokens (the LLM width)."""

    def __init__(self, cfg: PrunerConfig, width: int, patches_per_camera: int | None = None):
        super().__init__()
        cfg.validate()
        if width < 1:
            raise ValueError(f"pruner width must be >= 1, got {width}")
        self.cfg = cfg
        self.width = width
        # parameters only for "lowrank"; patches_per_camera: the layout "grid" needs
        self.scorer = build_scorer(cfg, width, patches_per_camera)
        self.schedule = make_schedule(cfg.noise)

    def forward(
        self,
        patches: Tensor,
        patch_valid: Tensor,
        task: Tensor,
        task_mask: Tensor,
        *,
        step: int | None = None,
        generator: torch.Generator | None = None,
    ) -> PruneResult:
        """patches (B, N, D), patch_valid (B, N) bool, task (B, L, D), task_mask (B, L) bool.

        step: global training step for the noise schedule (None -> no noise); noise is
        only ever added in training mode. generator: RNG for the noise (default: global).
        """
        self._check_inputs(patches, patch_valid, task, task_mask)
        patch_valid, task_mask = patch_valid.bool(), task_mask.bool()
        sc = self.scorer(patches, patch_valid, task, task_mask)
        scores_m = mask_columns(sc.scores, patch_valid)  # (B, N, N)
        det = select(self.cfg, scores_m, patch_valid)  # deterministic: what eval keeps

        if not self.training:
            kept, index, valid = gather_kept(patches, det.keep, self.cfg.buckets)
            metrics = self._metrics(sc, scores_m, patch_valid, task_mask, det, det, det.count, 0.0)
            return PruneResult(kept, index, valid, det.count, metrics, det.keep)

        noise_scale = self._noise_scale(step, scores_m, patch_valid)  # float or (B,)
        scores_n = scores_m  # (B, N, N)
        noisy = det
        if _any_positive(noise_scale):
            u = torch.rand(
                scores_m.shape, generator=generator, device=scores_m.device, dtype=scores_m.dtype
            )
            if isinstance(noise_scale, Tensor):
                noise_scale = noise_scale.view(-1, 1, 1)
            scores_n = scores_m + u * noise_scale  # masked columns stay at NEG
            noisy = select(self.cfg, scores_n, patch_valid)
        key_bias = None
        if self.cfg.train_tokens == "masked":  # eval's sequence: each kept patch once
            out, index, selected = patches, _own_slots(patches), noisy.keep
            key_bias = keep_gate_bias(noisy.keep, soft_keep(scores_n, patch_valid, 1.0))
        else:  # LightVLA: every slot a copy of the patch it selected
            index = slot_index(scores_n, noisy, patch_valid)  # (B, N)
            out = straight_through(patches, scores_n, index, patch_valid)  # (B, N, D)
            selected = count_votes(index, patch_valid) > 0  # (B, N) distinct selected patches
        n_sel = selected.sum(1)  # (B,)
        metrics = self._metrics(
            sc, scores_m, patch_valid, task_mask, det, noisy, n_sel, noise_scale
        )
        aux = None
        if self.cfg.keep_loss_weight > 0:
            aux = keep_ratio_loss(self.cfg, scores_n, patch_valid)
            metrics = {**metrics, "prune/keep_loss": float(aux.detach())} if metrics else metrics
        return PruneResult(out, index, patch_valid, n_sel, metrics, selected, aux, key_bias)

    # -- helpers -------------------------------------------------------------------------

    def _noise_scale(self, step: int | None, scores_m: Tensor, patch_valid: Tensor):
        """Noise scale for this step: a float, or (B,) per sample for the "gap" schedule.

        "gap" is applied per sample with the sample's own mean top1 - top2 gap, so a
        sample's noise does not depend on the rest of its batch (and no host sync).
        """
        if step is None or self.cfg.noise.kind == "none":
            return 0.0
        if self.cfg.noise.kind != "gap":
            return self.schedule.scale(step)
        per_gap = self.schedule.scale(step, score_gap=1.0)  # noise per unit of gap
        with torch.no_grad():
            return top1_gap(scores_m, patch_valid) * per_gap  # (B,)

    def _metrics(self, sc, scores_m, patch_valid, task_mask, det, noisy, n_sel, noise_scale):
        if not self.cfg.telemetry:
            return {}
        return compute_metrics(
            scores=sc.scores.detach(),
            scores_m=scores_m.detach(),
            patches_n=sc.patches.detach(),
            task_n=sc.task.detach(),
            queries=sc.queries.detach(),
            patch_valid=patch_valid,
            task_mask=task_mask,
            det=det,
            noisy=noisy,
            selected_count=n_sel,
            noise_scale=noise_scale,
        )

    def _check_inputs(self, patches, patch_valid, task, task_mask) -> None:
        if patches.dim() != 3 or patches.shape[-1] != self.width:
            raise ValueError(f"patches must be (B, N, {self.width}), got {tuple(patches.shape)}")
        B, N, D = patches.shape
        if tuple(patch_valid.shape) != (B, N):
            raise ValueError(f"patch_valid must be ({B}, {N}), got {tuple(patch_valid.shape)}")
        if task.dim() != 3 or task.shape[0] != B or task.shape[-1] != D:
            raise ValueError(f"task must be ({B}, L, {D}), got {tuple(task.shape)}")
        if tuple(task_mask.shape) != tuple(task.shape[:2]):
            raise ValueError(
                f"task_mask must be {tuple(task.shape[:2])}, got {tuple(task_mask.shape)}"
            )

    def extra_repr(self) -> str:
        c = self.cfg
        return f"width={self.width}, scorer={c.scorer}, budget={c.budget}, noise={c.noise.kind}"


def _any_positive(scale: float | Tensor) -> bool:
    """Whether to draw noise; per-sample scales always do (a zero scale adds exact zeros)."""
    return isinstance(scale, Tensor) or scale > 0


def straight_through(
    patches: Tensor, scores_n: Tensor, index: Tensor, patch_valid: Tensor
) -> Tensor:
    """(hard + soft - soft.detach()) @ patches without forming W (LightVLA train path).

    Value: exactly patches[index] (the hard one-hot rows). Gradient: to the patches through
    the hard gather only (W's value is the one-hot), to the scores through the soft rows.
    Rows of invalid patches carry no soft path.
    """
    B, N, D = patches.shape
    hard = patches.gather(1, index.unsqueeze(-1).expand(B, N, D))  # (B, N, D)
    soft = torch.softmax(scores_n, dim=-1) * patch_valid.unsqueeze(-1)  # (B, N, N)
    y = soft @ patches.detach().float()  # (B, N, D)
    return hard + (y - y.detach()).to(patches.dtype)


# A dropped key's gate value: its logit bias log(1e-20) ~ -46 leaves it e^-46 of the weight of
# an equal logit, nothing next to any kept key in fp32 (1 + 1e-20 == 1).
GATE_EPS = 1e-20


def keep_gate_bias(keep: Tensor, soft: Tensor) -> Tensor:
    """(B, N) bool kept set, (B, N) soft keep probability -> (B, N) attention-logit bias.

    DynamicViT (Rao et al. 2021, §3.2 "attention masking") drops tokens inside the softmax,
    a_ij = exp(l_ij) M_j / sum_k exp(l_ik) M_k, with the gate M hard in value and soft in
    gradient, so a dropped token's decision still learns what attending it would change. As
    a bias on SDPA's logits that is log(M_j + eps): value 0 for kept keys and log(eps) for
    dropped ones; its gradient 1 / (M_j + eps) times the bias gradient (which carries the
    key's weight, eps exp(l_ij) / Z_i) gives back DynamicViT's exp(l_ij) / Z_i.
    """
    gate = keep.float() + (soft - soft.detach())  # value: exactly the hard decision
    return torch.log(gate + GATE_EPS)


def _own_slots(patches: Tensor) -> Tensor:
    """(B, N, D) -> (B, N) long: slot i holds patch i."""
    B, N, _ = patches.shape
    return torch.arange(N, device=patches.device).expand(B, N)
