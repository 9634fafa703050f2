"""MSA-Conv (TiC: Exploring Vision Transformer in Convolution, arXiv 2310.04134) as a composer token mixer.

Importing this module registers the mixer type ``msa_conv`` and the layout symbol ``MSA``; composer imports it
through the ``composer.mixers`` entry point of this distribution. Like composer's own configs, this module
imports no torch: validating, planning and estimating a spec stay cheap; ``build`` imports the module.

The operator, as the official ``MSA_Conv_2d`` (github.com/zs670980918/MSA-Conv, ``core/op``) computes it on a
(B, C, H, W) map: ``q, k, v`` from one 1x1 conv (C -> 3C, with bias); for every pixel, the dot products of its
query with the keys of its k x k window (dilation d, zero padding: a window position in the padding scores 0
and still takes part in the softmax), scaled by C^-1/2 and softmaxed over the k² positions; the softmax-weighted
sum of the window's values; plus the input (a residual inside the module); then a k x k convolution C -> C
without bias and a ReLU.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from composer.cost_types import Cost, conv_cost, linear_cost
from composer.mixers import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol


@register_mixer
class MSAConvConfig(MixerConfig):
    """Self-attention inside a convolution window (TiC's MSA-Conv)."""

    type: Literal["msa_conv"] = "msa_conv"
    kernel_size: PositiveInt = Field(default=3, description="k: the attention window and the output conv (odd)")
    dilation: PositiveInt = Field(default=1, description="d: the window's dilation (the output conv is not dilated)")
    attn_drop: float = Field(default=0.1, ge=0.0, le=1.0, description="dropout on the window's attention weights "
                                                                      "(0.1 in the official module)")
    layout = "channels_first"
    summary = "self-attention of each pixel over its k x k (dilated) window, + input, k x k conv, ReLU (TiC)"
    paper = "TiC: Exploring Vision Transformer in Convolution (arXiv 2310.04134, 2023)"
    cost_formula = "params 3C² + 3C + k²C²; MACs N·(3C² + 2k²C + k²C²)"

    def check(self, ctx: MixerContext) -> None:
        if self.kernel_size % 2 == 0:
            raise MixerCheckError(f"kernel_size {self.kernel_size} is even: the window and the output conv need an "
                                  "odd k to keep the map's size", "kernel_size")

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, window = ctx.dim, ctx.tokens, self.kernel_size ** 2
        qkv = linear_cost(c, 3 * c, n, bias=True)                 # the 1x1 conv C -> 3C
        attention = Cost(0, 2 * n * window * c)                    # q·k over the window, and attn·v
        out = conv_cost(c, c, self.kernel_size, (ctx.height, ctx.width), bias=False)
        return qkv + attention + out

    def build(self, ctx: MixerContext):
        from .module import MSAConv

        return MSAConv(ctx.dim, self.kernel_size, self.dilation, self.attn_drop)


register_symbol("MSA", "msa_conv", doc="TiC's MSA-Conv, 3x3 window")
