"""GFNet's global filter (Rao et al., "Global Filter Networks for Image Classification", NeurIPS 2021),
symbol ``GF`` (not to be confused with HorNet's global-local filter, ``gnConv`` with ``filter: gf``).

On a channels-last (B, H, W, C) map, computed in float32: X = rfft2(x) over (H, W) with ``ortho`` norm, a
(H, W//2+1, C) spectrum; multiply element-wise by a learned complex filter of the same shape, one per channel
and frequency, stored as real (H, W//2+1, C, 2) ``complex_weight`` (real, imaginary) and drawn from randn·0.02;
y = irfft2(X ⊙ K) back to (H, W), ``ortho``. All channels are filtered; there are no norms and no local branch.
The filter is sized to the stage's feature map at the spec's input size; like the official code, it does not
resize itself to another map (compile the spec at that input size instead).

Note: GFNet's own block has a single residual, ``x + MLP(LN(filter(LN(x))))``; in a two-residual
MetaFormer/HorNet slot, as here, the same operator makes a different network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ..cost_types import Cost, fft_cost
from .base import MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


@register_mixer
class GlobalFilterConfig(MixerConfig):
    fixed_input_size = "its complex filter is sized to the compiled map"
    type: Literal["global_filter"] = "global_filter"
    layout = "channels_last"
    summary = "global filter: rfft2, learned per-channel complex filter sized to the map, irfft2 (GFNet)"
    paper = "Global Filter Networks for Image Classification (Rao et al., NeurIPS 2021)"
    cost_formula = ("params 2·C·H·(W//2+1); MACs 0 (the complex product is element-wise); FFT MACs "
                    "2 · 1.25·N·log2(N)·C for rfft2 + irfft2 over the N = H·W map")

    def cost(self, ctx: MixerContext) -> Cost:
        c, h, w = ctx.dim, ctx.height, ctx.width
        return Cost(params=2 * c * h * (w // 2 + 1), fft_macs=2 * fft_cost(h * w, c))

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.gfnet import GlobalFilter
        return GlobalFilter(ctx.dim, ctx.height, ctx.width)


register_symbol("GF", "global_filter", doc="global filter in the 2-D FFT domain (GFNet)")
