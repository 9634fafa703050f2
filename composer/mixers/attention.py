"""Multi-head self-attention over all tokens (``M``, ``Attn``; ``A`` in MetaFormer-style macros), as in
CAFormer: head_dim 32, no qkv/proj bias by default, scaled dot product softmax attention."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import PositiveInt

from ..cost_types import Cost, linear_cost
from ..fields import Probability
from .base import AttentionHeads, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


@register_mixer
class AttentionConfig(AttentionHeads, MixerConfig):
    type: Literal["attention"] = "attention"
    head_dim: PositiveInt = 32
    num_heads: PositiveInt | None = None
    qkv_bias: bool = False
    proj_bias: bool = False
    attn_drop: Probability = 0.0
    proj_drop: Probability = 0.0
    layout = "channels_last"
    summary = "multi-head softmax self-attention over all tokens (CAFormer); heads = width / head_dim"
    paper = "Attention Is All You Need; MetaFormer Baselines for Vision (Yu et al. 2022)"
    cost_formula = ("I = heads·head_dim (= C by default); params 4·C·I (+ 3I with qkv_bias, + C with proj_bias); "
                    "MACs 4·N·C·I (qkv, proj) + 2·N²·I (QKᵀ and AV, fused SDPA included)")

    def check(self, ctx: MixerContext) -> None:
        self.check_heads(ctx, any_num_heads=True)

    def cost(self, ctx: MixerContext) -> Cost:
        inner, n = self.heads(ctx.dim) * self.head_dim, ctx.tokens
        attention_products = 2 * n * n * inner  # QK^T and AV
        return (linear_cost(ctx.dim, 3 * inner, n, self.qkv_bias) + Cost(macs=attention_products)
                + linear_cost(inner, ctx.dim, n, self.proj_bias))

    def buffer_bytes(self, ctx: MixerContext) -> int:
        # SDPA's fused kernels never hold the N x N weights; with attention dropout (training) PyTorch takes its
        # math path, which does: at least one float32 (heads, N, N) tensor per forward
        return 4 * self.heads(ctx.dim) * ctx.tokens * ctx.tokens if self.attn_drop > 0 else 0

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.attention import Attention
        return Attention(ctx.dim, self.heads(ctx.dim), self.head_dim, self.qkv_bias, self.proj_bias,
                         self.attn_drop, self.proj_drop)


register_symbol("M", "attention", doc="multi-head self-attention (MHSA)")
register_symbol("Attn", "attention", doc="multi-head self-attention (MHSA)")
register_symbol("A", "attention", doc="attention (CAFormer's A; TransNeXt's aggregated attention in macro pvt)")
