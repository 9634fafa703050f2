"""Inverted-residual conv blocks as token mixers (MobileNetV2 / EfficientNetV2, as EfficientViT and LowFormer
build them): ``FMB`` (fused MBConv) and ``MBConv``.

* fused MBConv (``fused_mbconv``): k x k conv C -> E (bias optional) + BatchNorm + act, then 1x1 conv E -> C
  (no bias) + BatchNorm; keys ``spatial_conv.{conv,norm}``, ``point_conv.{conv,norm}``.
* MBConv (``mbconv``): 1x1 conv C -> E (bias optional) + act, k x k depthwise conv (bias optional) + act, 1x1
  conv E -> C (no bias) + BatchNorm; keys ``inverted_conv.conv``, ``depth_conv.conv``, ``point_conv.{conv,norm}``
  (no norm after the first two convs, as LowFormer's MBConv).

E = round(C · expand_ratio) (Python's round, as the official code). In the ``lowformer`` macro either forms a
block by itself with one residual (``x + mixer(x)``, LowFormer's first stages); in other macros it is the token
mixer of the macro's block, like any other.

The cost helpers below are shared with the lowformer macro, whose downsampling is a stride-2 fused MBConv and
whose attention blocks end in a fused MBConv or MBConv "local" branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from ..cost_types import Cost, conv_cost, conv_out
from ..parts import NormConfig
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn

Act = Literal["hardswish", "relu", "relu6", "gelu", "silu"]
BN = NormConfig(type="batchnorm")


def expanded(dim: int, ratio: float) -> int:
    """The hidden width of an inverted residual: round(C · ratio), as EfficientViT / LowFormer compute it."""
    return round(dim * ratio)


def fused_mbconv_cost(cin: int, cout: int, hidden: int, kernel: int, stride: int, in_hw: tuple[int, int],
                      bias: bool, norm: bool = True) -> Cost:
    """k x k conv (stride, 'same' padding) cin -> hidden + norm, 1x1 conv hidden -> cout (no bias) + norm."""
    hw = (conv_out(in_hw[0], kernel, stride, kernel // 2), conv_out(in_hw[1], kernel, stride, kernel // 2))
    norms = Cost(2 * (hidden + cout)) if norm else Cost()
    return conv_cost(cin, hidden, kernel, hw, bias=bias) + conv_cost(hidden, cout, 1, hw, bias=False) + norms


def mbconv_cost(cin: int, cout: int, hidden: int, kernel: int, stride: int, in_hw: tuple[int, int],
                bias: bool) -> Cost:
    """1x1 conv cin -> hidden, k x k depthwise (stride), 1x1 conv hidden -> cout (no bias) + BatchNorm."""
    hw = (conv_out(in_hw[0], kernel, stride, kernel // 2), conv_out(in_hw[1], kernel, stride, kernel // 2))
    return (conv_cost(cin, hidden, 1, in_hw, bias=bias) + conv_cost(hidden, hidden, kernel, hw, groups=hidden,
                                                                    bias=bias)
            + conv_cost(hidden, cout, 1, hw, bias=False) + Cost(2 * cout))


class _InvertedResidual(MixerConfig):
    expand_ratio: PositiveFloat = Field(default=4.0, description="hidden width / width: E = round(C·ratio)")
    kernel_size: PositiveInt = Field(default=3, description="the spatial conv's kernel (odd)")
    bias: bool = Field(default=False, description="bias on the convs before the last (LowFormer: on in the "
                                                  "attention blocks' local branch, off elsewhere)")
    act: Act = "hardswish"
    # the two forms differ only in these (set by each): the cost helper, shared with the lowformer macro, and the
    # module's name in composer.nn.mixers.mbconv; cost and build below are the same call for both
    cost_of: ClassVar[Callable[..., Cost]]
    module_name: ClassVar[str]

    def cost(self, ctx: MixerContext) -> Cost:
        hidden = expanded(ctx.dim, self.expand_ratio)
        return self.cost_of(ctx.dim, ctx.dim, hidden, self.kernel_size, 1, (ctx.height, ctx.width), self.bias)

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers import mbconv

        module = getattr(mbconv, self.module_name)
        return module(ctx.dim, ctx.dim, expanded(ctx.dim, self.expand_ratio), self.kernel_size, 1, self.bias,
                      self.act, BN)

    def check(self, ctx: MixerContext) -> None:
        if self.kernel_size % 2 == 0:
            raise MixerCheckError(f"kernel_size must be odd so that 'same' padding keeps the feature map, got "
                                  f"{self.kernel_size}", "kernel_size")
        if expanded(ctx.dim, self.expand_ratio) < 1:
            raise MixerCheckError(f"expand_ratio {self.expand_ratio} leaves round({ctx.dim}·{self.expand_ratio}) = "
                                  f"0 hidden channels; use a ratio of at least {0.5 / ctx.dim:.3g}", "expand_ratio")


@register_mixer
class FusedMBConvConfig(_InvertedResidual):
    type: Literal["fused_mbconv"] = "fused_mbconv"
    summary = "fused MBConv: k x k conv to E channels + BN + act, 1x1 conv back + BN (EfficientNetV2, LowFormer)"
    paper = "EfficientNetV2: Smaller Models and Faster Training (Tan & Le, ICML 2021)"
    cost_formula = "params C·E·k² + E·C (+ E bias) + 2(E + C); MACs N·(C·E·k² + E·C), E = round(C·ratio)"
    cost_of = staticmethod(fused_mbconv_cost)
    module_name = "FusedMBConv"


@register_mixer
class MBConvConfig(_InvertedResidual):
    type: Literal["mbconv"] = "mbconv"
    summary = "MBConv: 1x1 conv to E channels + act, k x k depthwise + act, 1x1 conv back + BN (MobileNetV2)"
    paper = "MobileNetV2: Inverted Residuals and Linear Bottlenecks (Sandler et al., CVPR 2018)"
    cost_formula = "params 2·C·E + E·k² (+ 2E bias) + 2C; MACs N·(2·C·E + E·k²), E = round(C·ratio)"
    cost_of = staticmethod(mbconv_cost)
    module_name = "MBConv"


register_symbol("FMB", "fused_mbconv", doc="fused MBConv (EfficientNetV2; LowFormer's conv stages)")
register_symbol("MBConv", "mbconv", doc="MBConv inverted residual (MobileNetV2; LowFormer's wide local branch)")
