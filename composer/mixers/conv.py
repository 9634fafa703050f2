"""Convolutional token mixers: MetaFormer's SepConv (``Conv``) and the plain depthwise conv with
projections of "Demystify Transformers & Convolutions" (``DW``, U-DWConv)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import PositiveFloat, PositiveInt

from ..cost_types import ACTIVATION_PARAMS, Cost, conv_cost, linear_cost
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn

Activation = Literal["star_relu", "gelu", "relu", "silu", "squared_relu", "identity"]


def _check_odd(kernel_size: int) -> None:
    if kernel_size % 2 == 0:
        raise MixerCheckError(f"kernel_size must be odd so that 'same' padding keeps the feature map, "
                              f"got {kernel_size}", "kernel_size")


@register_mixer
class SepConvConfig(MixerConfig):
    type: Literal["sep_conv"] = "sep_conv"
    kernel_size: PositiveInt = 7
    expansion_ratio: PositiveFloat = 2.0
    act1: Activation = "star_relu"
    act2: Activation = "identity"
    bias: bool = False
    summary = "inverted separable conv: 1x1 (x ratio) - act - k x k depthwise - 1x1 (ConvFormer)"
    paper = "MetaFormer Baselines for Vision (Yu et al. 2022)"
    cost_formula = ("M = int(expansion_ratio·C); params 2·C·M + M·k² (+ 2M + C with bias) + 2 per star_relu "
                    "(scale, bias); MACs N·(2·C·M + M·k²)")

    def check(self, ctx: MixerContext) -> None:
        _check_odd(self.kernel_size)
        if int(self.expansion_ratio * ctx.dim) < 1:
            raise MixerCheckError(f"expansion_ratio {self.expansion_ratio} leaves int({ctx.dim}·"
                                  f"{self.expansion_ratio}) = 0 hidden channels; it must give at least 1",
                                  "expansion_ratio")

    def cost(self, ctx: MixerContext) -> Cost:
        mid, hw, n = int(self.expansion_ratio * ctx.dim), (ctx.height, ctx.width), ctx.tokens
        return (linear_cost(ctx.dim, mid, n, self.bias)
                + Cost(ACTIVATION_PARAMS.get(self.act1, 0) + ACTIVATION_PARAMS.get(self.act2, 0))
                + conv_cost(mid, mid, self.kernel_size, hw, groups=mid, bias=self.bias)
                + linear_cost(mid, ctx.dim, n, self.bias))

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.conv import SepConv
        mid = int(self.expansion_ratio * ctx.dim)
        return SepConv(ctx.dim, mid, self.kernel_size, self.act1, self.act2, self.bias)


@register_mixer
class DWConvConfig(MixerConfig):
    type: Literal["dw_conv"] = "dw_conv"
    kernel_size: PositiveInt = 7
    bias: bool = True
    summary = "1x1 - k x k depthwise - 1x1, no activation (U-DWConv)"
    paper = "Demystify Transformers & Convolutions in Modern Image Deep Networks (Hu et al. 2025)"
    cost_formula = "params 2·C² + C·k² (+ 3C with bias); MACs N·(2·C² + C·k²)"

    def check(self, ctx: MixerContext) -> None:
        _check_odd(self.kernel_size)

    def cost(self, ctx: MixerContext) -> Cost:
        d, n = ctx.dim, ctx.tokens
        return (linear_cost(d, d, n, self.bias) + conv_cost(d, d, self.kernel_size, (ctx.height, ctx.width),
                                                            groups=d, bias=self.bias)
                + linear_cost(d, d, n, self.bias))

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.conv import DWConv
        return DWConv(ctx.dim, self.kernel_size, self.bias)


register_symbol("Conv", "sep_conv", doc="separable conv (ConvFormer)")
register_symbol("DW", "dw_conv", doc="depthwise conv with 1x1 projections (U-DWConv)")
