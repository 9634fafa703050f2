"""Multi-head self-attention over all tokens (``M``, ``Attn``; ``A`` in MetaFormer-style macros), as in
CAFormer: head_dim 32, no qkv/proj bias by default, scaled dot product softmax attention."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import NonNegativeFloat, PositiveInt
from torch import nn

from ..cost_types import Cost, linear_cost
from .base import AttentionHeads, MixerConfig, MixerContext, register_mixer, register_symbol


class Attention(nn.Module):
    """Full softmax self-attention on a (B, H, W, C) map; keys ``qkv`` and ``proj`` as in timm."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, qkv_bias: bool, proj_bias: bool,
                 attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        b, h, w, c = x.shape
        n = h * w
        qkv = self.qkv(x.reshape(b, n, c)).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # scale defaults to head_dim ** -0.5, as in the reference
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out)).reshape(b, h, w, c)


@register_mixer
class AttentionConfig(AttentionHeads, MixerConfig):
    type: Literal["attention"] = "attention"
    head_dim: PositiveInt = 32
    num_heads: PositiveInt | None = None
    qkv_bias: bool = False
    proj_bias: bool = False
    attn_drop: NonNegativeFloat = 0.0
    proj_drop: NonNegativeFloat = 0.0
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

    def build(self, ctx: MixerContext) -> nn.Module:
        return Attention(ctx.dim, self.heads(ctx.dim), self.head_dim, self.qkv_bias, self.proj_bias,
                         self.attn_drop, self.proj_drop)


register_symbol("M", "attention", doc="multi-head self-attention (MHSA)")
register_symbol("Attn", "attention", doc="multi-head self-attention (MHSA)")
register_symbol("A", "attention", doc="attention (CAFormer's A; TransNeXt's aggregated attention in macro pvt)")
