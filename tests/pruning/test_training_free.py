"""Training-free selectors: "random" and "grid" scorers, the curve's selector configs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from policies.pruning import PrunerConfig, TokenPruner
from policies.pruning.training_free import SELECTORS, grid_points, selector_config

D = 16
P = 64  # patches per camera: an 8 x 8 grid
SIDE = 8


def three_cameras(batch: int = 3, masked_camera: int | None = 2, seed: int = 0):
    """(patches, patch_valid, task, task_mask) of 3 cameras x 64 patches, fixed seed."""
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(batch, 3 * P, D, generator=g)
    task = torch.randn(batch, 6, D, generator=g)
    task_mask = torch.arange(6).expand(batch, -1) < 4
    valid = torch.ones(batch, 3 * P, dtype=torch.bool)
    if masked_camera is not None:
        valid[:, masked_camera * P : (masked_camera + 1) * P] = False
    return patches, valid, task, task_mask


def kept(cfg: PrunerConfig, inputs) -> list[set[int]]:
    r = TokenPruner(cfg, D, patches_per_camera=P).eval()(*inputs)
    return [set(r.index[b][r.valid[b]].tolist()) for b in range(r.index.shape[0])]


@pytest.mark.parametrize("scorer", ["random", "grid"])
@pytest.mark.parametrize(
    "budget",
    [dict(budget="keep_tokens", keep_tokens=20), dict(budget="keep_ratio", keep_ratio=0.1)],
)
def test_kept_count_is_the_budget_and_only_valid_patches(scorer, budget):
    inputs = three_cameras()
    cfg = PrunerConfig(enabled=True, scorer=scorer, **budget)
    want = 20 if budget["budget"] == "keep_tokens" else 13  # ceil(0.1 * 128 valid)
    for s in kept(cfg, inputs):
        assert len(s) == want
        assert all(i < 2 * P for i in s), s  # camera 2 is masked: never kept


def _balanced(pts, side: int) -> bool:
    """Every row and every column of the grid holds the same count of `pts`, give or take
    one: no stripe (a whole row or column dropped, or one column missing in many rows)."""
    rows = [sum(p // side == r for p in pts) for r in range(side)]
    cols = [sum(p % side == c for p in pts) for c in range(side)]
    return max(rows) - min(rows) <= 1 and max(cols) - min(cols) <= 1


def test_grid_spreads_over_rows_and_columns_of_each_valid_camera():
    inputs = three_cameras(masked_camera=1)
    cfg = PrunerConfig(enabled=True, scorer="grid", budget="keep_tokens", keep_tokens=32)
    for s in kept(cfg, inputs):
        for cam in (0, 2):  # 16 each: 2 in every row and in every column of the camera
            own = [i - cam * P for i in s if cam * P <= i < (cam + 1) * P]
            assert len(own) == 16 and _balanced(own, SIDE), own
        assert not any(P <= i < 2 * P for i in s)


def test_balance_check_catches_the_stripes_of_rows_of_points():
    """The check above fails on what the first "grid" kept at 90 % and 75 % of 8 x 8 (rows
    of evenly spaced points: column 3 missing in six rows; row 3 and column 3 whole)."""
    stripe = [y * 8 + x for y in range(8) for x in range(8) if not (y >= 2 and x == 3)]
    cross = [y * 8 + x for y in range(8) for x in range(8) if y != 3 and x != 3]
    assert not _balanced(stripe, 8) and not _balanced(cross, 8)
    assert _balanced(grid_points(8, 58), 8) and _balanced(grid_points(8, 49), 8)


@pytest.mark.parametrize("side", [1, 2, 4, 8, 16])
def test_grid_points_are_k_distinct_patches_balanced_in_both_axes(side):
    previous: set[int] = set()
    for k in range(side * side + 1):
        pts = grid_points(side, k)
        assert len(pts) == len(set(pts)) == k and all(0 <= p < side * side for p in pts)
        assert _balanced(pts, side), (side, k)  # and so is the complement: what is dropped
        assert previous <= set(pts)  # nested: a larger budget keeps what a smaller one kept
        previous = set(pts)
    for k in {max(1, side * side // 16), side * side // 4, side * side // 2} - {0}:
        # spread: no patch farther (Chebyshev) from a kept one than a lattice's spacing
        kept_rc = [divmod(p, side) for p in grid_points(side, k)]
        gap = max(
            min(max(abs(y - a), abs(x - b)) for a, b in kept_rc)
            for y in range(side)
            for x in range(side)
        )
        assert gap <= math.ceil(side / math.sqrt(k)), (side, k, gap)
    assert grid_points(side, side * side) == tuple(range(side * side))
    with pytest.raises(ValueError, match="k must be in"):
        grid_points(side, side * side + 1)


def test_random_is_reproducible_and_batch_invariant():
    inputs = three_cameras(batch=4, masked_camera=None)
    cfg = PrunerConfig(enabled=True, scorer="random", budget="keep_tokens", keep_tokens=24)
    first = kept(cfg, inputs)
    assert kept(cfg, inputs) == first  # same inputs, same tokens
    assert len({frozenset(s) for s in first}) == 4  # each observation its own draw
    order = [2, 0, 3, 1]
    assert kept(cfg, [x[order] for x in inputs]) == [first[i] for i in order]
    assert kept(cfg, [x[1:2] for x in inputs]) == [first[1]]  # alone = in a batch
    other = kept(dataclasses.replace(cfg, random_seed=1), inputs)
    assert other != first  # the seed matters
    # and so does the content: one changed patch draws another set
    changed = [x.clone() for x in inputs]
    changed[0][0, 5] += 1.0
    assert kept(cfg, changed)[0] != first[0] and kept(cfg, changed)[1:] == first[1:]


def test_model_keeps_the_same_random_tokens_alone_and_batched():
    from policies.pi05.config import get_preset
    from policies.pi05.model import Pi05Model
    from prunepi.quickstart import random_observation

    pr = PrunerConfig(enabled=True, scorer="random", budget="keep_ratio", keep_ratio=0.25)
    cfg = dataclasses.replace(get_preset("tiny"), pruning=pr)
    torch.manual_seed(0)
    model = Pi05Model(cfg).eval()
    obs = random_observation(cfg, 3, torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = model.embed_prefix(obs)
        one = dataclasses.replace(
            obs,
            images={k: v[1:2] for k, v in obs.images.items()},
            image_masks={k: v[1:2] for k, v in obs.image_masks.items()},
            state=obs.state[1:2],
            tokenized_prompt=obs.tokenized_prompt[1:2],
            tokenized_prompt_mask=obs.tokenized_prompt_mask[1:2],
        )
        alone = model.embed_prefix(one)
    assert batched.kept_tokens.tolist() == [32, 32, 32]  # 25 % of 2 valid cameras x 64
    # "openpi" position ids of the kept patches = their indices (camera 2 is masked)
    assert torch.equal(alone.position_ids[0, :32], batched.position_ids[1, :32])
    assert not torch.equal(batched.position_ids[0, :32], batched.position_ids[1, :32])


def test_errors_name_the_field():
    with pytest.raises(ValueError, match="pruning.budget must be keep_tokens or keep_ratio"):
        PrunerConfig(enabled=True, scorer="random").validate()  # default budget "adaptive"
    with pytest.raises(ValueError, match="pruning.random_seed must be an integer >= 0"):
        PrunerConfig(scorer="random", budget="keep_ratio", random_seed=-1).validate()
    grid = PrunerConfig(enabled=True, scorer="grid", budget="keep_ratio")
    with pytest.raises(ValueError, match="patches_per_camera must divide"):
        TokenPruner(grid, D).eval()(*three_cameras())
    with pytest.raises(ValueError, match="patches_per_camera must be a square"):
        TokenPruner(grid, D, patches_per_camera=60)


def test_selector_configs():
    base = PrunerConfig(position_ids="compact", min_keep=8)
    got = {s: selector_config(s, None if s.endswith("adaptive") else 0.1, base) for s in SELECTORS}
    assert {s: (c.scorer, c.budget) for s, c in got.items()} == {
        "random": ("random", "keep_ratio"),
        "lightvla": ("lightvla", "keep_ratio"),
        "lightvla-adaptive": ("lightvla", "adaptive"),
        "grid": ("grid", "keep_ratio"),
    }
    assert all(c.enabled and c.position_ids == "compact" and c.min_keep == 1 for c in got.values())
    assert got["grid"].keep_ratio == 0.1
    with pytest.raises(ValueError, match="selector must be one of"):
        selector_config("fastv", 0.1, base)
    with pytest.raises(ValueError, match="keep_ratio must be None exactly for 'lightvla-adaptive'"):
        selector_config("lightvla", None, base)
