"""Full-size π0.5 (openpi's `pi05`, ~3.3 B parameters) on CPU in bf16: build, save in openpi's
layout, reload strictly, sample with and without the pruner (keep 78 of 768 patch tokens).

The body (benchmarks/pi05_cpu_full.py, shared with the benchmark that records memory and
phase times) runs in a child process; this test asserts correctness only, never times.
About 7 GiB of heap (13 GiB RSS while the loader maps the 7 GB file), 2-4 min on 2 cores.
"""

from __future__ import annotations

import pytest

from benchmarks.pi05_cpu_full import SAMPLED_KEYS, run_in_subprocess
from policies.pi05.config import pi05

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("pi05_full")
    try:
        return run_in_subprocess(folder, keep_tokens=78)
    finally:  # pytest keeps its last temp folders: do not leave 7 GB behind
        (folder / "model.safetensors").unlink(missing_ok=True)


def test_bf16_build_and_openpi_layout(result):
    assert 3.0e9 < result["params"] < 3.7e9, result["params"]
    # openpi's keep-list stays fp32, everything else is bf16 (policies/pi05/model.py FP32_KEEP)
    assert result["param_bytes"]["torch.bfloat16"] > 6e9
    # fp32: SigLIP patch/position embeddings, Gemma norms and the expert's adaRMS dense
    # layers (named `*_layernorm.dense`, so openpi's keep-list matches them): ~0.48 GB
    assert 0 < result["param_bytes"]["torch.float32"] < 0.6e9
    assert set(result["file_dtypes"]) == {"BF16", "F32"}
    assert result["lm_head_key"]  # tied embedding stored as openpi's lm_head
    assert result["file_bytes"] > 6e9


def test_strict_reload_is_bitwise(result):
    saved, loaded = result["digests_saved"], result["digests_loaded"]
    assert set(saved) == set(loaded) == set(SAMPLED_KEYS)
    for key in SAMPLED_KEYS:
        assert loaded[key] == saved[key], key
    assert result["nan_params_after_load"] == 0  # every NaN-filled tensor was overwritten


def test_pruned_sample_keeps_78_and_shortens_prefix(result):
    cfg = pi05()
    pr, full = result["pruned"], result["unpruned"]
    assert pr["total_tokens"] == full["total_tokens"] == cfg.num_patches_total == 768
    assert pr["kept_tokens"] == [78]
    assert full["kept_tokens"] == [768]
    # pruned: 78 patches + the prompt trimmed to its valid tokens. Unpruned inference runs
    # without padding slots too (policies/pi05/model.py `drop_padding`): all 768 patches
    # (every camera present) + the valid prompt, not openpi's 768 + 200 padded slots.
    assert pr["prefix_len"] == 78 + result["prompt_len"]
    assert full["prefix_len"] == 768 + result["prompt_len"]
    assert result["prompt_len"] < cfg.max_token_len  # so the padding-free path is taken
    assert pr["prefix_len"] < full["prefix_len"]


@pytest.mark.parametrize("run", ["pruned", "unpruned"])
def test_actions_finite_with_openpi_shape(result, run):
    cfg = pi05()
    assert result[run]["actions_shape"] == [1, cfg.action_horizon, cfg.action_dim]
    assert result[run]["finite"]
    assert result["repeat_bitwise_equal"]  # same weights, inputs and noise: same actions
