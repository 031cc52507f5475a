"""The pruner inside π0.5's prefix: true pruning, position ids, batching, telemetry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from policies.pi05.config import tiny
from policies.pi05.model import Pi05Model
from policies.pruning import METRIC_NAMES, NoiseScheduleConfig, PrunerConfig
from prunepi.quickstart import random_observation

B = 3


def model_with(**pruning) -> Pi05Model:
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny(), pruning=PrunerConfig(enabled=True, **pruning))
    return Pi05Model(cfg).eval()


def obs_for(model, batch=B, seed=0):
    obs = random_observation(model.config, batch, torch.Generator().manual_seed(seed))
    return obs


def noise_for(model, batch=B):
    c = model.config
    return torch.randn(
        batch, c.action_horizon, c.action_dim, generator=torch.Generator().manual_seed(9)
    )


def test_keeping_all_tokens_reproduces_unpruned_actions_exactly():
    model = model_with(budget="keep_ratio", keep_ratio=1.0)
    obs, noise = obs_for(model), noise_for(model)
    obs.image_masks = {k: torch.ones_like(v) for k, v in obs.image_masks.items()}
    pruned = model.sample(obs, noise, prune=True)
    unpruned = model.sample(obs, noise, prune=False)
    assert torch.equal(pruned.kept_tokens, unpruned.kept_tokens)
    assert pruned.prefix_len == unpruned.prefix_len
    assert torch.equal(pruned.actions, unpruned.actions)  # bitwise


def test_keeping_all_valid_tokens_is_the_unpruned_eval_policy():
    """Unpruned eval leaves the masked camera's slots and the prompt's tail out
    (model.drop_padding), as keeping every valid patch does: the same prefix, bitwise."""
    model = model_with(budget="keep_ratio", keep_ratio=1.0)
    obs, noise = obs_for(model), noise_for(model)  # third camera masked
    pruned = model.sample(obs, noise, prune=True)
    unpruned = model.sample(obs, noise, prune=False)
    longest = int(obs.tokenized_prompt_mask.sum(1).max())
    assert pruned.prefix_len == unpruned.prefix_len == 2 * model.config.vision.num_patches + longest
    assert torch.equal(pruned.actions, unpruned.actions)


def test_prompt_trimming_changes_nothing_but_length():
    untrimmed = model_with(budget="keep_ratio", keep_ratio=1.0, trim_prompt_padding=False)
    trimmed = model_with(budget="keep_ratio", keep_ratio=1.0, trim_prompt_padding=True)
    obs, noise = obs_for(trimmed), noise_for(trimmed)
    short = trimmed.sample(obs, noise, prune=True)
    full = untrimmed.sample(obs, noise, prune=True)
    longest = int(obs.tokenized_prompt_mask.sum(1).max())
    n_valid = trimmed.config.vision.num_patches * 2  # random_observation masks the 3rd camera
    assert short.prefix_len == n_valid + longest < full.prefix_len
    torch.testing.assert_close(short.actions, full.actions, atol=1e-5, rtol=1e-5)


def test_eval_really_shortens_prefix_and_kv_cache():
    model = model_with(budget="keep_tokens", keep_tokens=10, trim_prompt_padding=False)
    obs = obs_for(model)
    prefix = model.embed_prefix(obs)
    L = model.config.max_token_len
    assert prefix.embs.shape[1] == 10 + L
    assert prefix.kept_tokens.tolist() == [10] * B
    cache = model.prefill(prefix)
    assert cache[0][0].shape[2] == 10 + L  # every denoise step reads this shorter cache
    out = model.sample(obs, noise_for(model))
    assert out.prefix_len == 10 + L and out.actions.shape == (B, 10, 32)


def test_masked_camera_patches_are_never_kept():
    model = model_with(budget="keep_ratio", keep_ratio=1.0)
    obs = obs_for(model)
    P = model.config.vision.num_patches
    prefix = model.embed_prefix(obs)
    assert prefix.kept_tokens.tolist() == [2 * P] * B  # third camera masked for all
    r = model.pruner(
        *model.embed_images(obs),
        model.embed_language(obs.tokenized_prompt),
        obs.tokenized_prompt_mask,
    )
    assert int(r.index[r.valid].max()) < 2 * P


@pytest.mark.parametrize("numbering", ["openpi", "lightvla", "compact"])
def test_position_ids_follow_convention(numbering):
    model = model_with(
        budget="keep_tokens", keep_tokens=12, position_ids=numbering, trim_prompt_padding=False
    )
    obs = obs_for(model)
    cfg = model.config
    P, N, L = cfg.vision.num_patches, cfg.num_patches_total, cfg.max_token_len
    with torch.no_grad():
        patches, valid = model.embed_images(obs)
        r = model.pruner(
            patches, valid, model.embed_language(obs.tokenized_prompt), obs.tokenized_prompt_mask
        )
        prefix = model.embed_prefix(obs)
    n_lang = obs.tokenized_prompt_mask.sum(1)
    for b in range(B):
        pos = prefix.position_ids[b]
        kept = r.index[b][r.valid[b]]
        if numbering == "openpi":
            # Unpruned openpi id: a valid patch's index among valid tokens; language starts
            # at the count of valid patches (2 cameras: 2P), suffix after valid language.
            assert pos[:12].tolist() == kept.tolist()  # first two cameras valid: id == index
            assert pos[12].item() == 2 * P
            assert prefix.next_position[b].item() == 2 * P + n_lang[b].item()
        elif numbering == "lightvla":
            assert pos[:12].tolist() == kept.tolist()
            assert pos[12:].tolist() == list(range(N, N + L))
            assert prefix.next_position[b].item() == N + L
        else:
            assert pos[: 12 + n_lang[b]].tolist() == list(range(12 + n_lang[b].item()))
            assert prefix.next_position[b].item() == 12 + n_lang[b].item()


def test_openpi_ids_have_gaps_when_a_middle_camera_is_masked():
    model = model_with(budget="keep_ratio", keep_ratio=1.0, trim_prompt_padding=False)
    obs = obs_for(model, batch=1)
    names = model.config.camera_names
    obs.image_masks = {
        names[0]: torch.tensor([True]),
        names[1]: torch.tensor([False]),
        names[2]: torch.tensor([True]),
    }
    P = model.config.vision.num_patches
    prefix = model.embed_prefix(obs)
    # openpi's rule: the masked middle camera does not advance the position, so the third
    # camera's patches continue at P, exactly as in the unpruned sequence.
    unpruned = model.embed_prefix(obs, prune=False)
    valid_ids = unpruned.position_ids[0][unpruned.pad_masks[0]]
    assert prefix.position_ids[0][prefix.pad_masks[0]].tolist() == valid_ids.tolist()
    assert prefix.position_ids[0][P].item() == P  # first patch of camera 3


def test_batch_independence():
    model = model_with(budget="adaptive", min_keep=4)
    obs = obs_for(model, batch=4, seed=3)
    noise = noise_for(model, batch=4)
    together = model.sample(obs, noise)
    for i in range(4):
        one = type(obs)(
            images={k: v[i : i + 1] for k, v in obs.images.items()},
            image_masks={k: v[i : i + 1] for k, v in obs.image_masks.items()},
            state=obs.state[i : i + 1],
            tokenized_prompt=obs.tokenized_prompt[i : i + 1],
            tokenized_prompt_mask=obs.tokenized_prompt_mask[i : i + 1],
        )
        alone = model.sample(one, noise[i : i + 1])
        assert alone.kept_tokens.item() == together.kept_tokens[i].item()
        torch.testing.assert_close(alone.actions[0], together.actions[i], atol=1e-5, rtol=1e-5)


def test_buckets_round_prefix_length_up():
    model = model_with(
        budget="keep_tokens", keep_tokens=10, buckets=(16, 64), trim_prompt_padding=False
    )
    prefix = model.embed_prefix(obs_for(model))
    assert prefix.embs.shape[1] == 16 + model.config.max_token_len
    assert prefix.kept_tokens.tolist() == [10] * B


def test_train_mode_keeps_length_and_reports_telemetry():
    model = model_with(scorer="lowrank", noise=NoiseScheduleConfig(kind="linear", total_steps=10))
    model.train()
    obs = obs_for(model)
    c = model.config
    actions = torch.randn(B, c.action_horizon, c.action_dim)
    out = model.forward(obs, actions, step=0)
    assert out.prefix.embs.shape[1] == c.num_patches_total + c.max_token_len
    assert set(METRIC_NAMES) <= set(out.metrics)
    assert out.metrics["prune/noise_scale"] == pytest.approx(1.0)
    out.loss.mean().backward()
    grads = [p.grad for p in model.pruner.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    late = model.forward(obs, actions, step=10)
    assert late.metrics["prune/noise_scale"] == pytest.approx(0.0)


def test_train_slot_position_ids_follow_selected_patch():
    model = model_with(budget="keep_tokens", keep_tokens=8)
    model.train()
    obs = obs_for(model, batch=2)
    with torch.no_grad():
        prefix = model.embed_prefix(obs, step=None)
        unpruned = model.embed_prefix(obs, prune=False)
    N = model.config.num_patches_total
    patches, valid = model.embed_images(obs)
    r = model.pruner(
        patches, valid, model.embed_language(obs.tokenized_prompt), obs.tokenized_prompt_mask
    )
    expect = unpruned.position_ids[:, :N].gather(1, r.index)
    assert torch.equal(prefix.position_ids[:, :N], expect)
    # zero noise: the distinct patches selected in training are exactly what eval keeps
    model.eval()
    kept = model.pruner(
        patches, valid, model.embed_language(obs.tokenized_prompt), obs.tokenized_prompt_mask
    )
    for b in range(2):
        assert set(r.index[b][valid[b]].tolist()) == set(kept.index[b][kept.valid[b]].tolist())


def test_every_position_ids_mode_has_one_numbering():
    from policies.pi05.positions import NUMBERINGS
    from policies.pruning.config import POSITION_IDS

    assert tuple(NUMBERINGS) == POSITION_IDS


def test_compact_position_ids_agree_between_training_and_eval():
    """issue 13: "compact" numbered every training slot by its own position but renumbered
    the kept tokens in eval. Now a training slot takes the rank of the patch it selected:
    with no noise the training ids are the eval ids, patch for patch."""
    model = model_with(position_ids="compact", trim_prompt_padding=False)  # adaptive, no noise
    obs = obs_for(model)
    with torch.no_grad():
        ev = model.embed_prefix(obs)
        model.train()
        tr = model.embed_prefix(obs)  # step None: no noise
        model.eval()
        patches, valid = model.embed_images(obs)
        model.train()
        r = model.pruner(
            patches, valid, model.embed_language(obs.tokenized_prompt), obs.tokenized_prompt_mask
        )
        model.eval()
    N, L = model.config.num_patches_total, obs.tokenized_prompt.shape[1]
    assert torch.equal(tr.next_position, ev.next_position)
    for b in range(B):
        k = int(ev.kept_tokens[b])
        eval_ids = dict(zip(ev.position_ids[b, :k].tolist(), range(k)))
        assert list(eval_ids) == list(range(k))  # eval: 0..k-1, no gaps
        slots = r.valid[b]
        train_ids = tr.position_ids[b, :N][slots]
        assert set(train_ids.tolist()) == set(range(k))  # the same ids, shared by duplicates
        assert torch.equal(tr.position_ids[b, N:], ev.position_ids[b, -L:])  # language


def losses_train_and_eval(model, obs, seed=3):
    """Flow loss of the same weights, batch, noise and time in train mode (no pruner noise)
    and in eval mode (the pruned sequence, as `sample` runs it)."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    actions = torch.randn(B, c.action_horizon, c.action_dim, generator=g)
    noise = torch.randn(B, c.action_horizon, c.action_dim, generator=g)
    time = torch.rand(B, generator=g) * 0.9 + 0.05
    with torch.no_grad():
        model.train()
        train = model.forward(obs, actions, noise, time, step=None).loss.mean()
        model.eval()
        evaluated = model.forward(obs, actions, noise, time).loss.mean()
    return float(train), float(evaluated)


