"""π0.5 in plain PyTorch: the π0.5 path of openpi's `PI0Pytorch` (pi0_pytorch.py).

Read top to bottom:
  1. `Observation` — what the model eats (openpi's `Observation` fields).
  2. `Pi05Model.embed_prefix` — images -> SigLIP -> projector, pooled over cameras, then
     the visual-token pruner (policies/pruning), then language tokens * sqrt(width).
  3. `Pi05Model.embed_suffix` — noisy actions -> action_in_proj; time -> sinusoid -> MLP
     -> adaRMS condition.
  4. `Pi05Model.joint_layer` — one layer of joint attention over [prefix | suffix], each
     stream with its own weights (PaliGemma for the prefix, the expert for the suffix).
  5. `compute_loss` (flow matching) and `sample_actions` (prefix once, KV cached, then 10
     Euler steps that read the cached K/V).

Where we deliberately differ from openpi (all off by default or numerically equivalent):
the pruner, prompt-padding trimming under pruning, and batching all cameras through SigLIP
in one call (openpi loops over cameras; results agree to float rounding).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from policies.invariant import MIN_ROWS, rows_independent
from policies.pi05.config import Pi05Config
from policies.pi05.layers import (
    AttentionGroups,
    GemmaModel,
    Linear,
    Projector,
    VisionTower,
    apply_rope,
    gated_residual,
    grouped_attention,
    joint_attention,
    make_att_2d_masks,
    rope_cos_sin,
    sinusoidal_time_embedding,
)
from policies.pi05.positions import NUMBERINGS, PrunedLayout
from policies.pruning.pruner import TokenPruner
from policies.pruning.selection import padded_length

# openpi `to_bfloat16_for_selected_params`: these stay fp32 when the model is bf16.
FP32_KEEP = (
    "vision_tower.vision_model.embeddings.patch_embedding.weight",
    "vision_tower.vision_model.embeddings.patch_embedding.bias",
    "vision_tower.vision_model.embeddings.position_embedding.weight",
    "input_layernorm",
    "post_attention_layernorm",
    "model.norm",
)


@dataclass
class Observation:
    """openpi's model observation (docs/references.md "Data conventions")."""

    images: dict[str, Tensor]  # camera -> (B, 3, H, W) float in [-1, 1] (HWC/uint8 accepted)
    image_masks: dict[str, Tensor]  # camera -> (B,) bool; False = camera absent
    state: Tensor  # (B, action_dim); π0.5 reads only its batch size (state is in the prompt)
    tokenized_prompt: Tensor  # (B, L) int64, right-padded with 0
    tokenized_prompt_mask: Tensor  # (B, L) bool, True = real token

    @property
    def batch_size(self) -> int:
        return self.tokenized_prompt.shape[0]

    def to(self, device: torch.device | str) -> Observation:
        return Observation(
            images={k: v.to(device) for k, v in self.images.items()},
            image_masks={k: v.to(device) for k, v in self.image_masks.items()},
            state=self.state.to(device),
            tokenized_prompt=self.tokenized_prompt.to(device),
            tokenized_prompt_mask=self.tokenized_prompt_mask.to(device),
        )


@dataclass
class Prefix:
    """Output of `embed_prefix`: the (possibly pruned) VLM input."""

    embs: Tensor  # (B, S_p, D)
    pad_masks: Tensor  # (B, S_p) bool
    att_masks: Tensor  # (B, S_p) bool, all False: bidirectional prefix
    position_ids: Tensor  # (B, S_p) long
    next_position: Tensor  # (B,) long: first suffix position
    kept_tokens: Tensor  # (B,) long: patch tokens the prefix keeps (valid ones)
    total_tokens: int  # N_total patch slots before pruning
    metrics: dict[str, float] = field(default_factory=dict)  # prune/* telemetry
    aux_loss: Tensor | None = None  # () the pruner's training objective, if it has one
    # Eval under pruning: (patch slots, prompt slots) of each sample's prefix embedded ALONE;
    # the batch pads both to its largest. None: every sample has the batch's lengths.
    own_lengths: Tensor | None = None  # (B, 2) long
    # Training with `pruning.train_tokens="masked"`: each key's attention-logit bias, the
    # pruner's straight-through keep gate (0 kept, ~-46 dropped; 0 on the prompt).
    key_bias: Tensor | None = None  # (B, S_p) float

    def take(self, rows: Tensor, cols: Tensor) -> Prefix:
        """The samples `rows` (R,), cut to the sequence columns `cols` (S,)."""
        own = None if self.own_lengths is None else self.own_lengths[rows]
        return Prefix(
            embs=self.embs[rows][:, cols],
            pad_masks=self.pad_masks[rows][:, cols],
            att_masks=self.att_masks[rows][:, cols],
            position_ids=self.position_ids[rows][:, cols],
            next_position=self.next_position[rows],
            kept_tokens=self.kept_tokens[rows],
            total_tokens=self.total_tokens,
            metrics=self.metrics,
            own_lengths=own,
            aux_loss=self.aux_loss,
            key_bias=None if self.key_bias is None else self.key_bias[rows][:, cols],
        )


