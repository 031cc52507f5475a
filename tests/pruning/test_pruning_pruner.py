"""TokenPruner: train/eval consistency, gradients, masks, padding, batching, budgets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from policies.pruning import METRIC_NAMES, NoiseScheduleConfig, PrunerConfig, TokenPruner
from policies.pruning.scorers import rms_norm
from policies.pruning.synthetic import make_embeddings

D = 32
NO_NOISE = NoiseScheduleConfig(kind="none")
BUDGETS = [
    PrunerConfig(budget="adaptive"),
    PrunerConfig(budget="adaptive", min_keep=40),  # raises the union
    PrunerConfig(budget="keep_tokens", keep_tokens=10),  # below the union
    PrunerConfig(budget="keep_tokens", keep_tokens=50),  # above the union
    PrunerConfig(budget="keep_ratio", keep_ratio=0.3),
]
SCORERS = ["lightvla", "no_query_norm", "temperature", "residual", "lowrank", "centered"]


def run(cfg, b, *, train, width=D, step=None, generator=None, pruner=None):
    pruner = pruner or TokenPruner(cfg, width)
    pruner.train(train)
    return pruner(b.patches, b.patch_valid, b.task, b.task_mask, step=step, generator=generator)


def index_sets(r):
    """Per sample: the patches kept (eval) or selected by the valid slots (train)."""
    return [set(r.index[i][r.valid[i]].tolist()) for i in range(r.index.shape[0])]


kept_sets = selected_sets = index_sets


# -- train / eval consistency ------------------------------------------------------------


@pytest.mark.parametrize("cfg", BUDGETS, ids=lambda c: f"{c.budget}-{c.keep_tokens}-{c.min_keep}")
@pytest.mark.parametrize("scorer", ["lightvla", "residual"])
def test_zero_noise_train_selection_equals_eval_kept_set(rand_batch, cfg, scorer):
    b = rand_batch(masked={1: slice(0, 32)})
    cfg = PrunerConfig(**{**cfg.to_dict(), "noise": NO_NOISE, "scorer": scorer})
    pruner = TokenPruner(cfg, D)
    tr = run(cfg, b, train=True, step=7, pruner=pruner)
    ev = run(cfg, b, train=False, pruner=pruner)
    assert selected_sets(tr) == kept_sets(ev)
    assert torch.equal(tr.keep_mask, ev.keep_mask)
    assert torch.equal(tr.kept_tokens, ev.kept_tokens)
    # train output = exactly the selected patches (straight-through value)
    ref = b.patches.gather(1, tr.index[..., None].expand(-1, -1, D))
    assert torch.equal(tr.patches, ref)
    assert tr.patches.shape == b.patches.shape and torch.equal(tr.valid, b.patch_valid)


def test_collapsed_input_zero_noise_consistency_with_budgets():
    b = make_embeddings(batch=2, num_patches=256, width=64, task_len=20, prompt_slots=32, seed=3)
    for budget in ("adaptive", "keep_tokens", "keep_ratio"):
        cfg = PrunerConfig(budget=budget, min_keep=3, noise=NO_NOISE)
        pruner = TokenPruner(cfg, 64)
        tr = run(cfg, b, train=True, width=64, pruner=pruner)
        ev = run(cfg, b, train=False, width=64, pruner=pruner)
        assert selected_sets(tr) == kept_sets(ev)


def test_noisy_train_selection_matches_budget_and_mask(rand_batch):
    b = rand_batch(masked={0: slice(48, 96)})
    noise = NoiseScheduleConfig(kind="constant", scale=3.0)
    for cfg in BUDGETS:
        cfg = PrunerConfig(**{**cfg.to_dict(), "noise": noise})
        g = torch.Generator().manual_seed(0)
        r = run(cfg, b, train=True, step=0, generator=g)
        sets = selected_sets(r)
        assert [len(s) for s in sets] == r.kept_tokens.tolist()
        assert r.metrics["prune/kept_tokens_overall_mean_noisy"] == pytest.approx(
            r.kept_tokens.float().mean().item()
        )
        assert all(j < 48 for j in sets[0])  # masked patches never selected
        if cfg.budget == "keep_tokens":  # budgets are exact under noise too
            n_valid = b.patch_valid.sum(1).tolist()
            assert r.kept_tokens.tolist() == [min(cfg.keep_tokens, n) for n in n_valid]


def test_noise_uses_the_generator(rand_batch):
    b = rand_batch()
    cfg = PrunerConfig(noise=NoiseScheduleConfig(kind="constant", scale=5.0))
    p = TokenPruner(cfg, D)
    r1 = run(cfg, b, train=True, step=0, generator=torch.Generator().manual_seed(1), pruner=p)
    r2 = run(cfg, b, train=True, step=0, generator=torch.Generator().manual_seed(1), pruner=p)
    r3 = run(cfg, b, train=True, step=0, generator=torch.Generator().manual_seed(2), pruner=p)
    r0 = run(cfg, b, train=True, step=None, pruner=p)
    assert torch.equal(r1.index, r2.index)
    assert not torch.equal(r1.index, r3.index)
    assert not torch.equal(r1.index, r0.index)  # noise changes the argmaxes at scale 5


# -- gradients ---------------------------------------------------------------------------


def reference_lightvla_train(pruner, b, patches, index):
    """LightVLA's literal train path: W = hard + soft - soft.detach(); out = W @ patches."""
    sc = pruner.scorer(patches, b.patch_valid, b.task, b.task_mask)
    S = sc.scores.masked_fill(~b.patch_valid[:, None, :], torch.finfo(torch.float32).min)
    hard = F.one_hot(index, S.shape[-1]).float()
    soft = torch.softmax(S, dim=-1) * b.patch_valid[..., None]
    W = hard + soft - soft.detach()
    return W @ patches


