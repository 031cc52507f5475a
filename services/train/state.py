"""Training checkpoints: the checkpoint contract plus the state to continue exactly.

RUN/checkpoints/<step>/ (written by rank 0, atomically: temp folder, then rename;
openpi scripts/train_pytorch.py `save_checkpoint` does the same):
  model.safetensors, config.json, assets/<asset_id>/...   `policies.policy.save_checkpoint`
                                                          (EMA weights when EMA is on)
  train_state.safetensors   opt.<param>.{exp_avg,exp_avg_sq,step}  AdamW state
                            ema.<param>    fp32 EMA            (EMA on)
                            param.<param>  raw trained weights (EMA on: model.safetensors
                                           holds the EMA, these are what training continues)
  train_state.json          step, data position, seed/RNG scheme, world size, config

Only safetensors and JSON are read back: no pickle, no torch.load (openpi stores
optimizer.pt / metadata.pt with torch.save; we do not). Every problem is a CheckpointError
naming the file and the key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from policies.normalize import NormStats
from policies.pi05.checkpoint import (
    MODEL_FILE,
    CheckpointError,
    load_openpi_weights,
    openpi_state_dict,
    read_shapes,
)
from policies.pi05.config import Pi05Config
from policies.pi05.model import Pi05Model
from policies.policy import CONFIG_FILE, PolicyConfig, save_checkpoint
from services.train.ema import EMA

STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"
STATE_FORMAT = "prunepi.train_state/1"
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


def checkpoint_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / str(step)


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (temp folders end in .tmp / .old)."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(p.name), p) for p in root.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found)


def latest_checkpoint(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1][1] if found else None


def prune_checkpoints(run: Path, keep: int | None) -> list[int]:
    """Delete all but the newest `keep` checkpoints (None: keep all); -> steps deleted.

    Ray's CheckpointConfig(num_to_keep) prunes within one invocation; this covers the ones
    earlier invocations (`stop_after` + resume) left."""
    found = list_checkpoints(run)
    if keep is None or len(found) <= keep:
        return []
    for _, folder in found[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)
    return [s for s, _ in found[:-keep]]


# ---------------------------------------------------------------------------------------
# Tensors of the training state


def optimizer_tensors(model: Pi05Model, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state keyed by parameter name (the optimizer keys it by position)."""
    out = {}
    params = dict(model.named_parameters())
    state = opt.state
    for name, p in params.items():
        for key, t in state.get(p, {}).items():
            out[f"opt.{name}.{key}"] = torch.as_tensor(t).detach().cpu().contiguous()
    return out


def load_optimizer_tensors(
    model: Pi05Model, opt: torch.optim.Optimizer, f: Any, path: Path
) -> None:
    names = [n for n, _ in model.named_parameters()]
    keys = set(f.keys())
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        have = [k for k in ADAM_KEYS if f"opt.{name}.{k}" in keys]
        if not have:
            continue  # never stepped (no grad yet): AdamW has no state for it either
        if len(have) != len(ADAM_KEYS):
            missing = [f"opt.{name}.{k}" for k in ADAM_KEYS if k not in have]
            raise CheckpointError(f"{path}: missing key(s) {missing}")
        s = {}
        for k in ADAM_KEYS:
            t = f.get_tensor(f"opt.{name}.{k}")
            if k != "step" and tuple(t.shape) != tuple(p.shape):
                raise CheckpointError(
                    f"{path}: key 'opt.{name}.{k}' shape {list(t.shape)} != parameter shape "
                    f"{list(p.shape)}"
                )
            s[k] = t.to(p.device) if k != "step" else t
        state[i] = s
    known = set(names)
    unknown = sorted(
        k for k in keys if k.startswith("opt.") and k[4:].rsplit(".", 1)[0] not in known
    )
    if unknown:
        raise CheckpointError(f"{path}: unexpected key(s) {unknown[:5]}")
    sd["state"] = state
    opt.load_state_dict(sd)


def train_state_tensors(
    model: Pi05Model, opt: torch.optim.Optimizer, ema: EMA | None
) -> dict[str, torch.Tensor]:
    t = optimizer_tensors(model, opt)
    if ema is not None:
        t.update(ema.state_tensors())
        t.update({f"param.{n}": p.detach().cpu() for n, p in model.named_parameters()})
    return t


# ---------------------------------------------------------------------------------------
# Save / load


def save_train_checkpoint(
    folder: Path,
    model: Pi05Model,
    opt: torch.optim.Optimizer,
    ema: EMA | None,
    policy_cfg: PolicyConfig,
    tokenizer_path: Path,
    norm_stats: dict[str, NormStats],
    state_json: dict[str, Any],
) -> Path:
    """One atomic checkpoint folder (policies.policy.save_checkpoint renames a temp dir)."""
    extra = {
        STATE_FILE: safetensors_bytes(
            {k: v.contiguous() for k, v in train_state_tensors(model, opt, ema).items()}
        ),
        STATE_JSON: json.dumps({"format": STATE_FORMAT, **state_json}, indent=1).encode(),
    }
    if ema is None:
        return save_checkpoint(folder, model, policy_cfg, tokenizer_path, norm_stats, extra)
    with ema.swapped_in(model):  # model.safetensors holds the EMA weights
        return save_checkpoint(folder, model, policy_cfg, tokenizer_path, norm_stats, extra)


