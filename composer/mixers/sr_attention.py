"""PVT's spatial-reduction attention (``SR``; U-PVT of "Demystify Transformers & Convolutions", Hu et al.).

Every query attends to a spatially reduced set of keys (Wang et al., "Pyramid Vision Transformer", ICCV 2021):

* ``q``: Linear(C, C) on every token;
* ``sr_ratio`` R > 1: the keys and values come from an R x R, stride-R conv (``sr``, with bias) over the map,
  flattened to N / R² tokens and normalised (``norm``, LayerNorm eps 1e-5 as the reference); R = 1 uses the
  tokens themselves;
* ``kv``: Linear(C, 2C) on those tokens; softmax(q·kᵀ·d^-½)·v per head; ``proj``: Linear(C, C) with bias.

At 224 px PVT's ratios 8, 4, 2, 1 give every stage 7 x 7 = 49 keys. With ``sr_ratio`` unset the ratio is PVT's
rule 2^(stages - 1 - stage), lowered to the largest ratio that divides the stage's map where it does not (at 112 px:
7, 2, 1, 1), so the default compiles at any input size; an explicit ratio that does not divide the map is rejected
(the stride-R conv would silently drop the border pixels from the keys).

The absolute position embedding ([1, C, H, W], trunc-normal 0.02) belongs to the FIRST block of each stage
(``pos_embed: true``). PVT adds it to the block input before the block, so it reaches both the residual and the
norm; the module exposes it as ``embed_block_input``, the hook the shared block calls on its input. It is tied
to the stage's map at the compiled ``input_size`` (as in the reference), so a forward at another resolution is
refused with a message; compile the spec at that size instead.

State-dict keys equal the reference's (``q``, ``kv``, ``proj``, ``sr``, ``norm``, ``pos_embed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from ..cost_types import Cost, conv_cost, linear_cost
from ..fields import Probability
from .base import AttentionHeads, MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


@register_mixer
class SRAttentionConfig(AttentionHeads, MixerConfig):
    fixed_input_size = "its absolute position embedding is sized to the compiled map"
    type: Literal["sr_attention"] = "sr_attention"
    sr_ratio: PositiveInt | None = Field(
        default=None, description="keys from an R x R stride-R conv (1: no reduction); unset: PVT's "
        "2^(stages-1-stage), or the largest ratio below it that divides the map")
    num_heads: PositiveInt | None = Field(default=None, description="heads (default: width / head_dim)")
    head_dim: PositiveInt = Field(default=32, description="channels per head when num_heads is unset")
    qkv_bias: bool = Field(default=True, description="biases on q and kv (PVT, U-PVT: true)")
    pos_embed: bool = Field(default=True, description="absolute position embedding in each stage's first block")
    attn_drop: Probability = Field(default=0.0, description="dropout on the attention weights")
    proj_drop: Probability = Field(default=0.0, description="dropout after proj")
    layout = "channels_last"
    cost_depends_on_block = True  # the position embedding exists only in a stage's first block
    summary = ("PVT spatial-reduction attention: keys/values from an R x R stride-R conv + LN, "
               "absolute position embedding at each stage's first block (U-PVT)")
    paper = ("Pyramid Vision Transformer (Wang et al., ICCV 2021); U-PVT of Demystify Transformers & "
             "Convolutions in Modern Image Deep Networks (Hu et al. 2025)")
    cost_formula = ("params 4C² + C (q, kv, proj) + 3C if qkv_bias, + R²C² + 3C (sr conv, LN) if R > 1, + C·H·W "
                    "(position embedding, a stage's first block); MACs 2NC² (q, proj) + 2MC² (kv) + NC² (sr conv, "
                    "if R > 1) + 2NMC (q·kᵀ, a·v); N = H·W tokens, M = N/R² keys")

    def ratio(self, ctx: MixerContext) -> int:
        if self.sr_ratio:
            return self.sr_ratio
        # PVT's rule, 2^(stages - 1 - stage) (8, 4, 2, 1: 7x7 keys at 224), lowered to the largest ratio that divides
        # the map, so that the default works at every input size (28x28 -> 7, 14x14 -> 2)
        pvt = 2 ** max(ctx.num_stages - 1 - ctx.stage, 0)
        return max(d for d in range(1, pvt + 1) if ctx.height % d == 0 and ctx.width % d == 0)

    def has_pos_embed(self, ctx: MixerContext) -> bool:
        return self.pos_embed and ctx.block == 0

    def check(self, ctx: MixerContext) -> None:
        self.check_heads(ctx)
        r = self.ratio(ctx)
        if ctx.height % r or ctx.width % r:
            fits = [d for d in range(1, min(ctx.height, ctx.width) + 1) if ctx.height % d == 0 and ctx.width % d == 0]
            raise MixerCheckError(f"sr_ratio {r} does not divide the {ctx.height}x{ctx.width} map (the stride-{r} "
                                  f"reduction would drop border pixels); set sr_ratio to one of {fits} for this "
                                  f"stage, or use an input_size that makes this map a multiple of {r}", "sr_ratio")

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, r = ctx.dim, ctx.tokens, self.ratio(ctx)
        keys = n // (r * r)
        cost = linear_cost(c, c, n, self.qkv_bias) + linear_cost(c, 2 * c, keys, self.qkv_bias)  # q, kv
        if r > 1:
            cost += conv_cost(c, c, r, (ctx.height // r, ctx.width // r)) + Cost(2 * c)  # sr conv, LN
        cost += Cost(macs=2 * n * keys * c) + linear_cost(c, c, n)  # QKᵀ and AV, proj
        if self.has_pos_embed(ctx):
            cost += Cost(c * n)
        return cost

    def buffer_bytes(self, ctx: MixerContext) -> int:
        # as attention's: with attention dropout SDPA's math path holds the (heads, N, N / R²) weights
        keys = ctx.tokens // self.ratio(ctx) ** 2
        return 4 * self.heads(ctx.dim) * ctx.tokens * keys if self.attn_drop > 0 else 0

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.sr_attention import SpatialReductionAttention
        return SpatialReductionAttention(ctx.dim, self.heads(ctx.dim), self.ratio(ctx), self.qkv_bias,
                                         self.attn_drop, self.proj_drop,
                                         (ctx.height, ctx.width) if self.has_pos_embed(ctx) else None)

    def init_weights(self, module: nn.Module) -> None:
        module.reset_parameters()  # the generic init covers convs / linears; the position embedding is ours


register_symbol("SR", "sr_attention", doc="PVT spatial-reduction attention (U-PVT)")