@pytest.mark.parametrize("scorer", ["lightvla", "lowrank"])
def test_gradients_match_lightvla_straight_through(rand_batch, scorer):
    b = rand_batch(masked={2: slice(0, 16)})
    cfg = PrunerConfig(scorer=scorer, lowrank_rank=4, noise=NO_NOISE)
    pruner = TokenPruner(cfg, D).train()
    w = torch.randn(b.patches.shape, generator=torch.Generator().manual_seed(5))

    p1 = b.patches.clone().requires_grad_(True)
    r = pruner(p1, b.patch_valid, b.task, b.task_mask)
    (r.patches * w).sum().backward()
    grads1 = [p1.grad] + [q.grad.clone() for q in pruner.parameters()]
    pruner.zero_grad()

    p2 = b.patches.clone().requires_grad_(True)
    out = reference_lightvla_train(pruner, b, p2, r.index)
    (out * w).sum().backward()
    grads2 = [p2.grad] + [q.grad.clone() for q in pruner.parameters()]

    torch.testing.assert_close(r.patches, out, rtol=1e-5, atol=1e-5)
    for g1, g2 in zip(grads1, grads2):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)
    # the soft path carries gradient to the scores: the patch gradient is not just the
    # hard gather's, and the lowrank parameters (reachable only through S) get gradient
    gather_only = torch.zeros_like(b.patches).scatter_add_(
        1, r.index[..., None].expand(-1, -1, D), w
    )
    assert (grads1[0] - gather_only).abs().max() > 1e-6
    for g in grads1[1:]:
        assert g.abs().sum() > 0
    assert len(grads1) == (3 if scorer == "lowrank" else 1)


def test_eval_gradient_only_reaches_kept_patches(rand_batch):
    b = rand_batch()
    pruner = TokenPruner(PrunerConfig(), D).eval()
    p = b.patches.clone().requires_grad_(True)
    r = pruner(p, b.patch_valid, b.task, b.task_mask)
    r.patches.sum().backward()
    touched = p.grad.abs().sum(-1) > 0  # (B, N)
    assert torch.equal(touched, r.keep_mask)


# -- masks -------------------------------------------------------------------------------


@pytest.mark.parametrize("scorer", SCORERS)
def test_masked_camera_patches_never_kept_nor_voting(rand_batch, scorer):
    b = rand_batch(masked={0: slice(32, 64), 2: slice(0, 64)})
    cfg = PrunerConfig(scorer=scorer, lowrank_rank=4, budget="keep_ratio", keep_ratio=1.0)
    torch.manual_seed(0)
    pruner = TokenPruner(cfg, D)
    ev = run(cfg, b, train=False, pruner=pruner)
    assert ev.kept_tokens.tolist() == b.patch_valid.sum(1).tolist()  # ratio 1: all valid
    assert not (ev.keep_mask & ~b.patch_valid).any()
    tr = run(cfg, b, train=True, step=None, pruner=pruner)
    for i, s in enumerate(selected_sets(tr)):
        assert all(b.patch_valid[i, j] for j in s)

    # Changing the masked patches' content changes nothing about the valid ones.
    b2 = rand_batch(masked={0: slice(32, 64), 2: slice(0, 64)})
    b2.patches[~b.patch_valid] = 100.0 * torch.randn(int((~b.patch_valid).sum()), D)
    for cfg2 in (cfg, PrunerConfig(scorer=scorer, lowrank_rank=4)):
        pruner2 = TokenPruner(cfg2, D)
        pruner2.load_state_dict(pruner.state_dict())  # same lowrank weights
        e1 = run(cfg2, b, train=False, pruner=pruner2)
        e2 = run(cfg2, b2, train=False, pruner=pruner2)
        assert torch.equal(e1.index, e2.index) and torch.equal(e1.patches, e2.patches)


