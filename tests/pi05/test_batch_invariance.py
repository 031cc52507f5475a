"""An observation's actions are bitwise the same alone and in any batch (policies/invariant.py,
model.length_groups): any batch size, position and companions, pruned and unpruned, on one
and on two intra-op threads. Closed-loop rollouts through a micro-batching server depend on
it (services/serve/deployment.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from policies.normalize import NormStats
from policies.pi05.config import tiny
from policies.pi05.model import Observation, Pi05Model, drop_padding, split_by_length
from policies.policy import Policy, PolicyConfig
from policies.pruning import PrunerConfig
from policies.tokenizer import PromptTokenizer, train_sentencepiece

# Prompts of different token lengths, so prompt trimming gives each sample its own length.
PROMPTS = [
    "pick up the red block",
    "open the top drawer of the cabinet and put the bowl inside",
    "stack",
    "put the bowl on the plate",
]
PRUNING = {
    "unpruned": PrunerConfig(),
    "keep_tokens": PrunerConfig(enabled=True, budget="keep_tokens", keep_tokens=20),
    "keep_ratio": PrunerConfig(enabled=True, budget="keep_ratio", keep_ratio=0.25),
    # adaptive: every sample keeps its own count, the batch pads to the largest
    "adaptive": PrunerConfig(enabled=True, budget="adaptive", min_keep=4),
    "buckets": PrunerConfig(enabled=True, budget="adaptive", min_keep=4, buckets=(48, 96)),
    "lowrank_untrimmed": PrunerConfig(
        enabled=True, scorer="lowrank", budget="keep_ratio", trim_prompt_padding=False
    ),
}
ORDERS = [[0, 1], [1, 0], [5, 2, 7], list(range(8)), [7, 3, 6, 0, 5, 1, 4, 2], [4, 4, 1]]


@pytest.fixture
def threads(request):
    """Intra-op threads for the test (indirect parameter; default 1), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(getattr(request, "param", 1))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> PromptTokenizer:
    path = train_sentencepiece(PROMPTS, tmp_path_factory.mktemp("tok") / "t.model", 512)
    return PromptTokenizer(path, tiny().max_token_len)


def make_policy(
    pruning: PrunerConfig, tokenizer: PromptTokenizer, dtype: str = "float32"
) -> Policy:
    torch.manual_seed(0)
    model = Pi05Model(dataclasses.replace(tiny(), pruning=pruning, dtype=dtype))
    rng = np.random.default_rng(0)
    stats = {
        "state": NormStats.from_data(rng.normal(size=(64, 8))),
        "actions": NormStats.from_data(rng.uniform(-1, 1, size=(64, 7))),
    }
    return Policy(model, PolicyConfig(), tokenizer, stats)


def raw_observations(n: int, seed: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "observation/image": rng.integers(0, 256, (112, 112, 3), dtype=np.uint8),
            "observation/wrist_image": rng.integers(0, 256, (112, 112, 3), dtype=np.uint8),
            "observation/state": rng.normal(size=8).astype(np.float32),
            "prompt": PROMPTS[i % len(PROMPTS)],
        }
        for i in range(n)
    ]


def check_alone_equals_batched(policy: Policy, obs: list[dict], orders: list[list[int]]):
    alone = [policy.infer(o) for o in obs]
    for order in orders:
        batch = policy.infer_batch([obs[i] for i in order])
        for pos, i in enumerate(order):
            got, want = batch[pos], alone[i]
            assert got["pruning"] == want["pruning"], (order, pos)
            diff = np.abs(got["actions"] - want["actions"]).max()
            assert np.array_equal(got["actions"], want["actions"]), (order, pos, diff)
    return alone


@pytest.mark.parametrize("name", list(PRUNING))
def test_infer_batch_is_bitwise_batch_invariant(name, threads, tokenizer):
    alone = check_alone_equals_batched(
        make_policy(PRUNING[name], tokenizer), raw_observations(8), ORDERS
    )
    if name == "adaptive":  # the case the fix exists for: companions of other lengths
        kept = {a["pruning"]["kept_tokens"] for a in alone}
        assert len(kept) > 1, kept


# Two threads: MKL splits a lone matrix's rows over them (policies/invariant.py `_bmm`).
# Few observations: on 2 cores shared with other work, 2 OpenMP threads run ~60x slower.
@pytest.mark.parametrize("threads", [2], indirect=True)
@pytest.mark.parametrize("name", ["unpruned", "keep_ratio"])
def test_two_threads_batch_invariant(name, threads, tokenizer):
    assert threads == 2
    policy = make_policy(PRUNING[name], tokenizer)
    check_alone_equals_batched(policy, raw_observations(3), [[0, 1, 2], [2, 0]])