def read_state_json(folder: Path) -> dict[str, Any]:
    path = Path(folder) / STATE_JSON
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder} is incomplete: {STATE_JSON} is missing")
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if d.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: format {d.get('format')!r} != {STATE_FORMAT!r}")
    for key in ("step", "data"):
        if key not in d:
            raise CheckpointError(f"{path}: missing key {key!r}")
    if not isinstance(d["step"], int) or d["step"] < 0:
        raise CheckpointError(f"{path}: key 'step' must be an integer >= 0, got {d['step']!r}")
    return d


def load_train_checkpoint(
    folder: Path, model: Pi05Model, opt: torch.optim.Optimizer, ema: EMA | None
) -> dict[str, Any]:
    """Restore weights, AdamW state and EMA in place; return train_state.json."""
    folder = Path(folder)
    state = read_state_json(folder)
    load_openpi_weights(model, folder / MODEL_FILE)  # strict; CheckpointError names the key
    path = folder / STATE_FILE
    read_shapes(path)  # CheckpointError if missing, truncated or not safetensors
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        if ema is not None:
            need = [f"{pre}.{n}" for n, _ in model.named_parameters() for pre in ("ema", "param")]
            missing = [k for k in need if k not in keys]
            if missing:
                raise CheckpointError(
                    f"{path}: missing key(s) {missing[:5]} (was the run trained with EMA?)"
                )
            with torch.no_grad():
                ema.load_state_tensors({k: f.get_tensor(k) for k in need if k.startswith("ema.")})
                for n, p in model.named_parameters():  # model.safetensors held the EMA
                    t = f.get_tensor(f"param.{n}")
                    if tuple(t.shape) != tuple(p.shape):
                        raise CheckpointError(
                            f"{path}: key 'param.{n}' shape {list(t.shape)} "
                            f"!= parameter shape {list(p.shape)}"
                        )
                    p.copy_(t.to(p.dtype))
        load_optimizer_tensors(model, opt, f, path)
    return state


def verify_checkpoint(folder: Path, model_cfg: Pi05Config, ema: bool) -> dict[str, Any]:
    """Driver-side check before any worker starts: every file present and readable, every
    key and shape right (a meta-device model: no memory). Returns train_state.json."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"checkpoint {folder} is incomplete: {CONFIG_FILE} is missing")
    try:
        saved = json.loads((folder / CONFIG_FILE).read_text())["model"]
        saved_cfg = Pi05Config.from_dict(saved)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder / CONFIG_FILE}: not a prunepi config ({e})") from e
    # Sizes and dtype must match; the pruning settings may change between runs (their
    # learnable weights, if any, are checked when the workers load pruner.safetensors).
    a, b = saved_cfg.to_dict(), model_cfg.to_dict()
    a.pop("pruning"), b.pop("pruning")
    diff = _config_diff(a, b)
    if diff:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: model config differs from this run's: " + "; ".join(diff)
        )
    state = read_state_json(folder)
    with torch.device("meta"):
        meta = Pi05Model(model_cfg)
    expected = {k: tuple(v.shape) for k, v in openpi_state_dict(meta).items()}
    _compare(folder / MODEL_FILE, read_shapes(folder / MODEL_FILE), expected)
    tshapes = read_shapes(folder / STATE_FILE)
    names = {n: tuple(p.shape) for n, p in meta.named_parameters()}
    want: dict[str, tuple[int, ...]] = {}
    if ema:
        want.update({f"ema.{n}": s for n, s in names.items()})
        want.update({f"param.{n}": s for n, s in names.items()})
    for k in tshapes:
        if k.startswith("opt."):
            name, key = k[4:].rsplit(".", 1)
            if name not in names or key not in ADAM_KEYS:
                raise CheckpointError(f"{folder / STATE_FILE}: unexpected key {k!r}")
            if key != "step":
                want[k] = names[name]
    _compare(folder / STATE_FILE, {k: s for k, s in tshapes.items() if k in want}, want)
    return state


def _compare(
    path: Path, have: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]]
) -> None:
    errors = [f"missing key {k!r}" for k in want if k not in have]
    errors += [f"unexpected key {k!r}" for k in have if k not in want]
    errors += [
        f"key {k!r}: shape {list(have[k])} != expected {list(s)}"
        for k, s in want.items()
        if k in have and tuple(have[k]) != tuple(s)
    ]
    if errors:
        raise CheckpointError(f"{path} does not match the model:\n  " + "\n  ".join(errors[:10]))


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{prefix}{k}.")
        elif (list(va) if isinstance(va, tuple) else va) != (
            list(vb) if isinstance(vb, tuple) else vb
        ):
            out.append(f"{prefix}{k}: checkpoint {va!r}, run {vb!r}")
    return out
