"""Halo attention (``Halo``), as U-HaloNet of "Demystify Transformers & Convolutions in Modern Image Deep
Networks" (Hu et al., TPAMI 2025; OpenGVLab/STM-Evaluation ``blocks/halonet.py``, itself derived from timm's
``HaloAttn`` after Vaswani et al., "Scaling Local Self-Attention for Parameter Efficient Visual Backbones",
CVPR 2021). On (B, H, W, C) maps.

The map is cut into non-overlapping b x b query blocks; every block attends to the w x w window around it,
w = b + 2·halo (7 + 2·3 = 13), the keys and values coming from the map zero-padded by the halo:

* ``q``: Linear C -> C, no bias; ``kv``: 1x1 conv C -> 2C, no bias (the reference's layer types, so the
  state dict has its shapes); heads of d = 32 channels (per head the channels are [k | v] in ``kv``);
* logits = (q·d^-1/2)·kᵀ + q·height_rel[(w-1) + ky - qy] + q·width_rel[(w-1) + kx - qx]: "query-related"
  relative logits (Attention Augmented Convolutions), two tables of (2w - 1, d) shared by the heads, NOT scaled,
  (qy, qx) the query's place in its block and (ky, kx) the key's place in its window;
* ``mask_padding`` (STM-Evaluation's change, on by default): keys in the zero padding get -max_float before
  the softmax, so a query attends only to real pixels. ``mask_padding: false`` is the original HaloNet / timm,
  whose queries also attend to the padding's zero keys (and zero values);
* softmax over the w² keys, times v, blocks folded back, ``proj`` (Linear C -> C with bias).

Maps the block size does not divide: the reference asserts divisibility (at 224 every map, 56/28/14/7, is a
multiple of 7). composer pads q and kv at the bottom/right to a multiple of b instead (``pad_to_blocks``, on by
default), treats the added rows/columns exactly like the halo's padding (masked keys) and drops the padded
queries, so each real query still attends to exactly the real pixels of its window: the result is what the
reference computes on the same pixels wherever the reference runs at all. ``pad_to_blocks: false`` rejects such
maps, as the reference does; so does ``mask_padding: false`` (the unmasked original would attend to the added
zeros). The padded blocks are computed, so the cost counts them: N' = ceil(H/b)·b · ceil(W/b)·b query tokens in
the attention products, while q, kv and proj run on the N = H·W real tokens.

State-dict keys equal the official ones (``q``, ``kv``, ``pos_embed.height_rel``, ``pos_embed.width_rel``,
``proj``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from ..cost_types import Cost, linear_cost
from .base import AttentionHeads, MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


def _blocks(size: int, block: int) -> int:
    return -(-size // block)


@register_mixer
class HaloAttentionConfig(AttentionHeads, MixerConfig):
    type: Literal["halo_attention"] = "halo_attention"
    block_size: PositiveInt = Field(default=7, description="query block side b (the map is cut into b x b blocks)")
    halo_size: NonNegativeInt = Field(default=3, description="halo h: each block attends to a (b + 2h)² window")
    head_dim: PositiveInt = Field(default=32, description="channels per head (heads = width / head_dim)")
    num_heads: PositiveInt | None = Field(default=None, description="heads (default: width / head_dim)")
    qkv_bias: bool = False
    mask_padding: bool = Field(default=True, description="mask keys in the zero padding (STM-Evaluation); "
                                                         "false: the original HaloNet / timm")
    pad_to_blocks: bool = Field(default=True, description="pad maps the block does not divide (padding masked); "
                                                          "false: reject them, as the reference asserts")
    attn_drop: float = Field(default=0.0, ge=0.0, lt=1.0)
    proj_drop: float = Field(default=0.0, ge=0.0, lt=1.0)
    layout = "channels_last"
    summary = ("halo attention: b x b query blocks attend to their (b + 2h)² halo window, query-related "
               "relative logits, padded keys masked (U-HaloNet)")
    paper = ("Demystify Transformers & Convolutions in Modern Image Deep Networks (Hu et al. 2025); "
             "Scaling Local Self-Attention for Parameter Efficient Visual Backbones (Vaswani et al. 2021)")
    cost_formula = ("params 4C² + C + 2(2w-1)d; MACs 4NC² (q, kv, proj) + N'C(2w² + 2(2w-1)) (q·kᵀ, attn·v, "
                    "height and width relative logits); w = b + 2h, N = HW, N' = N padded to whole b x b blocks "
                    "(= N when b divides the map); masked padded keys are computed and counted")

    def check(self, ctx: MixerContext) -> None:
        self.check_heads(ctx)
        if ctx.height % self.block_size or ctx.width % self.block_size:
            if not self.pad_to_blocks:
                raise MixerCheckError(
                    f"block_size {self.block_size} does not divide the {ctx.height}x{ctx.width} map; choose a "
                    "block_size dividing it, an input_size whose maps it divides (e.g. 224 for block 7), or "
                    "pad_to_blocks: true", "block_size")
            if not self.mask_padding:
                raise MixerCheckError(
                    f"block_size {self.block_size} does not divide the {ctx.height}x{ctx.width} map, and without "
                    "mask_padding the queries would attend to the zeros padded up to whole blocks; set "
                    "mask_padding: true or choose a block_size dividing the map",
                    "mask_padding")

    def padded_tokens(self, ctx: MixerContext) -> int:
        b = self.block_size
        return _blocks(ctx.height, b) * b * _blocks(ctx.width, b) * b

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, d = ctx.dim, ctx.tokens, ctx.dim // self.heads(ctx.dim)
        win = self.block_size + 2 * self.halo_size
        return (linear_cost(c, c, n, self.qkv_bias) + linear_cost(c, 2 * c, n, self.qkv_bias)  # q, kv
                + linear_cost(c, c, n)  # proj
                + Cost(2 * (2 * win - 1) * d,  # height_rel, width_rel
                       self.padded_tokens(ctx) * c * (2 * win * win + 2 * (2 * win - 1))))

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.halo import HaloAttention
        return HaloAttention(ctx.dim, self.heads(ctx.dim), self.block_size, self.halo_size, self.qkv_bias,
                             self.mask_padding, self.attn_drop, self.proj_drop)

    def init_weights(self, module: nn.Module) -> None:
        module.pos_embed.reset_parameters()  # N(0, d^-1/2), which the generic conv / linear init leaves alone


register_symbol("Halo", "halo_attention", doc="halo attention, 7x7 blocks with halo 3, padded keys masked (U-HaloNet)")
