"""openpi `model.safetensors` <-> our `Pi05Model`.

openpi writes its PyTorch checkpoints with `safetensors.torch.save_model`, which drops
tied duplicates: the token embedding is stored ONLY as
`paligemma_with_expert.paligemma.lm_head.weight`, and an unused random
`paligemma_with_expert.gemma_expert.lm_head.weight` is present (docs/references.md §1). We read
that layout strictly (every missing, unexpected or mis-shaped key is an error naming the
key and both shapes) and write it back, so openpi can load what we save.

Learnable pruner parameters (the `lowrank` scorer) are not part of openpi's model; they
go to `pruner.safetensors` beside it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from policies.pi05.config import GemmaConfig, Pi05Config
from policies.pi05.model import Pi05Model
from prunepi.files import write_with

PREFIX = "paligemma_with_expert."
EMBED_KEY = PREFIX + "paligemma.model.language_model.embed_tokens.weight"
LM_HEAD_KEY = PREFIX + "paligemma.lm_head.weight"
EXPERT_LM_HEAD_KEY = PREFIX + "gemma_expert.lm_head.weight"
MODEL_FILE = "model.safetensors"
PRUNER_FILE = "pruner.safetensors"


class CheckpointError(ValueError):
    """A checkpoint does not match the model or is unreadable."""


def _file_to_model_key(key: str) -> str | None:
    if key == LM_HEAD_KEY:
        return EMBED_KEY
    if key == EXPERT_LM_HEAD_KEY:
        return None  # unused by π0.5 (the expert has no token embedding): ignored
    return key


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a safetensors file, without loading tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:  # truncated / not safetensors
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e


PRUNER_MODES = ("required", "init")


def load_openpi_weights(model: Pi05Model, path: Path, pruner: str = "required") -> None:
    """Strictly load openpi's `model.safetensors` (any dtype mix) into `model`.

    `pruner`: what a learnable scorer's weights (`pruner.safetensors` beside `path`) must be.
    "required": there, or CheckpointError (eval: random scorer weights would prune at
    random); "init": loaded when there, else the model's fresh init stays (fine-tuning an
    openpi checkpoint, which has no pruner, with a learnable scorer).
    """
    if pruner not in PRUNER_MODES:
        raise ValueError(f"pruner must be one of {PRUNER_MODES}, got {pruner!r}")
    path = Path(path)
    shapes = read_shapes(path)
    check_config(model.config, shapes)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("pruner.")}
    errors: list[str] = []
    mapped: dict[str, str] = {}
    for fkey, shape in shapes.items():
        mkey = _file_to_model_key(fkey)
        if mkey is None:
            continue
        if mkey not in own:
            errors.append(f"unexpected key {fkey!r} with shape {list(shape)}")
        elif tuple(own[mkey].shape) != shape:
            errors.append(
                f"key {fkey!r}: checkpoint shape {list(shape)} != model shape "
                f"{list(own[mkey].shape)}"
            )
        else:
            mapped[mkey] = fkey
    for mkey in own:
        if mkey not in mapped and not any(mkey == _file_to_model_key(k) for k in shapes):
            fkey = LM_HEAD_KEY if mkey == EMBED_KEY else mkey
            errors.append(f"missing key {fkey!r} (model shape {list(own[mkey].shape)})")
    if errors:
        raise CheckpointError(f"{path} does not match the model:\n  " + "\n  ".join(errors))
    with safe_open(str(path), framework="pt") as f, torch.no_grad():
        for mkey, fkey in mapped.items():
            own[mkey].copy_(f.get_tensor(fkey).to(own[mkey].dtype))
    pruner_path = path.parent / PRUNER_FILE
    if model.pruner is not None and any(True for _ in model.pruner.parameters()):
        if pruner_path.is_file():
            _load_pruner(model, pruner_path)
        elif pruner == "required":
            raise CheckpointError(missing_pruner_message(model.config, pruner_path))


def missing_pruner_message(cfg: Pi05Config, pruner_path: Path) -> str:
    """Why a learnable scorer cannot run without its weights, and what to do instead."""
    return (
        f"pruning.scorer {cfg.pruning.scorer!r} has learnable weights but {pruner_path} does "
        f"not exist (a checkpoint trained with that scorer writes it): pass a checkpoint "
        f"trained with it, a parameter-free scorer (e.g. 'lightvla': it prunes zero-shot), or "
        f"pruning.enabled=False"
    )


def _load_pruner(model: Pi05Model, path: Path) -> None:
    own = model.pruner.state_dict()
    shapes = read_shapes(path)
    if set(shapes) != set(own):
        raise CheckpointError(
            f"{path}: pruner keys {sorted(shapes)} != model pruner keys {sorted(own)}"
        )
    with safe_open(str(path), framework="pt") as f, torch.no_grad():
        for k, v in own.items():
            t = f.get_tensor(k)
            if t.shape != v.shape:
                raise CheckpointError(
                    f"{path}: key {k!r} shape {list(t.shape)} != model {list(v.shape)}"
                )
            v.copy_(t.to(v.dtype))


def openpi_state_dict(model: Pi05Model) -> dict[str, torch.Tensor]:
    """Our weights in openpi's file layout (tied embedding as lm_head, expert lm_head)."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith("pruner."):
            continue
        sd[LM_HEAD_KEY if k == EMBED_KEY else k] = v.detach().contiguous()
    # openpi's model has this parameter (never used); write zeros so a strict load works.
    emb = sd[LM_HEAD_KEY]
    sd[EXPERT_LM_HEAD_KEY] = torch.zeros(
        emb.shape[0], model.config.action_expert.width, dtype=emb.dtype
    )
    return sd