def test_all_patches_masked_keeps_nothing(rand_batch):
    b = rand_batch(masked={1: slice(0, 96)})
    for budget in ("adaptive", "keep_tokens"):
        cfg = PrunerConfig(budget=budget)
        ev = run(cfg, b, train=False)
        assert ev.kept_tokens[1] == 0 and not ev.valid[1].any()
        tr = run(cfg, b, train=True, step=None)
        assert tr.kept_tokens[1] == 0
        assert torch.isfinite(tr.patches).all()
        assert all(math.isfinite(v) for v in ev.metrics.values())


def test_prompt_padding_does_not_change_anything(rand_batch):
    b = rand_batch()
    b2 = rand_batch()
    pad = ~b.task_mask
    b2.task[pad] = 1e4 * torch.randn(int(pad.sum()), D)
    for scorer in SCORERS:
        cfg = PrunerConfig(scorer=scorer, lowrank_rank=4, noise=NoiseScheduleConfig("constant"))
        pruner = TokenPruner(cfg, D)
        for train in (False, True):
            r1 = run(
                cfg,
                b,
                train=train,
                step=3,
                generator=torch.Generator().manual_seed(0),
                pruner=pruner,
            )
            r2 = run(
                cfg,
                b2,
                train=train,
                step=3,
                generator=torch.Generator().manual_seed(0),
                pruner=pruner,
            )
            assert torch.equal(r1.index, r2.index)
            assert torch.equal(r1.patches, r2.patches)  # bitwise
            assert r1.metrics == r2.metrics


def test_empty_prompt_gives_finite_scores(rand_batch):
    b = rand_batch(task_lens=(0, 5, 12))
    r = run(PrunerConfig(), b, train=True, step=None)
    assert torch.isfinite(r.patches).all()
    assert all(math.isfinite(v) for v in r.metrics.values())
    assert r.kept_tokens[0] >= 1


def test_lightvla_scorer_is_masked_sdpa(rand_batch):
    """The faithful scorer equals LightVLA's formula with torch's SDPA (+ key padding mask)."""
    b = rand_batch()
    sc = TokenPruner(PrunerConfig(), D).scorer(b.patches, b.patch_valid, b.task, b.task_mask)
    P, T = rms_norm(b.patches), rms_norm(b.task)
    Q = rms_norm(F.scaled_dot_product_attention(P, T, T, attn_mask=b.task_mask[:, None, :]))
    S = Q @ P.transpose(1, 2) / math.sqrt(D)
    torch.testing.assert_close(sc.scores, S, rtol=1e-4, atol=1e-4)


# -- batching ----------------------------------------------------------------------------


@pytest.mark.parametrize("budget", ["adaptive", "keep_tokens"])
def test_batch_independence(rand_batch, budget):
    b = rand_batch(batch=3, task_lens=(12, 7, 3), masked={0: slice(0, 40)})
    cfg = PrunerConfig(budget=budget, keep_tokens=20, noise=NO_NOISE)
    pruner = TokenPruner(cfg, D)
    for i in range(3):
        alone = type(b)(
            b.patches[i : i + 1],
            b.patch_valid[i : i + 1],
            b.task[i : i + 1],
            b.task_mask[i : i + 1],
        )
        ra = run(cfg, alone, train=False, pruner=pruner)
        rb = run(cfg, b, train=False, pruner=pruner)
        k = int(ra.kept_tokens[0])
        assert int(rb.kept_tokens[i]) == k
        assert torch.equal(ra.index[0, :k], rb.index[i, :k])
        assert torch.equal(ra.patches[0, :k], rb.patches[i, :k])
        assert not rb.valid[i, k:].any() and not rb.patches[i, k:].any()
        ta = run(cfg, alone, train=True, pruner=pruner)
        tb = run(cfg, b, train=True, pruner=pruner)
        assert torch.equal(ta.index[0], tb.index[i])


# -- budgets, buckets, min_keep, ties ------------------------------------------------------


