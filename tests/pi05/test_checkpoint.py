"""openpi checkpoint layout: strict load, clear errors, save in the same layout."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from policies.pi05.checkpoint import (
    EMBED_KEY,
    EXPERT_LM_HEAD_KEY,
    LM_HEAD_KEY,
    CheckpointError,
    config_from_checkpoint,
    load_openpi_weights,
    save_openpi_weights,
)
from policies.pi05.config import from_openpi_fixture_config, tiny
from policies.pi05.model import Pi05Model
from prunepi.quickstart import random_observation
from tests.fixtures import openpi_fixture_dir, openpi_keys_txt


def test_saved_layout_is_openpis(tmp_path):
    model = Pi05Model(tiny())
    path = save_openpi_weights(model, tmp_path)
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert LM_HEAD_KEY in keys and EXPERT_LM_HEAD_KEY in keys
    assert EMBED_KEY not in keys  # tied: stored once, as lm_head (save_model drops it)
    own = set(model.state_dict()) - {EMBED_KEY}
    assert keys == own | {LM_HEAD_KEY, EXPERT_LM_HEAD_KEY}


def test_fixture_keys_equal_ours():
    meta = json.loads((openpi_fixture_dir() / "config.json").read_text())
    model = Pi05Model(from_openpi_fixture_config(meta))
    ours = set(model.state_dict()) - {EMBED_KEY} | {LM_HEAD_KEY, EXPERT_LM_HEAD_KEY}
    assert ours == set(meta["keys"])


def test_pi05_key_list_matches_openpi():
    """Every state-dict key of openpi's full-size π0.5 (with shapes) is one of ours."""
    from policies.pi05.config import pi05

    with torch.device("meta"):
        model = Pi05Model(pi05())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref = {}
    for line in openpi_keys_txt().read_text().splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and parts[0].startswith(("paligemma", "action", "time")):
            ref[parts[0]] = tuple(
                int(x) for x in parts[1].split(")")[0].strip("( ").split(",") if x.strip()
            )
    ref.pop("paligemma_with_expert.gemma_expert.lm_head.weight", None)
    ref.pop(LM_HEAD_KEY, None)
    assert ref == ours


def test_roundtrip_bitwise(tmp_path):
    torch.manual_seed(0)
    cfg = tiny()
    a = Pi05Model(cfg).eval()
    save_openpi_weights(a, tmp_path)
    torch.manual_seed(1)
    b = Pi05Model(cfg).eval()
    load_openpi_weights(b, tmp_path / "model.safetensors")
    obs = random_observation(cfg, 2, torch.Generator().manual_seed(0))
    noise = torch.randn(2, cfg.action_horizon, cfg.action_dim)
    assert torch.equal(a.sample_actions(obs, noise, 2), b.sample_actions(obs, noise, 2))


def test_bf16_file_loads_into_fp32_model(tmp_path):
    model = Pi05Model(tiny())
    save_openpi_weights(model, tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, tmp_path / "bf16.safetensors")
    m2 = Pi05Model(tiny())
    load_openpi_weights(m2, tmp_path / "bf16.safetensors")
    w = m2.action_in_proj.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, model.action_in_proj.weight.to(torch.bfloat16).float())


def _rewrite(tmp_path, edit):
    model = Pi05Model(tiny())
    save_openpi_weights(model, tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    edit(sd)
    save_file(sd, tmp_path / "model.safetensors")
    return tmp_path / "model.safetensors"


def test_missing_key_is_named(tmp_path):
    p = _rewrite(tmp_path, lambda sd: sd.pop("action_out_proj.bias"))
    with pytest.raises(CheckpointError, match="missing key 'action_out_proj.bias'"):
        load_openpi_weights(Pi05Model(tiny()), p)


def test_unexpected_key_is_named(tmp_path):
    p = _rewrite(tmp_path, lambda sd: sd.__setitem__("state_proj.weight", torch.zeros(3, 4)))
    with pytest.raises(
        CheckpointError, match=r"unexpected key 'state_proj.weight' with shape \[3, 4\]"
    ):
        load_openpi_weights(Pi05Model(tiny()), p)


def test_misshaped_key_names_both_shapes(tmp_path):
    p = _rewrite(tmp_path, lambda sd: sd.__setitem__("action_out_proj.bias", torch.zeros(7)))
    with pytest.raises(CheckpointError, match=r"action_out_proj.bias.*\[7\].*\[32\]"):
        load_openpi_weights(Pi05Model(tiny()), p)


def test_config_mismatch_names_field(tmp_path):
    save_openpi_weights(Pi05Model(tiny()), tmp_path)
    other = dataclasses.replace(tiny(), vocab_size=600)
    with pytest.raises(CheckpointError, match="vocab_size = 600 but the checkpoint has 512"):
        load_openpi_weights(Pi05Model(other), tmp_path / "model.safetensors")


def test_truncated_file_is_refused(tmp_path):
    save_openpi_weights(Pi05Model(tiny()), tmp_path)
    p = tmp_path / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_openpi_weights(Pi05Model(tiny()), p)


def test_config_from_checkpoint_reads_sizes(tmp_path):
    cfg = dataclasses.replace(tiny(), vocab_size=300, action_dim=8)
    save_openpi_weights(Pi05Model(cfg), tmp_path)
    got = config_from_checkpoint(tmp_path / "model.safetensors", tiny())
    assert got.vocab_size == 300 and got.action_dim == 8
    assert got.paligemma == cfg.paligemma and got.vision == cfg.vision


def test_config_from_checkpoint_refuses_head_counts_it_cannot_fit(tmp_path):
    """tiny's Gemma has 4 heads x 32 and 1 kv head x 32; a base with 8 heads would derive
    head_dim 16 and kv heads 2, a base with 3 heads does not divide 128 at all."""
    save_openpi_weights(Pi05Model(tiny()), tmp_path)
    path = tmp_path / "model.safetensors"
    base = tiny()
    odd = dataclasses.replace(base, paligemma=dataclasses.replace(base.paligemma, num_heads=3))
    with pytest.raises(CheckpointError, match="paligemma.num_heads: 3"):
        config_from_checkpoint(path, odd)
    few = dataclasses.replace(
        base, paligemma=dataclasses.replace(base.paligemma, num_heads=1, head_dim=128)
    )
    with pytest.raises(CheckpointError, match="paligemma.num_kv_heads"):
        config_from_checkpoint(path, few)
