"""Convolutional token mixers: MetaFormer's SepConv (``Conv``) and the plain depthwise conv with
projections of "Demystify Transformers & Convolutions" (``DW``, U-DWConv)."""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveFloat, PositiveInt
from torch import nn

from ..cost_types import Cost, conv_cost, linear_cost
from ..layers import ACTIVATION_PARAMS, make_act
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

Activation = Literal["star_relu", "gelu", "relu", "silu", "squared_relu", "identity"]


def _check_odd(kernel_size: int) -> None:
    if kernel_size % 2 == 0:
        raise MixerCheckError(f"kernel_size must be odd so that 'same' padding keeps the feature map, "
                              f"got {kernel_size}", "kernel_size")


class SepConv(nn.Module):
    """Inverted separable convolution (MobileNetV2 style): 1x1 up, act, k x k depthwise, act, 1x1 down."""

    def __init__(self, dim: int, mid: int, kernel_size: int, act1: str, act2: str, bias: bool):
        super().__init__()
        self.pwconv1 = nn.Conv2d(dim, mid, 1, bias=bias)
        self.act1 = make_act(act1)
        self.dwconv = nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, groups=mid, bias=bias)
        self.act2 = make_act(act2)
        self.pwconv2 = nn.Conv2d(mid, dim, 1, bias=bias)

    def forward(self, x):
        return self.pwconv2(self.act2(self.dwconv(self.act1(self.pwconv1(x)))))


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

    def cost(self, ctx: MixerContext) -> Cost:
        mid, hw, n = int(self.expansion_ratio * ctx.dim), (ctx.height, ctx.width), ctx.tokens
        return (linear_cost(ctx.dim, mid, n, self.bias)
                + Cost(ACTIVATION_PARAMS.get(self.act1, 0) + ACTIVATION_PARAMS.get(self.act2, 0))
                + conv_cost(mid, mid, self.kernel_size, hw, groups=mid, bias=self.bias)
                + linear_cost(mid, ctx.dim, n, self.bias))

    def build(self, ctx: MixerContext) -> nn.Module:
        mid = int(self.expansion_ratio * ctx.dim)
        return SepConv(ctx.dim, mid, self.kernel_size, self.act1, self.act2, self.bias)


class DWConv(nn.Module):
    """1x1 projection, k x k depthwise conv, 1x1 projection; no activation (U-DWConv's spatial mixer)."""

    def __init__(self, dim: int, kernel_size: int, bias: bool):
        super().__init__()
        self.pwconv1 = nn.Conv2d(dim, dim, 1, bias=bias)
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias)
        self.pwconv2 = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x):
        return self.pwconv2(self.dwconv(self.pwconv1(x)))


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
        return DWConv(ctx.dim, self.kernel_size, self.bias)


register_symbol("Conv", "sep_conv", doc="separable conv (ConvFormer)")
register_symbol("DW", "dw_conv", doc="depthwise conv with 1x1 projections (U-DWConv)")
