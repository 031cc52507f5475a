"""A tiny checkpoint folder laid out exactly as openpi writes a PyTorch checkpoint.

openpi's `examples/convert_jax_model_to_pytorch.py` writes `model.safetensors`, copies the
JAX checkpoint's `assets/` (norm stats under `assets/<asset_id>/norm_stats.json`, the asset
id of LIBERO being `physical-intelligence/libero`) and writes its own small `config.json`.
The weights here are openpi's own (tests/fixtures/openpi_pi05_tiny_a, made by openpi's
PI0Pytorch); the norm stats are written in openpi's format (shared/normalize.py
`serialize_json`: {"norm_stats": {key: {mean, std, q01, q99}}}). openpi ships no tokenizer in
a checkpoint, so `make_tokenizer` fits one in the test (PaliGemma's is not downloaded).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from policies.tokenizer import train_sentencepiece
from tests.fixtures import openpi_fixture_dir

ASSET_ID = "physical-intelligence/libero"
TASKS = ("put the red block in the bowl", "open the top drawer", "stack the blocks")
STATE_DIM, ACTION_DIM = 8, 7  # LIBERO: eef pos 3 + axis-angle 3 + gripper 2; 7-D actions


def openpi_norm_stats(rng: np.random.Generator, dims: dict[str, int]) -> dict:
    """norm_stats.json's body as openpi's pydantic model_dump_json writes it."""
    body = {}
    for key, d in dims.items():
        x = rng.normal(size=(200, d))
        body[key] = {
            "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(),
            "q01": np.quantile(x, 0.01, axis=0).tolist(),
            "q99": np.quantile(x, 0.99, axis=0).tolist(),
        }
    return {"norm_stats": body}


def write_norm_stats(folder: Path, asset_id: str, seed: int = 0) -> Path:
    path = folder / "assets" / asset_id / "norm_stats.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = {"state": STATE_DIM, "actions": ACTION_DIM}
    path.write_text(json.dumps(openpi_norm_stats(np.random.default_rng(seed), dims), indent=2))
    return path


def make_openpi_folder(folder: Path, asset_id: str = ASSET_ID) -> Path:
    """model.safetensors + openpi converter config.json + assets/<asset_id>/norm_stats.json."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(openpi_fixture_dir() / "model.safetensors", folder / "model.safetensors")
    # convert_jax_model_to_pytorch.py's config.json; the variant names are labels we do not
    # read (the fixture's sizes are its own), the horizon is checked against the preset.
    converter = {
        "action_dim": 32,
        "action_horizon": 10,
        "paligemma_variant": "gemma_2b",
        "action_expert_variant": "gemma_300m",
        "precision": "float32",
    }
    (folder / "config.json").write_text(json.dumps(converter, indent=2))
    write_norm_stats(folder, asset_id)
    return folder


def fixture_model_config() -> Path:
    """The fixture's own config.json: the sizes and head counts of its weights."""
    return openpi_fixture_dir() / "config.json"


def make_tokenizer(path: Path, vocab_size: int = 400) -> Path:
    """A sentencepiece model with fewer pieces than the fixture's 1024 embedding rows."""
    return train_sentencepiece(TASKS, path, vocab_size)


def libero_observation(rng: np.random.Generator, size: int = 224, prompt: str = TASKS[0]) -> dict:
    """An observation keyed as openpi's LIBERO client sends it (examples/libero/main.py)."""
    return {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/wrist_image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/state": rng.normal(size=STATE_DIM).astype(np.float32),
        "prompt": prompt,
    }