# bf16 (openpi's mixed precision, as full-size π0.5 runs on CPU): its Linears take one
# F.linear call per sample (policies/invariant.py `_linear_each`), never the bf16 bmm.
@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("name", ["unpruned", "keep_ratio"])
def test_bf16_batch_invariant(name, threads, tokenizer):
    policy = make_policy(PRUNING[name], tokenizer, dtype="bfloat16")
    assert policy.model.compute_dtype == torch.bfloat16
    check_alone_equals_batched(policy, raw_observations(3), [[0, 1, 2], [2, 0]])


def _rows(obs: Observation, idx: list[int]) -> Observation:
    return Observation(
        images={k: v[idx] for k, v in obs.images.items()},
        image_masks={k: v[idx] for k, v in obs.image_masks.items()},
        state=obs.state[idx],
        tokenized_prompt=obs.tokenized_prompt[idx],
        tokenized_prompt_mask=obs.tokenized_prompt_mask[idx],
    )


@pytest.mark.parametrize("name", ["adaptive", "unpruned"])
def test_length_groups_are_the_prefixes_embedded_alone(name, tokenizer):
    """The groups sample() runs are cut from the padded batch prefix; each equals the
    prefix its samples get alone, bitwise (embeddings, masks, position ids)."""
    policy = make_policy(PRUNING[name], tokenizer)
    from policies.policy import build_observation

    obs = build_observation(
        raw_observations(6), policy.model.config, policy.config, tokenizer, policy.norm_stats
    )
    model = policy.model

    def embed(o: Observation):  # as sample() embeds: unpruned prefixes lose their padding
        prefix = model.embed_prefix(o)
        return drop_padding(prefix) if prefix.own_lengths is None else prefix

    with torch.no_grad():
        batched = embed(obs)
        groups = split_by_length(batched)
        assert len(groups) > 1  # four prompt lengths (and adaptive counts): several shapes
        seen = []
        for rows, part in groups:
            for j, i in enumerate(rows.tolist()):
                one = embed(_rows(obs, [i]))
                for f in ("embs", "pad_masks", "att_masks", "position_ids", "next_position"):
                    assert torch.equal(getattr(part, f)[j], getattr(one, f)[0]), (i, f)
                seen.append(i)
    assert sorted(seen) == list(range(6))


def mixed_camera_observation(n: int) -> Observation:
    """n samples of the tiny model; the third camera present for every other sample."""
    cfg = tiny()
    g = torch.Generator().manual_seed(5)
    size = cfg.vision.image_size
    images = {c: torch.rand(n, 3, size, size, generator=g) * 2 - 1 for c in cfg.camera_names}
    masks = {c: torch.ones(n, dtype=torch.bool) for c in cfg.camera_names}
    masks[cfg.camera_names[2]] = torch.arange(n) % 2 == 0
    lengths = torch.tensor([3, 9, 5, 12, 7][:n] + [4] * max(0, n - 5))
    prompt_mask = torch.arange(cfg.max_token_len)[None] < lengths[:, None]
    tokens = torch.randint(1, cfg.vocab_size, (n, cfg.max_token_len), generator=g) * prompt_mask
    return Observation(
        images=images,
        image_masks=masks,
        state=torch.zeros(n, cfg.action_dim),
        tokenized_prompt=tokens,
        tokenized_prompt_mask=prompt_mask,
    )


def test_unpruned_eval_prefix_leaves_padding_out():
    """Unpruned eval embeds a sample's valid patches and prompt only (an absent camera and
    the prompt's tail are padding): no padding slot alone, bitwise the same actions alone
    and beside samples with another camera set, and the padded prefix's actions up to
    rounding (padding is masked out of every attention and advances no position)."""
    torch.manual_seed(0)
    model = Pi05Model(tiny()).eval()
    obs = mixed_camera_observation(5)
    noise = torch.randn(1, 10, 32).expand(5, -1, -1).contiguous()
    with torch.no_grad():
        batched = model.sample(obs, noise).actions
        for i in range(5):
            one = _rows(obs, [i])
            prefix = drop_padding(model.embed_prefix(one))
            assert bool(prefix.pad_masks.all()), i
            valid = 64 * (3 if i % 2 == 0 else 2) + int(one.tokenized_prompt_mask.sum())
            assert prefix.embs.shape[1] == valid, i
            assert torch.equal(model.sample(one, noise[:1]).actions[0], batched[i]), i
        prefix = model.embed_prefix(obs)  # openpi's padded layout, as the parity tests see it
        cache = model.prefill(prefix)
        x_t, dt = noise, -0.1
        for step in range(10):
            time = torch.tensor(1.0 + step * dt).expand(5)
            x_t = x_t + dt * model.denoise_step(prefix, cache, x_t, time)
    torch.testing.assert_close(batched, x_t, rtol=0, atol=1e-5)


