"""Numeric parity with the real openpi `PI0Pytorch` (pi05) on stored fixtures.

Every committed fixture (tests/fixtures/openpi_pi05_tiny_*: batch sizes 1-8, prompt lengths
from 1 to the full slot count, cameras masked per sample, horizons 4-16, 4 and 8 heads,
SigLIP grids of 4x4 to 16x16 patches), plus `PRUNEPI_OPENPI_FIXTURE` if set, each run on 1
and on 2 threads: the inference fast paths are chosen per shape and thread count
(policies/invariant.py), so each must keep openpi's numbers where it is taken. Every size
comes from the fixture's config.json, the tolerances from its `suggested_tolerance`.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from safetensors.torch import load_file

from policies.pi05.checkpoint import load_openpi_weights
from policies.pi05.config import from_openpi_fixture_config
from policies.pi05.model import Observation, Pi05Model
from tests.fixtures import openpi_fixture_dirs

pytestmark = pytest.mark.openpi_parity

CASES = [(folder, threads) for folder in openpi_fixture_dirs() for threads in (1, 2)]


@contextlib.contextmanager
def num_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", params=CASES, ids=[f"{f.name}-{t}thr" for f, t in CASES])
def fx(request):
    folder, threads = request.param
    meta = json.loads((folder / "config.json").read_text())
    meta["case_threads"] = threads  # ours in this case (config.json "threads": openpi's)
    torch.manual_seed(0)
    model = Pi05Model(from_openpi_fixture_config(meta)).eval()
    load_openpi_weights(model, folder / "model.safetensors")
    inputs = load_file(folder / "inputs.safetensors")
    outputs = load_file(folder / "outputs.safetensors")
    return meta, model, inputs, outputs


@pytest.fixture(autouse=True)
def case_threads(fx):
    with num_threads(fx[0]["case_threads"]):
        yield


def make_obs(meta, inputs) -> Observation:
    cams = meta["camera_names"]
    return Observation(
        images={c: inputs[f"image.{c}"] for c in cams},
        image_masks={c: inputs[f"image_mask.{c}"] for c in cams},
        state=inputs["state"],
        tokenized_prompt=inputs["tokenized_prompt"],
        tokenized_prompt_mask=inputs["tokenized_prompt_mask"],
    )


def tol(meta, name: str) -> float:
    return float(meta["suggested_tolerance"][name])


def assert_close(meta, name, ours, ref, tolerance=None):
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    err = (ours.double() - ref.double()).abs().max().item()
    limit = tol(meta, name) if tolerance is None else tolerance
    assert err <= limit, f"{name}: max |diff| {err:.3g} > {limit:g}"


@pytest.fixture(scope="module")
def loss_pass(fx):
    meta, model, inputs, _ = fx
    with torch.no_grad(), num_threads(meta["case_threads"]):
        return model.forward(
            make_obs(meta, inputs), inputs["actions"], inputs["noise"], inputs["time"]
        )


def test_prefix_matches(fx):
    meta, model, inputs, out = fx
    with torch.no_grad():
        prefix = model.embed_prefix(make_obs(meta, inputs))
    assert torch.equal(prefix.pad_masks, out["prefix_pad_masks"])
    assert torch.equal(prefix.att_masks, out["prefix_att_masks"])
    assert_close(meta, "prefix_embs", prefix.embs, out["prefix_embs"])


def test_suffix_matches(fx, loss_pass):
    meta, model, inputs, out = fx
    with torch.no_grad():
        embs, pad, att, cond = model.embed_suffix(out["x_t"], inputs["time"])
    assert torch.equal(pad, out["suffix_pad_masks"])
    assert att.dtype == out["suffix_att_masks"].dtype
    assert torch.equal(att, out["suffix_att_masks"])
    assert_close(meta, "suffix_embs", embs, out["suffix_embs"])
    assert_close(meta, "adarms_cond", cond, out["adarms_cond"])


def test_loss_path_matches(fx, loss_pass):
    meta, _, _, out = fx
    assert torch.equal(loss_pass.position_ids, out["position_ids"])
    assert_close(meta, "x_t", loss_pass.x_t, out["x_t"], tolerance=1e-6)
    assert_close(meta, "v_t", loss_pass.v_t, out["v_t"])
    assert_close(meta, "loss", loss_pass.loss, out["loss"])


def test_compute_loss_is_per_element(fx):
    meta, model, inputs, out = fx
    with torch.no_grad():
        loss = model.compute_loss(
            make_obs(meta, inputs), inputs["actions"], inputs["noise"], inputs["time"]
        )
    assert loss.shape == out["loss"].shape  # [B, H, action_dim], not reduced
    assert_close(meta, "loss", loss, out["loss"])


def test_sample_actions_matches(fx):
    meta, model, inputs, out = fx
    times, vs = [], []
    res = model.sample(
        make_obs(meta, inputs),
        inputs["noise"],
        num_steps=meta["num_steps"],
        on_step=lambda t, v: (times.append(t[0].clone()), vs.append(v.clone())),
    )
    assert_close(meta, "denoise_times", torch.stack(times), out["denoise_times"], 1e-6)
    assert_close(meta, "denoise_v_t", torch.stack(vs), out["denoise_v_t"])
    assert_close(meta, "sample_actions", res.actions, out["sample_actions"])
    actions = model.sample_actions(make_obs(meta, inputs), inputs["noise"], meta["num_steps"])
    assert torch.equal(actions, res.actions)


def test_tight_tier_cpu_fp32(fx, loss_pass):
    """The optional tighter level (catches the erf-vs-tanh GELU mistake in Gemma)."""
    meta, model, inputs, out = fx
    tight = meta["suggested_tolerance"].get(
        "tight_tier_cpu_fp32 (optional; catches erf-vs-tanh GELU in the Gemma MLPs)"
    )
    if tight is None:
        pytest.skip("fixture has no tight tier")
    actions = model.sample_actions(make_obs(meta, inputs), inputs["noise"], meta["num_steps"])
    assert_close(meta, "sample_actions", actions, out["sample_actions"], tight["sample_actions"])
    assert_close(meta, "v_t", loss_pass.v_t, out["v_t"], tight["v_t"])
    assert_close(meta, "loss", loss_pass.loss, out["loss"], tight["loss"])


def test_masked_camera_pixels_do_not_matter(fx):
    """Changing a camera's pixels leaves actions and loss bitwise unchanged for every sample
    that has that camera masked (masks vary per sample)."""
    meta, model, inputs, _ = fx
    obs = make_obs(meta, inputs)
    masked = [c for c in meta["camera_names"] if not bool(inputs[f"image_mask.{c}"].all())]
    if not masked:
        pytest.skip("fixture masks no camera")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        l1 = model.compute_loss(obs, inputs["actions"], inputs["noise"], inputs["time"])
    a1 = model.sample_actions(obs, inputs["noise"])
    for c in masked:
        images = dict(obs.images)
        images[c] = torch.rand(images[c].shape, generator=g) * 2 - 1
        obs2 = Observation(
            images, obs.image_masks, obs.state, obs.tokenized_prompt, obs.tokenized_prompt_mask
        )
        rows = ~inputs[f"image_mask.{c}"]
        assert torch.equal(model.sample_actions(obs2, inputs["noise"])[rows], a1[rows]), c
        with torch.no_grad():
            l2 = model.compute_loss(obs2, inputs["actions"], inputs["noise"], inputs["time"])
        assert torch.equal(l2[rows], l1[rows]), c


def test_each_sample_alone_matches_openpis_batch(fx):
    """A sample inferred alone gives openpi's actions for it in the fixture's batch: the
    padding-free prefix cuts every sample to its own valid tokens, whatever its companions
    have (a full prompt or all cameras elsewhere in the batch must not move its slots)."""
    meta, model, inputs, out = fx
    B = meta["batch_size"]
    if B == 1:
        pytest.skip("fixture has one sample")
    obs = make_obs(meta, inputs)
    for b in range(B):
        one = Observation(
            {c: x[b : b + 1] for c, x in obs.images.items()},
            {c: m[b : b + 1] for c, m in obs.image_masks.items()},
            obs.state[b : b + 1],
            obs.tokenized_prompt[b : b + 1],
            obs.tokenized_prompt_mask[b : b + 1],
        )
        alone = model.sample_actions(one, inputs["noise"][b : b + 1], meta["num_steps"])
        assert_close(meta, "sample_actions", alone[0], out["sample_actions"][b])
