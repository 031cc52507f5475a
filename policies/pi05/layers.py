"""Building blocks of π0.5: SigLIP, Gemma with adaRMS, RoPE, masks.

Module and parameter names mirror openpi's `PI0Pytorch` state dict so that
`model.safetensors` maps onto ours one to one (see checkpoint.py). Numerics follow the
transformers 4.53.2 files that openpi patches (`models_pytorch/transformers_replace`):
Gemma RMSNorm with variance in fp32 and `(1 + w)`, adaRMS `(scale, shift, gate)`, gated
residuals, no sqrt(width) normalizer inside Gemma, no 1/sqrt(width) on image features.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# nn.Linear and matmul with per-sample GEMMs at inference (batch-invariant actions)
from policies.invariant import Linear, batched_matmul, same_alone_and_batched
from policies.pi05.config import GemmaConfig, SiglipConfig

# openpi `_prepare_attention_masks_4d`: masked logits get this additive value.
MASK_VALUE = -2.3819763e38


def gelu_tanh(x: Tensor) -> Tensor:
    # `gelu_pytorch_tanh` in both Gemma and SigLIP (an erf GELU is a parity bug).
    return F.gelu(x, approximate="tanh")


# ---------------------------------------------------------------------------------------
# SigLIP vision tower (transformers `SiglipVisionModel`, no pooling head)


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.width)

    def forward(self, pixels: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, P, W_v)
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))  # (B, W_v, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, P, W_v), row-major patches
        return x + self.position_embedding.weight[None]


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q_proj = Linear(cfg.width, cfg.width)
        self.k_proj = Linear(cfg.width, cfg.width)
        self.v_proj = Linear(cfg.width, cfg.width)
        self.out_proj = Linear(cfg.width, cfg.width)

    def forward(self, x: Tensor) -> Tensor:  # (B, P, W_v)
        B, P, W = x.shape
        h = self.num_heads

        def heads(t: Tensor) -> Tensor:
            return t.view(B, P, h, W // h).transpose(1, 2)  # (B, h, P, hd)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v)  # scale hd^-0.5, no mask
        return self.out_proj(y.transpose(1, 2).reshape(B, P, W))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.fc1 = Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(gelu_tanh(self.fc1(x)))


class SiglipLayer(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipLayer(cfg) for _ in range(cfg.depth))


class SiglipVisionModel(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, pixels: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, P, W_v)
        x = self.embeddings(pixels)
        # openpi keeps the patch/position embeddings in fp32 and the encoder in bf16.
        x = x.to(self.post_layernorm.weight.dtype)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


class VisionTower(nn.Module):  # naming level `vision_tower.vision_model` of the checkpoint
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.vision_model = SiglipVisionModel(cfg)


class Projector(nn.Module):  # `multi_modal_projector.linear`
    def __init__(self, vision_width: int, width: int):
        super().__init__()
        self.linear = Linear(vision_width, width)


# ---------------------------------------------------------------------------------------
# Gemma


def rms_normalize(x: Tensor, eps: float) -> Tensor:
    """Parameter-free RMSNorm in fp32 (Gemma `_norm`)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class GemmaRMSNorm(nn.Module):
    """Gemma RMSNorm, or adaRMS when `cond_dim` is set (π0.5's action expert).

    adaRMS: `dense(cond)` -> (scale, shift, gate); out = norm(x) * (1 + scale) + shift and
    the caller gates its residual with `gate` (openpi transformers_replace modeling_gemma).
    """

    def __init__(self, width: int, eps: float, cond_dim: int | None = None):
        super().__init__()
        self.eps = eps
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(width))
            self.dense = None
        else:
            self.dense = Linear(cond_dim, 3 * width)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        normed = rms_normalize(x, self.eps)  # (B, S, D) fp32
        if self.dense is None:
            return (normed * (1.0 + self.weight.float())).to(x.dtype), None
        mod = self.dense(cond.to(self.dense.weight.dtype))[:, None, :]  # (B, 1, 3D)
        scale, shift, gate = mod.chunk(3, dim=-1)
        normed = normed * (1.0 + scale.float()) + shift.float()
        return normed.to(x.dtype), gate.to(x.dtype)


class GemmaMLP(nn.Module):
    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.up_proj = Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.down_proj = Linear(cfg.mlp_dim, cfg.width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.up_proj.weight.dtype)
        return self.down_proj(gelu_tanh(self.gate_proj(x)) * self.up_proj(x))