Segments = list[tuple[Tensor, Tensor]]  # per group of samples: rows (R,), prefix cols (S_g,)


def length_groups(prefix: Prefix) -> Segments | None:
    """The samples of each own length (rows) and the prefix columns that length covers.

    A sample's prefix is then the one it has alone, whatever its companions (the batch pads
    to its longest prompt and largest kept count): every reduction over the sequence
    (softmax sums, the probs @ V contraction, the GEMM row count) has the same length
    alone and batched, so its actions are bitwise the same (tests/pi05/
    test_batch_invariance.py). Cutting is exact: a sample's kept patches come first in its
    patch slots and its valid prompt tokens first in its prompt slots, and position ids do
    not depend on the padding after them. None: the whole batch, as it is.
    """
    own, B = prefix.own_lengths, prefix.embs.shape[0]
    if own is None or B == 0:
        return None
    K = int(own[:, 0].max())  # the batch's patch slots; the prompt slots follow them
    full = [K, int(own[:, 1].max())]
    if sum(full) != prefix.embs.shape[1]:
        raise RuntimeError(f"prefix of length {prefix.embs.shape[1]} is not {full} slots")
    groups: Segments = []
    for key in torch.unique(own, dim=0).tolist():  # sorted: a fixed order of groups
        rows = (own == own.new_tensor(key)).all(1).nonzero().squeeze(1)  # (R,)
        if len(rows) == B and key == full:
            return None
        patch_cols = torch.arange(key[0], device=prefix.embs.device)
        cols = torch.cat([patch_cols, K + torch.arange(key[1]).to(patch_cols)])
        pad = prefix.pad_masks[rows]  # (R, S): a cut must drop padding only
        if not torch.equal(pad[:, cols].sum(1), pad.sum(1)):
            raise RuntimeError(f"own lengths {key} cut valid tokens of samples {rows.tolist()}")
        groups.append((rows, cols))
    return groups


def split_by_length(prefix: Prefix) -> list[tuple[Tensor | None, Prefix]]:
    """`length_groups` as separate prefixes, each cut to its columns; rows None: the
    whole batch, as it is."""
    groups = length_groups(prefix)
    if groups is None:
        return [(None, prefix)]
    return [(rows, prefix.take(rows, cols)) for rows, cols in groups]


@dataclass
class LossOutput:
    loss: Tensor  # (B, H, action_dim) per-element MSE
    v_t: Tensor  # (B, H, action_dim)
    x_t: Tensor  # (B, H, action_dim)
    position_ids: Tensor  # (B, S_p + H) of the joint pass
    prefix: Prefix
    metrics: dict[str, float]

    @property
    def total(self) -> Tensor:
        """() what training minimizes: openpi's mean MSE, plus the pruner's objective."""
        mse = self.loss.mean()
        return mse if self.prefix.aux_loss is None else mse + self.prefix.aux_loss


@dataclass
class SampleOutput:
    actions: Tensor  # (B, H, action_dim)
    kept_tokens: Tensor  # (B,) patch tokens kept per sample
    total_tokens: int  # patch slots before pruning
    prefix_len: int  # prefix length actually run (after pruning / prompt trimming)
    metrics: dict[str, float]


KVCache = list[tuple[Tensor, Tensor]]  # per layer: K, V (B, kv, S_p, hd) after RoPE
# One prefill of `sample`: its rows of the batch (None: all), prefix, cache, and the groups
# that attend apart inside it (None: the whole prefix attends as one).
Run = tuple[Tensor | None, Prefix, KVCache, Segments | None]


class PaliGemma(nn.Module):
    def __init__(self, cfg: Pi05Config):
        super().__init__()
        self.model = nn.Module()
        self.model.vision_tower = VisionTower(cfg.vision)
        self.model.multi_modal_projector = Projector(cfg.vision.width, cfg.paligemma.width)
        self.model.language_model = GemmaModel(cfg.paligemma, cfg.vocab_size, cond_dim=None)