@pytest.mark.parametrize(
    "pruning",
    [
        {},  # adaptive: many slots select the same patch
        {"budget": "keep_ratio", "keep_ratio": 0.5, "position_ids": "compact"},
    ],
)
def test_masked_training_runs_the_eval_sequence(pruning):
    """`train_tokens="masked"` trains on what eval runs: each kept patch once, the rest out
    of attention, so the two losses agree; LightVLA's copies do not (train_eval_gap.py)."""
    masked = model_with(train_tokens="masked", **pruning)
    obs = obs_for(masked)
    train, evaluated = losses_train_and_eval(masked, obs)
    assert train == pytest.approx(evaluated, rel=1e-6)  # bitwise on our CPU
    copies = model_with(train_tokens="copies", **pruning)
    train, evaluated = losses_train_and_eval(copies, obs)
    assert abs(train - evaluated) > 1e-4 * evaluated  # 8e-4 at random init


def test_masked_training_keeps_length_and_trains_the_scorer():
    model = model_with(
        scorer="lowrank", train_tokens="masked", noise=NoiseScheduleConfig(kind="constant")
    )
    model.train()
    obs = obs_for(model)
    c = model.config
    out = model.forward(obs, torch.randn(B, c.action_horizon, c.action_dim), step=0)
    N = c.num_patches_total
    assert out.prefix.embs.shape[1] == N + c.max_token_len
    bias = out.prefix.key_bias
    kept = bias[:, :N] == 0
    assert torch.equal(kept.sum(1), out.prefix.kept_tokens)  # the gate keeps what it counts
    assert (bias[:, :N][~kept] < -40).all() and (bias[:, N:] == 0).all()
    out.loss.mean().backward()
    grads = [p.grad for p in model.pruner.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
