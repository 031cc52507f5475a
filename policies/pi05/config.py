"""Frozen configs for π0.5 and its named presets.

Every size is a field: openpi's own tiny `dummy` variant breaks in PyTorch because
`gemma_pytorch.py` hard-codes the projector width (2048) and 8 query heads
(docs/references.md §1); nothing here is hard-coded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.pruning.config import NoiseScheduleConfig, PrunerConfig

# openpi's camera order (pi0_pytorch.py, `IMAGE_KEYS`); the LIBERO third camera is masked.
CAMERA_NAMES: tuple[str, ...] = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")

DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class GemmaConfig:
    """One Gemma stack (openpi `gemma.get_config`)."""

    width: int  # hidden size D
    depth: int  # number of decoder layers
    mlp_dim: int  # gate/up projection size
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (GQA: num_heads % num_kv_heads == 0)
    head_dim: int  # per-head size (need not equal width / num_heads)
    rms_norm_eps: float = 1e-6  # Gemma RMSNorm epsilon
    rope_theta: float = 10000.0  # RoPE base


@dataclass(frozen=True)
class SiglipConfig:
    """SigLIP vision tower (PaliGemma's So400m/14 at openpi sizes)."""

    width: int  # hidden size
    depth: int  # encoder layers
    mlp_dim: int  # MLP intermediate size
    num_heads: int  # attention heads (head_dim = width / num_heads)
    image_size: int = 224  # square input side in pixels; must be a multiple of patch_size
    patch_size: int = 14  # conv patch size and stride
    layer_norm_eps: float = 1e-6  # LayerNorm epsilon

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class Pi05Config:
    """π0.5 model config (openpi `Pi0Config` with pi05=True, every size explicit)."""

    vision: SiglipConfig  # image encoder sizes
    paligemma: GemmaConfig  # prefix language model (VLM) sizes
    action_expert: GemmaConfig  # suffix action expert sizes (same depth, heads, head_dim)
    vocab_size: int = 257152  # token vocabulary (PaliGemma sentencepiece)
    action_dim: int = 32  # padded action width the model predicts
    action_horizon: int = 50  # H, actions per chunk (10 for LIBERO)
    max_token_len: int = 200  # prompt slots (π0.5: 200)
    camera_names: tuple[str, ...] = CAMERA_NAMES  # camera order in the prefix
    dtype: str = "float32"  # "float32" or "bfloat16" (openpi's fp32 keep-list applies)
    pruning: PrunerConfig = field(default_factory=PrunerConfig)  # visual-token pruner

    def validate(self) -> None:
        """Raise ValueError naming the offending field and value."""
        v, pg, ae = self.vision, self.paligemma, self.action_expert
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if v.image_size <= 0 or v.image_size % v.patch_size:
            raise ValueError(
                f"vision.image_size must be a positive multiple of vision.patch_size "
                f"({v.patch_size}), got {v.image_size}"
            )
        if v.width % v.num_heads:
            raise ValueError(
                f"vision.width must be divisible by vision.num_heads ({v.num_heads}), got {v.width}"
            )
        for name, g in (("paligemma", pg), ("action_expert", ae)):
            if g.num_heads % g.num_kv_heads:
                raise ValueError(
                    f"{name}.num_heads must be a multiple of {name}.num_kv_heads "
                    f"({g.num_kv_heads}), got {g.num_heads}"
                )
            if g.head_dim % 2:
                raise ValueError(f"{name}.head_dim must be even for RoPE, got {g.head_dim}")
        # Joint attention concatenates both streams' heads: these must agree (openpi).
        for f in ("depth", "num_heads", "num_kv_heads", "head_dim"):
            if getattr(pg, f) != getattr(ae, f):
                raise ValueError(
                    f"action_expert.{f} must equal paligemma.{f} ({getattr(pg, f)}) for joint "
                    f"attention, got {getattr(ae, f)}"
                )
        for f in ("vocab_size", "action_dim", "action_horizon", "max_token_len"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{f} must be positive, got {getattr(self, f)}")
        if not self.camera_names:
            raise ValueError("camera_names must name at least one camera, got ()")
        self.pruning.validate()

    @property
    def num_patches_total(self) -> int:
        """N_total: patch tokens of all cameras pooled (768 for π0.5 with 3 cameras)."""
        return self.vision.num_patches * len(self.camera_names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Pi05Config:
        d = dict(d)
        pr = dict(d.pop("pruning", {}) or {})
        noise = NoiseScheduleConfig(**pr.pop("noise", {}))
        if "buckets" in pr:
            pr["buckets"] = tuple(pr["buckets"])
        return Pi05Config(
            vision=SiglipConfig(**d.pop("vision")),
            paligemma=GemmaConfig(**d.pop("paligemma")),
            action_expert=GemmaConfig(**d.pop("action_expert")),
            camera_names=tuple(d.pop("camera_names", CAMERA_NAMES)),
            pruning=PrunerConfig(**pr, noise=noise),
            **d,
        )

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @staticmethod
    def load(path: Path) -> Pi05Config:
        return Pi05Config.from_dict(json.loads(Path(path).read_text()))


# ---------------------------------------------------------------------------------------
# Presets: each a function returning a complete config, registered by `@preset` under its
# name (adding one is one decorated function).

PRESETS: dict[str, Callable[[], Pi05Config]] = {}


def preset(fn: Callable[[], Pi05Config]) -> Callable[[], Pi05Config]:
    PRESETS[fn.__name__] = fn
    return fn


@preset
def pi05() -> Pi05Config:
    """openpi's π0.5 sizes (docs/references.md §1): PaliGemma 2B + Gemma 300M expert + So400m."""
    return Pi05Config(
        vision=SiglipConfig(width=1152, depth=27, mlp_dim=4304, num_heads=16),
        paligemma=GemmaConfig(
            width=2048, depth=18, mlp_dim=16384, num_heads=8, num_kv_heads=1, head_dim=256
        ),
        action_expert=GemmaConfig(
            width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256
        ),
    )


@preset
def pi05_libero() -> Pi05Config:
    """openpi's `pi05_libero`: π0.5 with a 10-step action chunk."""
    return dataclasses.replace(pi05(), action_horizon=10)


@preset
def tiny() -> Pi05Config:
    """About a million parameters, 112 px images (64 patches per camera): trains on 2 CPUs."""
    return Pi05Config(
        vision=SiglipConfig(width=64, depth=2, mlp_dim=128, num_heads=4, image_size=112),
        paligemma=GemmaConfig(
            width=128, depth=4, mlp_dim=256, num_heads=4, num_kv_heads=1, head_dim=32
        ),
        action_expert=GemmaConfig(
            width=64, depth=4, mlp_dim=128, num_heads=4, num_kv_heads=1, head_dim=32
        ),
        vocab_size=512,
        action_dim=32,
        action_horizon=10,
        max_token_len=32,
    )


def get_preset(name: str) -> Pi05Config:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]()


def from_openpi_fixture_config(d: dict[str, Any]) -> Pi05Config:
    """Build our config from an openpi fixture's `config.json` (the format of
    tests/fixtures/openpi_pi05_tiny_a, described in its README.md)."""
    pg, ae, vi = d["paligemma"], d["action_expert"], d["vision"]

    def gemma(g: dict[str, Any]) -> GemmaConfig:
        return GemmaConfig(
            width=g["width"],
            depth=g["depth"],
            mlp_dim=g["mlp_dim"],
            num_heads=g["num_heads"],
            num_kv_heads=g["num_kv_heads"],
            head_dim=g["head_dim"],
            rms_norm_eps=g.get("rms_norm_eps", 1e-6),
            rope_theta=g.get("rope_theta", 10000.0),
        )

    return Pi05Config(
        vision=SiglipConfig(
            width=vi["hidden_size"],
            depth=vi["num_hidden_layers"],
            mlp_dim=vi["intermediate_size"],
            num_heads=vi["num_attention_heads"],
            image_size=vi["image_size"],
            patch_size=vi["patch_size"],
            layer_norm_eps=vi.get("layer_norm_eps", 1e-6),
        ),
        paligemma=gemma(pg),
        action_expert=gemma(ae),
        vocab_size=d["vocab_size"],
        action_dim=d["action_dim"],
        action_horizon=d["action_horizon"],
        max_token_len=d["max_token_len"],
        camera_names=tuple(d["camera_names"]),
        dtype=d.get("dtype", "float32"),
    )
