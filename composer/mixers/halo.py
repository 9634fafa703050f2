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

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import nn

from ..cost_types import Cost, linear_cost
from ..layers import cached_table
from .base import AttentionHeads, MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol


def _blocks(size: int, block: int) -> int:
    return -(-size // block)


@cached_table
def _key_is_padding(height: int, width: int, block: int, halo: int, device: torch.device) -> torch.Tensor:
    """(num_blocks, 1, w²) bool, True where a key of a block's window lies outside the H x W map (in the halo's
    zero padding or in the padding up to a multiple of the block); broadcasts over (B, heads, blocks, b², w²)."""
    win = block + 2 * halo
    offsets = torch.arange(win, device=device) - halo  # window position -> map position, minus the block start

    def outside(size: int) -> torch.Tensor:  # (blocks along this axis, w)
        pos = torch.arange(_blocks(size, block), device=device)[:, None] * block + offsets
        return (pos < 0) | (pos >= size)

    rows, cols = outside(height), outside(width)
    return (rows[:, None, :, None] | cols[None, :, None, :]).reshape(-1, 1, win * win)


@cached_table
def _offset_index(block: int, win: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(query (b, 1), offset (b, w)) with offset[q, k] = (w - 1) + k - q, the table row of a query at position q
    of its block and a key at position k of its window: ``logits[..., query, offset]`` picks it from (.., b, 2w-1).
    Made per device on first use (not buffers), so a model built on the meta device and materialised works."""
    query = torch.arange(block, device=device)[:, None]
    return query, (win - 1) + torch.arange(win, device=device)[None, :] - query


class RelativeLogits(nn.Module):
    """Query-related relative position logits q·height_rel[(w-1) + ky - qy] + q·width_rel[(w-1) + kx - qx]
    (one (2w - 1, d) table per axis, shared by the heads; timm's / STM-Evaluation's ``PosEmbedRel``).

    Each table meets the queries in one matmul, q (.., b, b, d) @ tableᵀ -> (.., b, b, 2w - 1), and the
    (query, key) pairs then pick their offset's column (a gather, no arithmetic): HW·d·(2w - 1) MACs per axis
    and head."""

    def __init__(self, block: int, win: int, head_dim: int):
        super().__init__()
        self.block, self.win = block, win
        self.height_rel = nn.Parameter(torch.empty(2 * win - 1, head_dim))
        self.width_rel = nn.Parameter(torch.empty(2 * win - 1, head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.height_rel.device.type == "meta":
            return
        std = self.height_rel.shape[1] ** -0.5  # the reference: randn · d^-1/2
        nn.init.normal_(self.height_rel, std=std)
        nn.init.normal_(self.width_rel, std=std)

    def forward(self, q):
        """q (B, heads, blocks, b², d) -> logits (B, heads, blocks, b², w²)."""
        b = self.block
        query, offset = _offset_index(b, self.win, q.device)
        q = q.unflatten(-2, (b, b))  # (.., qy, qx, d)
        along_w = (q @ self.width_rel.transpose(0, 1))[..., query, offset]  # (.., qy, qx, kx)
        along_h = q.transpose(-3, -2) @ self.height_rel.transpose(0, 1)  # (.., qx, qy, 2w - 1)
        along_h = along_h[..., query, offset].transpose(-3, -2)  # (.., qy, qx, ky)
        return (along_h.unsqueeze(-1) + along_w.unsqueeze(-2)).flatten(-2).flatten(-3, -2)


class HaloAttention(nn.Module):
    """Blocked local self-attention with a halo on a (B, H, W, C) map (see the module docstring)."""

    def __init__(self, dim: int, heads: int, block: int, halo: int, qkv_bias: bool, mask_padding: bool,
                 attn_drop: float, proj_drop: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.block, self.halo, self.win = block, halo, block + 2 * halo
        self.mask_padding = mask_padding
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Conv2d(dim, 2 * dim, 1, bias=qkv_bias)
        self.pos_embed = RelativeLogits(block, self.win, self.head_dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        bsz, height, width, c = x.shape
        b, h, w, heads, d = self.block, self.halo, self.win, self.heads, self.head_dim
        nh, nw = _blocks(height, b), _blocks(width, b)
        pad_h, pad_w = nh * b - height, nw * b - width
        # queries: (B, heads, blocks, b², d), blocks row-major, pixels row-major inside a block
        q = F.pad(self.q(x), (0, 0, 0, pad_w, 0, pad_h))
        q = q.reshape(bsz, nh, b, nw, b, heads, d).permute(0, 5, 1, 3, 2, 4, 6).reshape(bsz, heads, nh * nw, b * b, d)
        # keys / values: the w x w window around each block, cut from the zero-padded map
        kv = F.pad(self.kv(x.permute(0, 3, 1, 2)), (h, h + pad_w, h, h + pad_h))
        kv = kv.unfold(2, w, b).unfold(3, w, b)  # (B, 2C, nh, nw, w, w)
        kv = kv.reshape(bsz, heads, 2 * d, nh * nw, w * w).permute(0, 1, 3, 4, 2)
        k, v = kv.split(d, dim=-1)
        attn = (q * self.scale) @ k.transpose(-1, -2) + self.pos_embed(q)  # position logits unscaled
        if self.mask_padding:
            attn = attn.masked_fill(_key_is_padding(height, width, b, h, x.device), -torch.finfo(attn.dtype).max)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = attn @ v  # (B, heads, blocks, b², d)
        out = out.reshape(bsz, heads, nh, nw, b, b, d).permute(0, 2, 4, 3, 5, 1, 6).reshape(bsz, nh * b, nw * b, c)
        return self.proj_drop(self.proj(out[:, :height, :width]))


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
        return HaloAttention(ctx.dim, self.heads(ctx.dim), self.block_size, self.halo_size, self.qkv_bias,
                             self.mask_padding, self.attn_drop, self.proj_drop)

    def init_weights(self, module: nn.Module) -> None:
        module.pos_embed.reset_parameters()  # N(0, d^-1/2), which the generic conv / linear init leaves alone


register_symbol("Halo", "halo_attention", doc="halo attention, 7x7 blocks with halo 3, padded keys masked (U-HaloNet)")