class GemmaExpert(nn.Module):
    def __init__(self, cfg: Pi05Config):
        super().__init__()
        w = cfg.action_expert.width
        self.model = GemmaModel(cfg.action_expert, vocab_size=None, cond_dim=w)


class PaliGemmaWithExpert(nn.Module):
    def __init__(self, cfg: Pi05Config):
        super().__init__()
        self.paligemma = PaliGemma(cfg)
        self.gemma_expert = GemmaExpert(cfg)


class Pi05Model(nn.Module):
    def __init__(self, config: Pi05Config):
        super().__init__()
        config.validate()
        self.config = config
        ew = config.action_expert.width
        self.paligemma_with_expert = PaliGemmaWithExpert(config)
        self.action_in_proj = Linear(config.action_dim, ew)
        self.action_out_proj = Linear(ew, config.action_dim)
        self.time_mlp_in = Linear(ew, ew)
        self.time_mlp_out = Linear(ew, ew)
        pc = config.pruning
        width, per_camera = config.paligemma.width, config.vision.num_patches
        self.pruner = TokenPruner(pc, width, per_camera) if pc.enabled else None
        self.gradient_checkpointing = False  # trainers switch it on (openpi recipe)
        # Training only: leave out of the joint pass the prefix slots that are padding for
        # EVERY sample of the batch (a camera masked throughout, prompt slots past the
        # longest prompt), and skip SigLIP for such a camera. Nothing attends to a padded
        # key (its softmax weight is exactly 0) and its own output feeds nothing, so the
        # loss is the same up to summation order; on the reference (third camera masked,
        # prompts of ~12 of 32 slots) it removes about a third of the prefix. Inference never
        # does this: a sample's sequence would then depend on its batch (invariant.py).
        self.drop_batch_padding = False
        self.reset_parameters()
        if config.dtype == "bfloat16":
            self.to_bfloat16_for_selected_params()

    # -- construction ----------------------------------------------------------------

    def reset_parameters(self, std: float = 0.02) -> None:
        """Small random init for training from scratch (checkpoints overwrite it)."""
        for name, p in self.named_parameters():
            if name.startswith("pruner."):
                continue  # the pruner initialises its own parameters
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                # Gemma norms are (1 + w): zeros is identity; SigLIP LayerNorms use w as is.
                nn.init.ones_(p) if "vision_tower" in name else nn.init.zeros_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=std)
        for layer in self.expert.layers:  # adaRMS starts as identity with an open gate
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                nn.init.zeros_(norm.dense.weight)
                nn.init.zeros_(norm.dense.bias)
                w = norm.dense.bias.shape[0] // 3
                nn.init.ones_(norm.dense.bias[2 * w :])  # gate = 1

    def to_bfloat16_for_selected_params(self) -> None:
        """openpi's mixed precision: bf16 weights except its fp32 keep-list and the
        top-level projections (they live outside `paligemma_with_expert`)."""
        for name, p in self.paligemma_with_expert.named_parameters():
            if not any(k in name for k in FP32_KEEP):
                p.data = p.data.to(torch.bfloat16)

    @property
    def vision(self) -> VisionTower:
        return self.paligemma_with_expert.paligemma.model.vision_tower

    @property
    def llm(self) -> GemmaModel:
        return self.paligemma_with_expert.paligemma.model.language_model

    @property
    def expert(self) -> GemmaModel:
        return self.paligemma_with_expert.gemma_expert.model

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.llm.layers[0].self_attn.q_proj.weight.dtype

    # -- 2. prefix ---------------------------------------------------------------------

    def embed_images(self, obs: Observation) -> tuple[Tensor, Tensor]:
        """All cameras through SigLIP + projector in one batch.

        -> patches (B, N_total, D) pooled in camera order, patch_valid (B, N_total) bool.
        """
        cfg = self.config
        masks = torch.stack([obs.image_masks[c].bool() for c in cfg.camera_names], dim=1)
        B, C = masks.shape
        seen = [True] * C  # cameras run through SigLIP (all, except below)
        if self.drop_batch_padding and self.training:
            seen = masks.any(0).tolist()  # a camera masked for the whole batch: skipped
        names = [c for c, s in zip(cfg.camera_names, seen) if s]
        pixels = [_to_nchw(obs.images[c], cfg.vision.image_size, c) for c in names]
        feats = self.vision.vision_model(torch.cat(pixels, dim=0))  # (C'*B, P, W_v)
        proj = self.paligemma_with_expert.paligemma.model.multi_modal_projector.linear
        x = proj(feats.to(proj.weight.dtype))  # (C'*B, P, D); openpi: no 1/sqrt(D) here
        P = x.shape[1]
        x = x.view(len(names), B, P, -1)
        if len(names) < C:  # skipped cameras: zeros, padding for every sample
            full = x.new_zeros(C, B, P, x.shape[-1])
            full[torch.tensor(seen)] = x
            x = full
        patches = x.transpose(0, 1).reshape(B, C * P, -1)  # (B, N, D)
        patch_valid = masks[:, :, None].expand(B, C, P).reshape(B, C * P)  # (B, N)
        return patches, patch_valid

    def embed_language(self, tokens: Tensor) -> Tensor:  # (B, L) -> (B, L, D)
        emb = self.llm.embed_tokens(tokens)
        return emb * math.sqrt(emb.shape[-1])  # openpi embed_prefix: * sqrt(width)

    def embed_prefix(
        self, obs: Observation, *, step: int | None = None, prune: bool | None = None
    ) -> Prefix:
        """[patches of every camera | language]; pruned when the pruner is on.

        Position ids (docs/references.md §1): openpi numbers the prefix by cumsum(pad) - 1 over
        the UNPRUNED sequence and starts the suffix at the count of valid prefix tokens.
        Under pruning, `pruning.position_ids` picks the numbering of kept tokens, one
        function per mode in policies/pi05/positions.py.
        """
        patches, patch_valid = self.embed_images(obs)  # (B, N, D), (B, N)
        lang = self.embed_language(obs.tokenized_prompt)  # (B, L, D)
        lang_mask = obs.tokenized_prompt_mask.bool()  # (B, L)
        B, N, _ = patches.shape
        L = lang.shape[1]
        pad_full = torch.cat([patch_valid, lang_mask], dim=1)  # (B, N + L)
        pos_full = torch.cumsum(pad_full.long(), dim=1) - 1
        next_full = pad_full.long().sum(-1)  # (B,)

        use_pruner = self.pruner is not None and (prune is None or prune)
        if not use_pruner:
            embs = torch.cat([patches, lang.to(patches.dtype)], dim=1)
            return Prefix(
                embs=embs,
                pad_masks=pad_full,
                att_masks=torch.zeros_like(pad_full),
                position_ids=pos_full,
                next_position=next_full,
                kept_tokens=patch_valid.long().sum(-1),
                total_tokens=N,
            )

        pc = self.config.pruning
        r = self.pruner(patches, patch_valid, lang, lang_mask, step=step)
        # train: r.patches (B, N, D), r.index (B, N); eval: (B, K, D), (B, K)
        kept = r.patches.to(patches.dtype)
        own = None if self.training else self._own_lengths(r.kept_tokens, lang_mask)
        if own is not None and pc.trim_prompt_padding:
            # Drop padded prompt slots: the batch keeps up to its longest valid prompt.
            L = int(own[:, 1].max().item()) if B else L
            lang, lang_mask = lang[:, :L], lang_mask[:, :L]
        pad = torch.cat([r.valid, lang_mask], dim=1)  # (B, K + L)
        layout = PrunedLayout(
            pos_full, next_full, r.index, r.keep_mask, pad, N, self.config.max_token_len
        )
        position_ids, next_pos = NUMBERINGS[pc.position_ids](layout)
        return Prefix(
            embs=torch.cat([kept, lang.to(kept.dtype)], dim=1),
            pad_masks=pad,
            att_masks=torch.zeros_like(pad),
            position_ids=position_ids,
            next_position=next_pos,
            kept_tokens=r.kept_tokens,
            total_tokens=N,
            metrics=r.metrics,
            own_lengths=own,
            aux_loss=r.aux_loss,
            key_bias=_with_zeros(r.key_bias, L),
        )

    def _own_lengths(self, kept: Tensor, lang_mask: Tensor) -> Tensor:
        """(B,) kept counts, (B, L) prompt mask -> (B, 2) long: the patch slots (the count
        rounded up to a bucket, selection.gather_kept) and prompt slots (the valid extent
        when trimming) each sample's prefix has when it is embedded alone."""
        pc, N = self.config.pruning, self.config.num_patches_total
        K = [padded_length(int(c), N, pc.buckets) for c in kept.tolist()]
        if pc.trim_prompt_padding:
            L = _valid_extent(lang_mask)
        else:
            L = torch.full_like(kept, lang_mask.shape[1])
        return torch.stack([torch.tensor(K, dtype=torch.long, device=kept.device), L.long()], 1)

    # -- 3. suffix ---------------------------------------------------------------------

    def embed_suffix(self, x_t: Tensor, time: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """π0.5 suffix: H action tokens; time enters only through adaRMS.

        x_t (B, H, A), time (B,) -> embs (B, H, E), pad (B, H), att (B, H) float
        ([1, 0, 0, ...]: the action block sees the prefix, the prefix never sees it),
        adarms_cond (B, E).
        """
        action_emb = self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype))
        t_emb = sinusoidal_time_embedding(time, self.action_in_proj.out_features)
        t_emb = t_emb.to(self.time_mlp_in.weight.dtype)
        cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(t_emb))))  # (B, E)
        B, H = x_t.shape[:2]
        pad = torch.ones(B, H, dtype=torch.bool, device=x_t.device)
        att = torch.zeros(B, H, dtype=torch.float32, device=x_t.device)
        att[:, 0] = 1.0
        return action_emb, pad, att, cond

    # -- 4. joint attention ------------------------------------------------------------

    def joint_layer(
        self,
        i: int,
        xs: list[Tensor | None],
        conds: list[Tensor | None],
        mask: Tensor,
        position_ids: Tensor,
        past_kv: tuple[Tensor, Tensor] | None = None,
        groups: AttentionGroups | None = None,
        key_bias: Tensor | None = None,
    ) -> tuple[list[Tensor | None], tuple[Tensor, Tensor]]:
        """One layer over the streams present in `xs` ([prefix, suffix]; None = absent).

        Each stream projects Q/K/V with its own weights; the streams are concatenated
        along the sequence for ONE attention (PaliGemma's scale and RoPE), then split
        back (openpi gemma_pytorch `compute_layer_complete`). `past_kv` holds cached
        prefix K/V that the suffix reads (never extended); `groups`, if given, restricts
        each group of samples' attention to its own columns (`grouped_attention`);
        `key_bias` (B, S) is added to every query's logit of each key (`Prefix.key_bias`). Returns
        the new hidden states and this call's K/V (for caching).
        """
        layers = [self.llm.layers[i], self.expert.layers[i]]
        hs, gates, qs, ks, vs = [], [], [], [], []
        for x, cond, layer in zip(xs, conds, layers):
            if x is None:
                continue
            h, gate = layer.input_layernorm(x, cond)
            q, k, v = layer.self_attn.qkv(h)
            hs.append((x, layer))
            gates.append(gate)
            qs.append(q), ks.append(k), vs.append(v)
        q, k, v = torch.cat(qs, dim=2), torch.cat(ks, dim=2), torch.cat(vs, dim=2)
        head_dim = q.shape[-1]
        cos, sin = rope_cos_sin(position_ids, head_dim, self.config.paligemma.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        new_kv = (k, v)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
        if groups is None:
            att = joint_attention(q, k, v, mask, head_dim**-0.5, key_bias)  # (B, S, h*hd)
        else:
            att = grouped_attention(q, k, v, mask, head_dim**-0.5, groups, key_bias)
        outs: list[Tensor | None] = []
        start = 0
        for (x, layer), gate in zip(hs, gates):
            end = start + x.shape[1]
            o = layer.self_attn.o_proj(att[:, start:end].to(layer.self_attn.o_proj.weight.dtype))
            y = gated_residual(x, o, gate)
            cond = conds[0] if layer is layers[0] else conds[1]
            h, gate2 = layer.post_attention_layernorm(y, cond)
            outs.append(gated_residual(y, layer.mlp(h), gate2))
            start = end
        it = iter(outs)
        return [None if x is None else next(it) for x in xs], new_kv

    def run_layers(
        self,
        xs: list[Tensor | None],
        conds: list[Tensor | None],
        mask: Tensor,
        position_ids: Tensor,
        cache: KVCache | None = None,
        keep_kv: bool = False,
        groups: AttentionGroups | None = None,
        key_bias: Tensor | None = None,
    ) -> tuple[list[Tensor | None], KVCache]:
        new_cache: KVCache = []
        for i in range(self.config.paligemma.depth):
            past = cache[i] if cache is not None else None
            args = (i, xs, conds, mask, position_ids, past, groups, key_bias)
            if self.gradient_checkpointing and self.training:
                xs, kv = checkpoint(self.joint_layer, *args, use_reentrant=False)
            else:
                xs, kv = self.joint_layer(*args)
            if keep_kv:
                new_cache.append(kv)
        return xs, new_cache

    # -- 5. flow matching --------------------------------------------------------------

    def sample_noise(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        return torch.randn(shape, dtype=torch.float32, device=device)

    def sample_time(self, batch: int, device: torch.device) -> Tensor:
        """openpi: t ~ Beta(1.5, 1) * 0.999 + 0.001 (more weight near t = 1, pure noise)."""
        beta = torch.distributions.Beta(
            torch.tensor(1.5, device=device), torch.tensor(1.0, device=device)
        )
        return beta.sample((batch,)).float() * 0.999 + 0.001

    def forward(
        self,
        observation: Observation,
        actions: Tensor,
        noise: Tensor | None = None,
        time: Tensor | None = None,
        *,
        step: int | None = None,
    ) -> LossOutput:
        """Flow-matching loss (openpi `PI0Pytorch.forward`). actions (B, H, A).

        `step` is the global training step; the pruner's noise schedule reads it.
        """
        if noise is None:
            noise = self.sample_noise(actions.shape, actions.device)
        if time is None:
            time = self.sample_time(actions.shape[0], actions.device)
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions  # (B, H, A)
        u_t = noise - actions

        prefix = self.embed_prefix(observation, step=step)
        if self.drop_batch_padding and self.training:
            used = prefix.pad_masks.any(0).nonzero().squeeze(1)  # (S',) columns someone uses
            prefix = prefix.take(torch.arange(prefix.embs.shape[0]), used)
        suffix, s_pad, s_att, cond = self.embed_suffix(x_t, time)
        dtype = self.compute_dtype
        pad = torch.cat([prefix.pad_masks, s_pad], dim=1)
        att = torch.cat([prefix.att_masks.float(), s_att], dim=1)
        mask = make_att_2d_masks(pad, att)  # (B, S, S)
        s_pos = prefix.next_position[:, None] + torch.cumsum(s_pad.long(), dim=1) - 1
        position_ids = torch.cat([prefix.position_ids, s_pos], dim=1)
        bias = _with_zeros(prefix.key_bias, s_pad.shape[1])  # (B, S) or None
        (_, out), _ = self.run_layers(
            [prefix.embs.to(dtype), suffix.to(dtype)],
            [None, cond],
            mask,
            position_ids,
            key_bias=bias,
        )
        H = self.config.action_horizon
        out, _ = self.expert.norm(out[:, -H:], cond)
        v_t = self.action_out_proj(out.to(torch.float32))  # (B, H, A)
        loss = F.mse_loss(u_t, v_t, reduction="none")
        return LossOutput(loss, v_t, x_t, position_ids, prefix, prefix.metrics)

    def compute_loss(
        self,
        observation: Observation,
        actions: Tensor,
        noise: Tensor | None = None,
        time: Tensor | None = None,
    ) -> Tensor:
        """Per-element MSE (B, H, action_dim), as openpi's `forward` returns it."""
        return self.forward(observation, actions, noise, time).loss

    @torch.no_grad()
    def prefill(self, prefix: Prefix, segments: Segments | None = None) -> KVCache:
        """Run the prefix once through PaliGemma; keep its K/V for every denoise step.
        `segments` (`length_groups`): each group attends over its own columns only."""
        mask = make_att_2d_masks(prefix.pad_masks, prefix.att_masks)
        _, cache = self.run_layers(
            [prefix.embs.to(self.compute_dtype), None],
            [None, None],
            mask,
            prefix.position_ids,
            keep_kv=True,
            groups=None if segments is None else [(r, c, c) for r, c in segments],
        )
        return cache

    @torch.no_grad()
    def denoise_step(
        self,
        prefix: Prefix,
        cache: KVCache,
        x_t: Tensor,
        time: Tensor,
        segments: Segments | None = None,
    ) -> Tensor:
        """One suffix-only pass reading the cached prefix K/V. -> v_t (B, H, A).
        `segments`: as `prefill`'s; each group's actions read its own prefix columns."""
        suffix, s_pad, s_att, cond = self.embed_suffix(x_t, time)
        B, H = s_pad.shape
        prefix_2d = prefix.pad_masks[:, None, :].expand(B, H, prefix.pad_masks.shape[1])
        mask = torch.cat([prefix_2d, make_att_2d_masks(s_pad, s_att)], dim=2)  # (B, H, S_p+H)
        position_ids = prefix.next_position[:, None] + torch.cumsum(s_pad.long(), dim=1) - 1
        groups = None
        if segments is not None:  # queries: the H actions; keys: own prefix cols + actions
            acts = torch.arange(H, device=x_t.device)
            S_p = prefix.pad_masks.shape[1]
            groups = [(r, acts, torch.cat([c, S_p + acts])) for r, c in segments]
        (_, out), _ = self.run_layers(
            [None, suffix.to(self.compute_dtype)],
            [None, cond],
            mask,
            position_ids,
            cache,
            groups=groups,
        )
        out, _ = self.expert.norm(out[:, -H:], cond)
        return self.action_out_proj(out.to(torch.float32))

    @torch.no_grad()
    def sample(
        self,
        observation: Observation,
        noise: Tensor | None = None,
        num_steps: int = 10,
        *,
        prune: bool | None = None,
        on_step: Callable[[Tensor, Tensor], None] | None = None,
    ) -> SampleOutput:
        """Euler integration of the flow from t = 1 (noise) to t = 0 (actions).

        Time accumulates in fp32 exactly as openpi does (the last t is 0.09999993).
        `on_step(time, v_t)` sees every denoise step (used by the parity tests).
        Samples whose own prefix lengths differ attend as separate groups (`_runs`), so a
        sample's actions do not depend on the batch it is in.
        """
        if num_steps <= 0:
            raise ValueError(f"num_steps must be positive, got {num_steps}")
        B = observation.batch_size
        device = observation.tokenized_prompt.device
        cfg = self.config
        if noise is None:
            noise = self.sample_noise((B, cfg.action_horizon, cfg.action_dim), device)
        prefix = self.embed_prefix(observation, prune=prune)
        if prefix.own_lengths is None:  # unpruned: openpi's padded layout
            prefix = drop_padding(prefix)
        runs = self._runs(prefix)
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=device)
        time = torch.tensor(1.0, dtype=torch.float32, device=device)
        x_t = noise
        while time >= -dt / 2:
            t = time.expand(B)
            v_t = self._velocity(runs, x_t, time)
            if on_step is not None:
                on_step(t, v_t)
            x_t = x_t + dt * v_t
            time = time + dt
        return SampleOutput(
            actions=x_t,
            kept_tokens=prefix.kept_tokens,
            total_tokens=prefix.total_tokens,
            prefix_len=prefix.embs.shape[1],
            metrics=prefix.metrics,
        )

    def _runs(self, prefix: Prefix) -> list[Run]:
        """How `sample` runs a batch: as it is when every sample has the batch's lengths;
        else ONE padded pass with each group's attention on its own columns where the
        padding rows cannot change a valid row's bits (`_packs`); else one pass per group,
        cut to its lengths (`split_by_length`)."""
        segments = length_groups(prefix)
        if segments is None:
            return [(None, prefix, self.prefill(prefix), None)]
        if self._packs(prefix, segments):
            return [(None, prefix, self.prefill(prefix, segments), segments)]
        return [(rows, part, self.prefill(part), None) for rows, part in split_by_length(prefix)]

    def _packs(self, prefix: Prefix, segments: Segments) -> bool:
        """Whether a padded pass gives every sample its alone bits: outside attention the
        prefix stream is row-wise (norms, RoPE, residuals, PaliGemma's Linears), and each
        Linear's rows are computed independently of the others (`rows_independent`,
        probed on this machine; CPU only, true on one thread: rollout actors and Serve
        replicas). Each group needs MIN_ROWS rows, as alone it runs the flattened GEMM too.
        Why: a Serve batch of 8 prompts of 8 lengths ran 8 passes (4.4x one pass's time,
        benchmarks/pi05_latency.py), now its Linears run once."""
        if not prefix.embs.is_cpu or min(len(c) for _, c in segments) < MIN_ROWS:
            return False
        linears = [m for m in self.llm.layers.modules() if isinstance(m, Linear)]
        return all(rows_independent(m.in_features, m.out_features, m.weight.dtype) for m in linears)

    def _velocity(self, runs: list[Run], x_t: Tensor, time: Tensor) -> Tensor:
        """v_t (B, H, A) of every run's samples at scalar `time`, x_t (B, H, A)."""
        if len(runs) == 1 and runs[0][0] is None:
            _, prefix, cache, segments = runs[0]
            return self.denoise_step(prefix, cache, x_t, time.expand(x_t.shape[0]), segments)
        v_t = torch.empty_like(x_t)
        for rows, prefix, cache, _ in runs:
            v_t[rows] = self.denoise_step(prefix, cache, x_t[rows], time.expand(len(rows)))
        return v_t

    def sample_actions(
        self, observation: Observation, noise: Tensor | None = None, num_steps: int = 10
    ) -> Tensor:
        """openpi's `sample_actions`: (B, H, action_dim)."""
        return self.sample(observation, noise, num_steps).actions


def drop_padding(prefix: Prefix) -> Prefix:
    """openpi's unpruned prefix [N patch slots | L prompt slots] without its padding: each
    sample's valid patches first (in camera order), then its prompt; own_lengths = (valid
    patches, valid prompt extent), so `split_by_length` embeds every sample as it is alone,
    as under pruning. `sample` runs it; `embed_prefix` keeps openpi's layout (parity).

    Exact up to rounding: padding slots (an absent camera, the prompt's tail) are masked
    out of every attention and do not advance the position ids (openpi numbers the prefix
    by cumsum(pad) - 1), so leaving them out changes no logit, only the length of the
    reductions. It is the eval twin of training's drop_batch_padding: a LIBERO-style policy
    with its third camera absent attends over 128 + prompt tokens instead of 192 + 32.
    """
    N = prefix.total_tokens
    patch_valid, lang_mask = prefix.pad_masks[:, :N], prefix.pad_masks[:, N:]  # (B, N), (B, L)
    B, L = lang_mask.shape
    own = torch.stack([patch_valid.long().sum(-1), _valid_extent(lang_mask)], dim=1)  # (B, 2)
    if bool((own == own.new_tensor([N, L])).all()):  # no sample has padding: as it is
        return dataclasses.replace(prefix, own_lengths=own)
    # Gather even when the batch's largest lengths are the full ones: a sample with a camera
    # absent must have its valid patches first whatever its companions keep.
    K, Lk = int(own[:, 0].max()), int(own[:, 1].max())
    first = torch.argsort((~patch_valid).to(torch.int8), dim=1, stable=True)[:, :K]  # (B, K)
    prompt = N + torch.arange(Lk, device=first.device).expand(B, Lk)  # (B, Lk)
    cols = torch.cat([first, prompt], dim=1)  # (B, K + Lk) sequence columns per sample

    def pick(x: Tensor) -> Tensor:
        index = cols if x.dim() == 2 else cols[..., None].expand(-1, -1, x.shape[-1])
        return torch.take_along_dim(x, index, dim=1)

    return dataclasses.replace(
        prefix,
        embs=pick(prefix.embs),
        pad_masks=pick(prefix.pad_masks),
        att_masks=pick(prefix.att_masks),
        position_ids=pick(prefix.position_ids),
        own_lengths=own,
    )


def _with_zeros(bias: Tensor | None, n: int) -> Tensor | None:
    """(B, S) key bias -> (B, S + n): the `n` keys after it (prompt, actions) unbiased."""
    return None if bias is None else torch.cat([bias, bias.new_zeros(bias.shape[0], n)], 1)


def _valid_extent(mask: Tensor) -> Tensor:
    """(B, L) bool -> (B,) index after the last True (0 when none)."""
    L = mask.shape[1]
    idx = torch.arange(1, L + 1, device=mask.device)
    return (mask.long() * idx).max(dim=1).values


def _to_nchw(img: Tensor, size: int, camera: str) -> Tensor:
    """Accept (B, 3, H, W) or (B, H, W, 3), float in [-1, 1] or uint8 (openpi rule)."""
    if img.ndim != 4:
        raise ValueError(f"images[{camera!r}] must be 4-D, got shape {tuple(img.shape)}")
    if img.shape[1] != 3 and img.shape[-1] == 3:
        img = img.permute(0, 3, 1, 2)
    if img.dtype == torch.uint8:
        img = img.float() / 255.0 * 2.0 - 1.0
    if tuple(img.shape[1:]) != (3, size, size):
        raise ValueError(
            f"images[{camera!r}] must be (B, 3, {size}, {size}) or (B, {size}, {size}, 3) "
            f"(vision.image_size={size}; resize in the policy transforms), "
            f"got {tuple(img.shape)}"
        )
    return img
