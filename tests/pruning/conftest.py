"""Shared inputs for the pruner tests: small random (diverse) batches."""

from __future__ import annotations

import pytest
import torch

from policies.pruning.synthetic import SyntheticBatch


def random_batch(
    *,
    batch: int = 3,
    num_patches: int = 96,
    prompt_slots: int = 12,
    task_lens: tuple[int, ...] = (12, 7, 3),
    width: int = 32,
    masked: dict[int, slice] | None = None,
    seed: int = 0,
) -> SyntheticBatch:
    """Diverse i.i.d. Gaussian embeddings (unions of tens of patches), fixed seed.

    task_lens[b]: valid prompt tokens of sample b; masked: sample -> invalid patch slice.
    """
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(batch, num_patches, width, generator=g)
    task = torch.randn(batch, prompt_slots, width, generator=g) * width**0.5
    task_mask = torch.arange(prompt_slots).expand(batch, -1) < torch.tensor(task_lens)[:, None]
    patch_valid = torch.ones(batch, num_patches, dtype=torch.bool)
    for b, sl in (masked or {}).items():
        patch_valid[b, sl] = False
    return SyntheticBatch(patches, patch_valid, task, task_mask)


@pytest.fixture
def rand_batch():
    return random_batch
