"""Position ids of a pruned prefix: one function per `pruning.position_ids` mode.

openpi numbers the prefix by cumsum(pad) - 1 over the UNPRUNED sequence and starts the
suffix at the count of valid prefix tokens (docs/references.md §1). With patches removed, a
kept token's number is a choice; each mode is one function here, and `NUMBERINGS` is the
one table the model reads (adding a mode: one function, one entry, one `Literal` value in
policies/pruning/config.py `PositionIds`).

Every function gets the unpruned numbering and the pruned layout and returns
(position_ids (B, K + L), next_position (B,)), the suffix's first id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PrunedLayout:
    pos_full: Tensor  # (B, N + L_full) unpruned ids: cumsum(pad) - 1
    next_full: Tensor  # (B,) unpruned suffix start: valid prefix tokens
    index: Tensor  # (B, K) pool index of each patch slot (train: K = N, one per slot)
    selected: Tensor  # (B, N) bool: the pool patches kept (eval) / selected (train)
    pad: Tensor  # (B, K + L) bool: kept patches, then the (possibly trimmed) prompt
    num_patches: int  # N: pooled patch slots of all cameras
    max_token_len: int  # prompt slots of the model (L_full)


def openpi_ids(x: PrunedLayout) -> tuple[Tensor, Tensor]:
    """Each kept token keeps its unpruned id (gaps where patches went): the numbering the
    checkpoint was trained with."""
    N, L = x.num_patches, x.pad.shape[1] - x.index.shape[1]
    patch = x.pos_full[:, :N].gather(1, x.index)
    return torch.cat([patch, x.pos_full[:, N : N + L]], dim=1), x.next_full


def lightvla_ids(x: PrunedLayout) -> tuple[Tensor, Tensor]:
    """The user's port (docs/problem.md): a patch's id is its index in the pool, language
    starts at N and the suffix at N + max_token_len."""
    B, K = x.index.shape
    N, L = x.num_patches, x.pad.shape[1] - K
    lang = N + torch.arange(L, device=x.pad.device).expand(B, L)
    nxt = torch.full((B,), N + x.max_token_len, device=x.pad.device)
    return torch.cat([x.index, lang], dim=1), nxt


def compact_ids(x: PrunedLayout) -> tuple[Tensor, Tensor]:
    """Number the selected patches 0..n-1 in pool order, language from n: the pruned prefix
    without gaps. Train and eval agree: in eval each kept token is one selected patch; in
    training (nothing removed, every slot holds the patch it selected) a slot takes its
    patch's rank, so slots that selected the same patch share its id and the language
    starts at the distinct selected count, exactly where eval would put it."""
    K = x.index.shape[1]
    rank = torch.cumsum(x.selected.long(), dim=1) - 1  # (B, N) rank among the selected
    patch = rank.gather(1, x.index).clamp_min(0)  # (B, K)
    n = x.selected.long().sum(-1)  # (B,)
    lang_mask = x.pad[:, K:].long()  # (B, L)
    lang = n[:, None] + torch.cumsum(lang_mask, dim=1) - 1
    return torch.cat([patch, lang], dim=1), n + lang_mask.sum(-1)


NUMBERINGS: dict[str, Callable[[PrunedLayout], tuple[Tensor, Tensor]]] = {
    "openpi": openpi_ids,
    "lightvla": lightvla_ids,
    "compact": compact_ids,
}