def atomic_save_file(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write a safetensors file atomically (prunepi/files.py)."""
    cpu = {k: v.cpu().contiguous() for k, v in tensors.items()}
    write_with(path, lambda tmp: save_file(cpu, tmp))


def save_openpi_weights(model: Pi05Model, folder: Path) -> Path:
    """Write `folder/model.safetensors` (and `pruner.safetensors` if it has weights)."""
    folder = Path(folder)
    out = folder / MODEL_FILE
    atomic_save_file(openpi_state_dict(model), out)
    if model.pruner is not None:
        psd = model.pruner.state_dict()
        if psd:
            atomic_save_file(psd, folder / PRUNER_FILE)
    return out


# ---------------------------------------------------------------------------------------
# Sizes read off a checkpoint


def _count_layers(shapes: dict[str, tuple[int, ...]], stem: str) -> int:
    pat = re.compile(re.escape(stem) + r"\.(\d+)\.")
    ids = {int(m.group(1)) for k in shapes if (m := pat.match(k))}
    return max(ids) + 1 if ids else 0


def sizes_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Config fields that a checkpoint determines, as 'field.path' -> value."""
    v = PREFIX + "paligemma.model.vision_tower.vision_model."
    lm = PREFIX + "paligemma.model.language_model."
    ex = PREFIX + "gemma_expert.model."
    s: dict[str, int] = {}

    def get(key: str) -> tuple[int, ...] | None:
        return shapes.get(key)

    if (pe := get(v + "embeddings.patch_embedding.weight")) is not None:
        s["vision.width"], s["vision.patch_size"] = pe[0], pe[2]
    if (
        pos := get(v + "embeddings.position_embedding.weight")
    ) is not None and "vision.patch_size" in s:
        side = int(round(pos[0] ** 0.5))
        s["vision.image_size"] = side * s["vision.patch_size"]
    if (fc1 := get(v + "encoder.layers.0.mlp.fc1.weight")) is not None:
        s["vision.mlp_dim"] = fc1[0]
    s["vision.depth"] = _count_layers(shapes, v + "encoder.layers")
    if (head := get(LM_HEAD_KEY)) is not None:
        s["vocab_size"], s["paligemma.width"] = head
    for name, stem in (("paligemma", lm), ("action_expert", ex)):
        s[f"{name}.depth"] = _count_layers(shapes, stem + "layers")
        if (g := get(stem + "layers.0.mlp.gate_proj.weight")) is not None:
            s[f"{name}.mlp_dim"], s[f"{name}.width"] = g
        if (q := get(stem + "layers.0.self_attn.q_proj.weight")) is not None:
            s[f"{name}.num_heads*head_dim"] = q[0]
        if (k := get(stem + "layers.0.self_attn.k_proj.weight")) is not None:
            s[f"{name}.num_kv_heads*head_dim"] = k[0]
    if (a := get("action_in_proj.weight")) is not None:
        s["action_expert.width"], s["action_dim"] = a
    return s


def _config_sizes(cfg: Pi05Config) -> dict[str, int]:
    s = {
        "vision.width": cfg.vision.width,
        "vision.patch_size": cfg.vision.patch_size,
        "vision.image_size": cfg.vision.image_size,
        "vision.mlp_dim": cfg.vision.mlp_dim,
        "vision.depth": cfg.vision.depth,
        "vocab_size": cfg.vocab_size,
        "action_dim": cfg.action_dim,
    }
    for name in ("paligemma", "action_expert"):
        g: GemmaConfig = getattr(cfg, name)
        s[f"{name}.depth"] = g.depth
        s[f"{name}.mlp_dim"] = g.mlp_dim
        s[f"{name}.width"] = g.width
        s[f"{name}.num_heads*head_dim"] = g.num_heads * g.head_dim
        s[f"{name}.num_kv_heads*head_dim"] = g.num_kv_heads * g.head_dim
    return s


def check_config(cfg: Pi05Config, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise naming every config field that disagrees with the checkpoint."""
    ck = sizes_from_shapes(shapes)
    ours = _config_sizes(cfg)
    diffs = [
        f"config field {k} = {ours[k]} but the checkpoint has {ck[k]}"
        for k in ck
        if k in ours and ck[k] != ours[k]
    ]
    if diffs:
        raise CheckpointError("config does not match checkpoint:\n  " + "\n  ".join(diffs))


def config_from_checkpoint(path: Path, base: Pi05Config) -> Pi05Config:
    """`base` with every size the checkpoint determines replaced by the checkpoint's.

    Head counts cannot be read off (only heads * head_dim): `base`'s head counts are kept
    and head_dim derived from them.
    """
    import dataclasses as dc

    ck = sizes_from_shapes(read_shapes(path))

    def gemma(name: str, g: GemmaConfig) -> GemmaConfig:
        q = ck.get(f"{name}.num_heads*head_dim", g.num_heads * g.head_dim)
        if q % g.num_heads:
            raise CheckpointError(
                f"{name}.num_heads: {g.num_heads} does not divide the checkpoint's "
                f"num_heads*head_dim={q}; pass a base config with the checkpoint's head count"
            )
        hd = q // g.num_heads
        kv_width = ck.get(f"{name}.num_kv_heads*head_dim", g.num_kv_heads * hd)
        if kv_width < hd or kv_width % hd:
            raise CheckpointError(
                f"{name}.num_kv_heads: the checkpoint's num_kv_heads*head_dim={kv_width} is not "
                f"a positive multiple of head_dim={hd} (num_heads={g.num_heads}); pass a base "
                f"config with the checkpoint's head counts"
            )
        kv = kv_width // hd
        return dc.replace(
            g,
            width=ck.get(f"{name}.width", g.width),
            depth=ck.get(f"{name}.depth", g.depth) or g.depth,
            mlp_dim=ck.get(f"{name}.mlp_dim", g.mlp_dim),
            head_dim=hd,
            num_kv_heads=kv,
        )

    vis = dc.replace(
        base.vision,
        width=ck.get("vision.width", base.vision.width),
        depth=ck.get("vision.depth", base.vision.depth) or base.vision.depth,
        mlp_dim=ck.get("vision.mlp_dim", base.vision.mlp_dim),
        patch_size=ck.get("vision.patch_size", base.vision.patch_size),
        image_size=ck.get("vision.image_size", base.vision.image_size),
    )
    return dc.replace(
        base,
        vision=vis,
        paligemma=gemma("paligemma", base.paligemma),
        action_expert=gemma("action_expert", base.action_expert),
        vocab_size=ck.get("vocab_size", base.vocab_size),
        action_dim=ck.get("action_dim", base.action_dim),
    )