def test_invariance_probes_tell_batch_dependent_functions_apart(threads):
    """The probes behind the fast paths (flattened GEMMs, SDPA at inference) say no to a
    function whose sample depends on its companions."""
    from policies.invariant import rows_independent, same_alone_and_batched

    one = (torch.randn(1, 6, 8),)
    assert same_alone_and_batched(lambda x: x * 2.0, one)
    assert not same_alone_and_batched(lambda x: x - x.mean(0, keepdim=True), one)
    assert isinstance(rows_independent(64, 96, torch.float32), bool)


@pytest.mark.parametrize("name", ["unpruned", "adaptive"])
def test_packed_pass_is_the_per_group_passes_bitwise(name, threads, tokenizer, monkeypatch):
    """Mixed lengths on one thread run ONE padded pass with per-group attention
    (`Pi05Model._runs`); its actions are bitwise those of one pass per length group."""
    from policies.pi05.model import length_groups
    from policies.policy import build_observation

    policy = make_policy(PRUNING[name], tokenizer)
    model = policy.model
    obs = build_observation(
        raw_observations(8), model.config, policy.config, tokenizer, policy.norm_stats
    )
    noise = torch.randn(8, model.config.action_horizon, model.config.action_dim)
    with torch.no_grad():
        prefix = model.embed_prefix(obs)
        prefix = drop_padding(prefix) if prefix.own_lengths is None else prefix
        segments = length_groups(prefix)
        assert segments is not None and len(segments) > 1
        if not model._packs(prefix, segments):
            pytest.skip("this machine's BLAS does not compute rows independently on one thread")
        runs = model._runs(prefix)
        assert len(runs) == 1 and runs[0][3] is not None  # one pass, groups attend apart
        packed = model.sample(obs, noise).actions
        monkeypatch.setattr(Pi05Model, "_packs", lambda self, prefix, segments: False)
        assert len(model._runs(prefix)) == len(segments)
        split = model.sample(obs, noise).actions
    assert torch.equal(packed, split), (packed - split).abs().max()


def test_rows_probe_says_no_to_a_kernel_whose_rows_depend_on_the_others(monkeypatch):
    """`rows_independent` rejects a GEMM whose row results move with the row count or the
    other rows (what MKL does on two threads), so the flattened fast path is never taken
    on such a BLAS; the model's Linears then run per sample."""
    import types

    import torch.nn.functional as F

    import policies.invariant as inv

    def by_row_count(x, w, b=None):  # rounding that changes with M, as a kernel switch does
        y = F.linear(x, w, b)
        return y + (x.shape[0] % 3 == 0) * 1e-6

    def by_companions(x, w, b=None):
        y = F.linear(x, w, b)
        return y + 1e-7 * y.mean(0, keepdim=True)

    for leaky in (by_row_count, by_companions):
        inv._rows_independent.cache_clear()
        monkeypatch.setattr(inv, "F", types.SimpleNamespace(linear=leaky))
        assert not inv.rows_independent(64, 96, torch.float32), leaky.__name__
    inv._rows_independent.cache_clear()
    monkeypatch.setattr(inv, "F", F)
    rowwise = types.SimpleNamespace(linear=lambda x, w, b: (x[:, :, None] * w.t()).sum(1) + b)
    monkeypatch.setattr(inv, "F", rowwise)  # exactly row-wise by construction
    assert inv.rows_independent(64, 96, torch.float32)
    inv._rows_independent.cache_clear()


def test_sdpa_probe_says_no_to_a_batch_dependent_attention(monkeypatch):
    """The joint layers' SDPA probe rejects an attention whose sample depends on its batch."""
    import policies.pi05.layers as layers

    real = layers.fused_attention

    def leaky(q, k, v, mask, scale, bias=None):
        y = real(q, k, v, mask, scale, bias)
        return y + 1e-7 * y.mean(0, keepdim=True)

    layers._sdpa_probe.cache_clear()
    monkeypatch.setattr(layers, "fused_attention", leaky)
    assert not layers._sdpa_probe(4, 1, 12, 20, 16, torch.float32, 0.25)
    layers._sdpa_probe.cache_clear()
    monkeypatch.setattr(layers, "fused_attention", real)
    layers._sdpa_probe(4, 1, 12, 20, 16, torch.float32, 0.25)  # the real one: a bool either way
    layers._sdpa_probe.cache_clear()
