"""LowFormer's lowtention (Nottebaum et al., "LowFormer: Hardware Efficient Design for Convolutional
Transformer Backbones", WACV 2025; github.com/altair199797/LowFormer ``ConvAttention``), symbol ``Low``.

Attention at a lower resolution: a k x k depthwise conv with stride s (no bias) + BatchNorm takes the C x H x W
map to h x w (h = ceil(H/s)), a 1x1 conv (no bias) gives q, k, v for every head (laid out head by head as
[q | k | v], each head_dim wide), softmax(q·kᵀ/√head_dim)·v over the h·w tokens, and a transposed conv brings
the heads' outputs back to C x H x W (cropped): with ``fuse_out_proj`` (the published models) one dense
ConvTranspose2d inner -> C (kernel 2s, stride s, padding s/2; kernel 3 at stride 1) does projection and
upsampling together; without it, a 1x1 output projection inner -> C and a depthwise ConvTranspose2d.

heads = max(1, int(C·head_dim_ratio) // 30), head_dim = int((C // heads)·head_dim_ratio), inner = heads·head_dim
(the official rule; ``width_per_head`` is its 30). The kernel is 5 at stride 2 and 3 at stride 1 unless set.
Keys as timm's ``lowformer.ConvAttention``: ``conv_proj.conv``, ``conv_proj.norm``, ``pwise``, ``o_proj``,
``upsampling``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from ..cost_types import Cost, conv_cost, conv_out, linear_cost
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol
from .mbconv import BN

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


def transposed_conv_cost(cin: int, cout: int, kernel: int, in_hw: tuple[int, int], groups: int = 1) -> Cost:
    """A ConvTranspose2d with bias: MACs are counted per *input* position (every input pixel scatters a
    cin/groups x cout x k² product), as torch's FlopCounterMode counts them."""
    weight = cin * (cout // groups) * kernel * kernel
    return Cost(weight + cout, in_hw[0] * in_hw[1] * weight)


@register_mixer
class LowtentionConfig(MixerConfig):
    type: Literal["lowtention"] = "lowtention"
    stride: PositiveInt = Field(default=2, description="downsampling of the map before attention (LowFormer: 2 "
                                                       "in the stride-16 stage, 1 in the stride-32 stage)")
    kernel_size: PositiveInt | None = Field(default=None, description="the depthwise projection's kernel (odd); "
                                                                      "default 5 at stride > 1, else 3")
    head_dim_ratio: PositiveFloat = Field(default=0.5, description="the official head_dim_mul")
    width_per_head: PositiveInt = Field(default=30, description="heads = max(1, int(C·head_dim_ratio) // this)")
    fuse_out_proj: bool = Field(default=True, description="one dense transposed conv does projection and "
                                                          "upsampling (the published models)")
    summary = ("lowtention: attention on a strided depthwise-conv projection of the map, transposed-conv "
               "upsampling (LowFormer)")
    paper = "LowFormer: Hardware Efficient Design for Convolutional Transformer Backbones (Nottebaum et al., WACV 2025)"
    cost_formula = ("params C·k² + 2C + 3·C·D + up; MACs n·C·k² + 3·n·C·D + 2·n²·D + up, n = ceil(H/s)·ceil(W/s), "
                    "D = heads·head_dim, up = ConvTranspose2d D -> C (kernel 2s; 3 at s = 1) counted per input "
                    "position")

    def kernel(self) -> int:
        return self.kernel_size or (5 if self.stride > 1 else 3)

    def heads(self, dim: int) -> int:
        return int(max(1, (dim * self.head_dim_ratio) // self.width_per_head))

    def head_dim(self, dim: int) -> int:
        return int((dim // self.heads(dim)) * self.head_dim_ratio)

    def reduced(self, ctx: MixerContext) -> tuple[int, int]:
        k = self.kernel()
        return conv_out(ctx.height, k, self.stride, k // 2), conv_out(ctx.width, k, self.stride, k // 2)

    def check(self, ctx: MixerContext) -> None:
        if self.kernel() % 2 == 0:
            raise MixerCheckError(f"kernel_size must be odd so that the projection covers the map as the "
                                  f"upsampling expects, got {self.kernel()}", "kernel_size")
        if self.head_dim(ctx.dim) < 1:
            raise MixerCheckError(f"head_dim_ratio {self.head_dim_ratio} leaves int(({ctx.dim} // "
                                  f"{self.heads(ctx.dim)})·{self.head_dim_ratio}) = 0 channels per head; use a "
                                  "larger head_dim_ratio or width", "head_dim_ratio")

    def cost(self, ctx: MixerContext) -> Cost:
        c, k, s = ctx.dim, self.kernel(), self.stride
        inner = self.heads(c) * self.head_dim(c)
        hw = self.reduced(ctx)
        n = hw[0] * hw[1]
        up_kernel = 3 if s == 1 else 2 * s
        cost = (conv_cost(c, c, k, hw, groups=c, bias=False) + Cost(2 * c)      # depthwise projection + BN
                + linear_cost(c, 3 * inner, n, bias=False) + Cost(macs=2 * n * n * inner))  # qkv, QKᵀ and AV
        if self.fuse_out_proj:
            return cost + transposed_conv_cost(inner, c, up_kernel, hw)
        return cost + linear_cost(inner, c, n) + transposed_conv_cost(c, c, up_kernel, hw, groups=c)

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.lowtention import Lowtention
        return Lowtention(ctx.dim, self.heads(ctx.dim), self.head_dim(ctx.dim), self.stride, self.kernel(),
                          self.fuse_out_proj, BN)

    def init_weights(self, module: nn.Module) -> None:
        # the official init (trunc-normal 0.02, zero bias) covers ConvTranspose2d too; the generic one does not
        from timm.layers import trunc_normal_
        from torch import nn
        trunc_normal_(module.upsampling.weight, std=0.02)
        nn.init.zeros_(module.upsampling.bias)


register_symbol("Low", "lowtention", doc="lowtention: attention at 1/stride resolution (LowFormer)")