class GemmaAttentionProj(nn.Module):
    """Q/K/V/O projections of one Gemma layer; attention itself is joint (model.py)."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        )
        self.q_proj = Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, S, _ = x.shape
        x = x.to(self.q_proj.weight.dtype)
        q = self.q_proj(x).view(B, S, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, S, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, S, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v  # (B, h, S, hd), (B, kv, S, hd), (B, kv, S, hd)


class GemmaLayer(nn.Module):
    def __init__(self, cfg: GemmaConfig, cond_dim: int | None):
        super().__init__()
        self.input_layernorm = GemmaRMSNorm(cfg.width, cfg.rms_norm_eps, cond_dim)
        self.self_attn = GemmaAttentionProj(cfg)
        self.post_attention_layernorm = GemmaRMSNorm(cfg.width, cfg.rms_norm_eps, cond_dim)
        self.mlp = GemmaMLP(cfg)


class GemmaModel(nn.Module):
    def __init__(self, cfg: GemmaConfig, vocab_size: int | None, cond_dim: int | None):
        super().__init__()
        # The expert has no token embedding (docs/references.md §1).
        self.embed_tokens = nn.Embedding(vocab_size, cfg.width) if vocab_size else None
        self.layers = nn.ModuleList(GemmaLayer(cfg, cond_dim) for _ in range(cfg.depth))
        self.norm = GemmaRMSNorm(cfg.width, cfg.rms_norm_eps, cond_dim)


def gated_residual(x: Tensor, y: Tensor, gate: Tensor | None) -> Tensor:
    return x + y if gate is None else x + y * gate


# ---------------------------------------------------------------------------------------
# RoPE and attention


def rope_cos_sin(position_ids: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """transformers `GemmaRotaryEmbedding`, angles in fp32. (B, S) -> 2 x (B, 1, S, hd)."""
    inv_freq = 1.0 / (
        theta
        ** (
            torch.arange(0, head_dim, 2, dtype=torch.int64, device=position_ids.device).float()
            / head_dim
        )
    )  # (hd/2,)
    freqs = position_ids.float()[..., None] * inv_freq  # (B, S, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, S, hd)
    return emb.cos()[:, None], emb.sin()[:, None]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x * cos.to(x.dtype)) + (rotated * sin.to(x.dtype))


def eager_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, bias: Tensor | None = None
) -> Tensor:
    """Gemma eager attention with GQA and an additive mask; softmax in fp32.

    q (B, h, Sq, hd); k, v (B, kv, Sk, hd); mask (B, Sq, Sk) bool -> (B, Sq, h*hd);
    bias (B, Sk), if given, is added to every query's logit of each key (`additive_mask`).
    """
    n_rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(n_rep, dim=1)  # (B, h, Sk, hd)
    v = v.repeat_interleave(n_rep, dim=1)
    logits = batched_matmul(q, k.transpose(2, 3)) * scale  # (B, h, Sq, Sk)
    add = additive_mask(mask, bias)  # (B, 1, Sq, Sk) fp32
    probs = torch.softmax(logits + add, dim=-1, dtype=torch.float32).to(q.dtype)
    y = batched_matmul(probs, v)  # (B, h, Sq, hd)
    B, h, Sq, hd = y.shape
    return y.transpose(1, 2).reshape(B, Sq, h * hd)


def joint_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, bias: Tensor | None = None
) -> Tensor:
    """The joint layers' attention: torch's fused SDPA with openpi's additive mask, except
    at inference where SDPA is not measured batch-invariant: there openpi's eager form.

    Why: inference must give a sample the same bits whatever batch it shares
    (policies/invariant.py); the per-sample GEMMs of `eager_attention` guarantee it by
    construction, and CPU SDPA keeps it too on the shapes `same_alone_and_batched` probes
    (each (sample, head, query block) is one task of the same kernel; measured on torch
    2.13, 1 and 2 threads). The fused kernel never materializes the (B, h, S, S)
    probabilities: on 2 CPU threads the eager softmax and its backward were about 40 % of a
    tiny-model training step (torch.profiler, 112 px, batch 16), and at inference it halves
    the attention of a lockstep batch (benchmarks/rollout_throughput.py). The additive mask
    is the eager one (finite MASK_VALUE), so a fully masked padding row stays finite as in
    openpi. q (B, h, Sq, hd); k, v (B, kv, Sk, hd); mask (B, Sq, Sk) bool -> (B, Sq, h*hd);
    bias (B, Sk) or None: a per-key logit bias (the pruner's keep gate in training).
    """
    if torch.is_grad_enabled() or _fused_invariant(q, k, scale):
        return fused_attention(q, k, v, mask, scale, bias)
    return eager_attention(q, k, v, mask, scale, bias)


AttentionGroups = list[tuple[Tensor, Tensor, Tensor]]  # rows (R,), query (Sq_g,), key (Sk_g,) cols


def grouped_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor,
    scale: float,
    groups: AttentionGroups,
    bias: Tensor | None = None,
) -> Tensor:
    """`joint_attention` of each group of samples over its own columns only.

    Why: a padded batch whose samples have different own lengths (prompt extents, kept
    counts) runs its row-wise layers (norms, every Linear) as one batch, while each group's
    attention sees exactly the sequence it has alone, so its softmax sums and probs @ V
    contractions have their alone lengths (pi05/model.py `Pi05Model.sample`). Same
    arguments as `joint_attention`; slots outside a group's query columns come out 0.
    """
    B, h, Sq, hd = q.shape
    out = q.new_zeros(B, Sq, h * hd)
    for rows, q_cols, k_cols in groups:
        q_g = q[rows][:, :, q_cols]  # (R, h, Sq_g, hd)
        k_g, v_g = k[rows][:, :, k_cols], v[rows][:, :, k_cols]  # (R, kv, Sk_g, hd)
        mask_g = mask[rows][:, q_cols][:, :, k_cols]  # (R, Sq_g, Sk_g)
        bias_g = None if bias is None else bias[rows][:, k_cols]  # (R, Sk_g)
        out[rows[:, None], q_cols] = joint_attention(q_g, k_g, v_g, mask_g, scale, bias_g)
    return out


def fused_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float, bias: Tensor | None = None
) -> Tensor:
    """`eager_attention`'s contract on torch's SDPA (same additive mask, GQA)."""
    add = additive_mask(mask, bias).to(q.dtype)  # (B, 1, Sq, Sk)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=add, scale=scale, enable_gqa=True)
    B, h, Sq, hd = y.shape
    return y.transpose(1, 2).reshape(B, Sq, h * hd)


def _fused_invariant(q: Tensor, k: Tensor, scale: float) -> bool:
    """Whether SDPA gives one sample of these shapes the same bits alone and batched."""
    if not q.is_cpu or q.shape[0] == 0 or torch.get_num_threads() != 1:
        return False  # on 2 threads tiny SDPA calls cost more than eager (pi05_latency.py)
    h, Sq, hd = q.shape[1:]
    kv, Sk = k.shape[1:3]
    return _sdpa_probe(h, kv, Sq, Sk, hd, q.dtype, scale)


@functools.cache
def _sdpa_probe(
    h: int, kv: int, Sq: int, Sk: int, hd: int, dtype: torch.dtype, scale: float
) -> bool:
    """The probe on a synthetic sample of these shapes, once per shape (one thread): the
    answer is a function of the shapes and the machine, never of the first observation."""
    g = torch.Generator().manual_seed(Sq * 1009 + Sk)
    shapes = ((h, Sq), (kv, Sk), (kv, Sk))
    qkv = tuple(torch.randn(1, n, s, hd, generator=g).to(dtype) for n, s in shapes)
    mask = torch.rand(1, Sq, Sk, generator=g) > 0.3
    mask[..., 0] = True  # every query sees a key, as in the model's masks
    return same_alone_and_batched(
        lambda a, b, c, m: fused_attention(a, b, c, m, scale), (*qkv, mask)
    )


def additive_mask(mask: Tensor, bias: Tensor | None = None) -> Tensor:
    """(B, Sq, Sk) bool [, (B, Sk) float] -> (B, 1, Sq, Sk) fp32: 0 where seen, openpi's
    finite MASK_VALUE where not, plus the per-key bias (gradients flow into it)."""
    add = torch.where(mask[:, None], 0.0, MASK_VALUE)
    return add if bias is None else add + bias[:, None, None, :].float()


def make_att_2d_masks(pad_masks: Tensor, att_masks: Tensor) -> Tensor:
    """openpi `make_att_2d_masks`: token i sees key j iff cumsum(ar)[j] <= cumsum(ar)[i]
    and both are valid. (B, S), (B, S) -> (B, S, S) bool."""
    cumsum = torch.cumsum(att_masks.long(), dim=1)
    att_2d = cumsum[:, None, :] <= cumsum[:, :, None]
    pad_2d = pad_masks[:, None, :] & pad_masks[:, :, None]
    return att_2d & pad_2d


def sinusoidal_time_embedding(
    t: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0
) -> Tensor:
    """openpi `create_sinusoidal_pos_embedding`: sin then cos, computed in fp64.

    (B,) -> (B, dim), in t's dtype.
    """
    if dim % 2:
        raise ValueError(f"action_expert.width must be even for the time embedding, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    scaling = 1.0 / period * 2 * math.pi
    angle = scaling[None, :] * t[:, None]  # (B, dim/2) fp64
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).to(t.dtype)
