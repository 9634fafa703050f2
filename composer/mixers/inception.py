"""InceptionNeXt's Inception depthwise convolution (Yu et al., "InceptionNeXt: When Inception Meets
ConvNeXt", CVPR 2024), symbol ``Inception``.

The C channels are split into four groups in the order [identity, square, horizontal band, vertical band]
with g = int(C·branch_ratio) channels in each conv group and C - 3g left untouched: a k_s x k_s depthwise conv
(3x3), a 1 x k_b and a k_b x 1 depthwise conv (k_b = 11), all with bias and 'same' padding, concatenated back in
the same order. Keys ``dwconv_hw``, ``dwconv_w``, ``dwconv_h`` as timm's ``inception_next.InceptionDWConv2d``.

Note: InceptionNeXt's own block (MetaNeXt) has a single residual, ``x + γ·MLP(BN(mixer(x)))``, with the mixer
inside it. Used as the token mixer of a two-residual MetaFormer/HorNet slot, as here, it builds a different
network from InceptionNeXt, with the same operator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from ..cost_types import Cost, conv_cost
from ..facts import branch_channels
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


@register_mixer
class InceptionDWConfig(MixerConfig):
    type: Literal["inception_dw"] = "inception_dw"
    square_kernel_size: PositiveInt = Field(default=3, description="k_s of the square depthwise branch (odd)")
    band_kernel_size: PositiveInt = Field(default=11, description="k_b of the 1 x k_b and k_b x 1 branches (odd)")
    branch_ratio: PositiveFloat = Field(default=0.125, description="channels per conv branch: int(C·ratio)")
    summary = ("Inception depthwise conv: [identity | k_s x k_s | 1 x k_b | k_b x 1] depthwise on channel groups "
               "(InceptionNeXt)")
    paper = "InceptionNeXt: When Inception Meets ConvNeXt (Yu et al., CVPR 2024)"
    cost_formula = ("params g(k_s² + 1) + 2g(k_b + 1), g = int(C·branch_ratio); MACs N·g(k_s² + 2k_b) "
                    "(bands longer than the map still cost k_b taps per output)")

    def check(self, ctx: MixerContext) -> None:
        for name in ("square_kernel_size", "band_kernel_size"):
            k = getattr(self, name)
            if k % 2 == 0:
                raise MixerCheckError(f"{name} must be odd so that 'same' padding keeps the feature map, got {k}",
                                      name)
        # bands longer than the map are fine: the zero padding keeps the map size (InceptionNeXt itself runs
        # 11-tap bands on the 7x7 maps of its last stage at 224)
        g = branch_channels(ctx.dim, self.branch_ratio)
        if g < 1:
            raise MixerCheckError(f"branch_ratio {self.branch_ratio} leaves int({ctx.dim}·{self.branch_ratio}) = 0 "
                                  f"channels per conv branch; use a branch_ratio of at least 1/{ctx.dim}",
                                  "branch_ratio")
        if 3 * g > ctx.dim:
            raise MixerCheckError(f"branch_ratio {self.branch_ratio} gives 3 conv branches of {g} channels, more "
                                  f"than the width {ctx.dim}; use a branch_ratio of at most 1/3", "branch_ratio")

    def cost(self, ctx: MixerContext) -> Cost:
        g, hw = branch_channels(ctx.dim, self.branch_ratio), (ctx.height, ctx.width)
        kb = self.band_kernel_size
        return (conv_cost(g, g, self.square_kernel_size, hw, groups=g)
                + conv_cost(g, g, (1, kb), hw, groups=g) + conv_cost(g, g, (kb, 1), hw, groups=g))

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.inception import InceptionDWConv
        return InceptionDWConv(ctx.dim, self.square_kernel_size, self.band_kernel_size, self.branch_ratio)


register_symbol("Inception", "inception_dw", doc="Inception depthwise conv (InceptionNeXt)")