def test_budget_counts_are_exact(rand_batch):
    b = rand_batch(masked={1: slice(0, 46)})  # valid: 96, 50, 96
    assert run(
        PrunerConfig(budget="keep_tokens", keep_tokens=30), b, train=False
    ).kept_tokens.tolist() == [30, 30, 30]
    assert run(
        PrunerConfig(budget="keep_tokens", keep_tokens=60), b, train=False
    ).kept_tokens.tolist() == [60, 50, 60]
    r = run(PrunerConfig(budget="keep_ratio", keep_ratio=0.15), b, train=False)
    assert r.kept_tokens.tolist() == [math.ceil(0.15 * 96), math.ceil(0.15 * 50), 15]
    # over all 96 pooled slots (the user's definition), and over each sample's valid ones
    assert r.metrics["prune/kept_ratio_overall_mean"] == pytest.approx((15 + 8 + 15) / 96 / 3)
    assert r.metrics["prune/kept_ratio_valid_mean"] == pytest.approx(
        (15 / 96 + 8 / 50 + 15 / 96) / 3
    )
    r = run(
        PrunerConfig(budget="keep_ratio", keep_ratio=0.1), rand_batch(num_patches=30), train=False
    )
    assert r.kept_tokens.tolist() == [3, 3, 3]  # 0.1 * 30 = 3.0000000000000004 -> 3


def test_budgets_rank_the_union_first(rand_batch):
    b = rand_batch()
    union = run(PrunerConfig(), b, train=False).keep_mask
    n_union = union.sum(1)
    for k in (5, 60):
        keep = run(PrunerConfig(budget="keep_tokens", keep_tokens=k), b, train=False).keep_mask
        for i in range(3):
            if k <= n_union[i]:
                assert not (keep[i] & ~union[i]).any()  # a subset of the union
            else:
                assert not (union[i] & ~keep[i]).any()  # a superset of the union


def test_min_keep_raises_a_collapsed_union():
    b = make_embeddings(batch=2, num_patches=256, width=64, task_len=20, prompt_slots=32, seed=1)
    plain = run(PrunerConfig(), b, train=False, width=64)
    assert plain.kept_tokens.max() <= 3  # collapsed
    r = run(PrunerConfig(min_keep=12), b, train=False, width=64)
    assert r.kept_tokens.tolist() == [12, 12]
    assert not (plain.keep_mask & ~r.keep_mask).any()  # the union stays in
    r = run(PrunerConfig(budget="keep_tokens", keep_tokens=4, min_keep=9), b, train=False, width=64)
    assert r.kept_tokens.tolist() == [9, 9]


def test_buckets_round_k_up(rand_batch):
    b = rand_batch(num_patches=64)
    plain = run(PrunerConfig(budget="keep_tokens", keep_tokens=10), b, train=False)
    assert plain.patches.shape[1] == 10
    for buckets, K in (((4, 16, 32), 16), ((10, 20), 10), ((2, 4), 64), ((128,), 64)):
        cfg = PrunerConfig(budget="keep_tokens", keep_tokens=10, buckets=buckets)
        r = run(cfg, b, train=False)
        assert r.patches.shape == (3, K, D) and r.index.shape == (3, K) and r.valid.shape == (3, K)
        assert r.valid.sum(1).tolist() == [10, 10, 10]
        assert torch.equal(r.index[:, :10], plain.index)
        assert not r.patches[:, 10:].any() and not r.index[:, 10:].any()
        assert r.kept_tokens.tolist() == [10, 10, 10]


def test_eval_index_ascending_and_padded(rand_batch):
    b = rand_batch()
    r = run(PrunerConfig(), b, train=False)
    K = r.index.shape[1]
    assert K == int(r.kept_tokens.max())
    for i in range(3):
        k = int(r.kept_tokens[i])
        idx = r.index[i, :k]
        assert (idx[1:] > idx[:-1]).all()
        assert torch.equal(r.patches[i, :k], b.patches[i, idx])


def test_ties_go_to_the_lowest_valid_index(rand_batch):
    b = rand_batch(masked={1: slice(0, 10)})
    b.patches[:] = b.patches[:, :1].clone()  # all patches identical -> all scores tie
    r = run(PrunerConfig(), b, train=False)
    assert kept_sets(r) == [{0}, {10}, {0}]
    r = run(PrunerConfig(budget="keep_tokens", keep_tokens=3), b, train=False)
    assert kept_sets(r) == [{0, 1, 2}, {10, 11, 12}, {0, 1, 2}]
    r = run(PrunerConfig(budget="keep_tokens", keep_tokens=3, noise=NO_NOISE), b, train=True)
    assert selected_sets(r) == [{0, 1, 2}, {10, 11, 12}, {0, 1, 2}]


# -- variants, dtypes, telemetry -----------------------------------------------------------


def test_no_query_norm_cannot_change_the_eval_kept_set(rand_batch):
    """Dropping the second RMSNorm scales each score row by a positive number."""
    batches = [rand_batch(seed=s) for s in range(3)]
    batches.append(
        make_embeddings(batch=2, num_patches=256, width=D, task_len=9, prompt_slots=12, seed=0)
    )
    for b in batches:
        a = run(PrunerConfig(scorer="lightvla"), b, train=False)
        c = run(PrunerConfig(scorer="no_query_norm"), b, train=False)
        assert torch.equal(a.keep_mask, c.keep_mask)


def test_bfloat16_inputs(rand_batch):
    b = rand_batch()
    b.patches, b.task = b.patches.bfloat16(), b.task.bfloat16()
    cfg = PrunerConfig(noise=NO_NOISE)
    tr = run(cfg, b, train=True)
    assert tr.patches.dtype == torch.bfloat16
    assert torch.equal(tr.patches, b.patches.gather(1, tr.index[..., None].expand(-1, -1, D)))
    ev = run(cfg, b, train=False)
    assert ev.patches.dtype == torch.bfloat16 and selected_sets(tr) == kept_sets(ev)


def test_metrics_names_and_eval_noisy_equals_det(rand_batch):
    b = rand_batch()
    cfg = PrunerConfig(noise=NoiseScheduleConfig(kind="constant", scale=2.0))
    ev = run(cfg, b, train=False, step=5)
    assert tuple(ev.metrics) == METRIC_NAMES
    assert all(isinstance(v, float) for v in ev.metrics.values())
    m = ev.metrics
    assert m["prune/argmax_union_mean_noisy"] == m["prune/argmax_union_mean"]
    assert m["prune/argmax_top1_share_mean_noisy"] == m["prune/argmax_top1_share_mean"]
    assert m["prune/kept_tokens_overall_mean_noisy"] == m["prune/kept_tokens_overall_mean"]
    assert m["prune/kept_tokens_overall_mean"] == m["prune/argmax_union_mean"]  # adaptive
    assert m["prune/task_valid_len_mean"] == pytest.approx((12 + 7 + 3) / 3)
    assert m["prune/noise_scale"] == 0.0
    tr = run(cfg, b, train=True, step=5, generator=torch.Generator().manual_seed(0))
    assert tr.metrics["prune/noise_scale"] == 2.0
    assert tr.metrics["prune/kept_tokens_overall_mean"] == m["prune/kept_tokens_overall_mean"]
    assert tr.metrics["prune/argmax_union_mean_noisy"] != m["prune/argmax_union_mean"]
    assert run(PrunerConfig(telemetry=False), b, train=False).metrics == {}


def test_input_shape_errors(rand_batch):
    b = rand_batch()
    p = TokenPruner(PrunerConfig(), D)
    with pytest.raises(ValueError, match="patches must be"):
        p(b.patches[..., :8], b.patch_valid, b.task, b.task_mask)
    with pytest.raises(ValueError, match="task_mask must be"):
        p(b.patches, b.patch_valid, b.task, b.task_mask[:, :3])


def test_keep_gate_bias_is_dynamicvit_attention_masking():
    """softmax(l + keep_gate_bias) is DynamicViT's exp(l) M / sum exp(l) M with M hard in
    value and soft in gradient: the same output and the same gradient to the soft keep
    probabilities, dropped patches included (they still learn what attending would do)."""
    from policies.pruning.pruner import keep_gate_bias

    g = torch.Generator().manual_seed(0)
    B, Sq, Sk = 2, 5, 7
    logits = torch.randn(B, Sq, Sk, generator=g)
    v, w = torch.randn(B, Sk, 4, generator=g), torch.randn(B, Sq, 4, generator=g)
    keep = torch.rand(B, Sk, generator=g) > 0.4
    keep[:, 0] = True
    soft = torch.rand(B, Sk, generator=g).requires_grad_()
    y = torch.softmax(logits + keep_gate_bias(keep, soft)[:, None], dim=-1) @ v
    (ours,) = torch.autograd.grad((y * w).sum(), soft)

    soft_dv = soft.detach().clone().requires_grad_()
    m = keep.float() + soft_dv - soft_dv.detach()
    e = logits.exp() * m[:, None]
    y_dv = (e / e.sum(-1, keepdim=True)) @ v
    (theirs,) = torch.autograd.grad((y_dv * w).sum(), soft_dv)

    assert torch.allclose(y, y_dv, atol=1e-6)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    assert (ours[~keep].abs() > 0).all()
