"""HorNet's recursive gated convolution gⁿConv (Rao et al., NeurIPS 2022), symbol ``gnConv``.

gⁿConv of order n on C channels (widths d_k = C / 2^(n-1-k), k = 0..n-1, ascending; S = Σ d_k):
``proj_in`` (1x1, C -> 2C) splits into p (d_0 channels) and the S channels that go through one spatial
filter, scaled by ``s`` (1/3 in every published model) and split into q_0..q_{n-1} of widths d_0..d_{n-1};
then x = p ⊙ q_0 and x = pws[k](x) ⊙ q_{k+1} (1x1 convs d_k -> d_{k+1}); ``proj_out`` (1x1, C -> C).
No activation anywhere: the products are the only non-linearity.

The spatial filter is a k x k depthwise conv with bias (``filter: dw``, HorNet-7x7) or the global-local
filter (``filter: gf``, HorNet-GF): channels-first LN, half the channels through a 3x3 depthwise conv
without bias, the other half through a learned complex filter applied in the 2-D real-FFT domain (in
float32), the halves interleaved channel by channel (local_0, global_0, local_1, ...), then LN. The complex
weight is stored as (S/2, h, w, 2) with (h, w) = (H, W//2 + 1) of the stage's feature map at the spec's
input size (the official 14x8 / 7x4 at 224, 24x13 / 12x7 at 384); another input size bilinearly
resizes it (align_corners=True) on every forward, as the official code does.

State-dict keys equal the official ``gnconv``: ``proj_in``, ``dwconv`` (``dwconv.dw``,
``dwconv.complex_weight``, ``dwconv.pre_norm``, ``dwconv.post_norm`` for GF), ``pws.k``, ``proj_out``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from ..cost_types import Cost, conv_cost, fft_cost, linear_cost
from ..facts import GF_LOCAL_KERNEL, gnconv_dims
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


@register_mixer
class GnConvConfig(MixerConfig):
    type: Literal["gn_conv"] = "gn_conv"
    order: int = Field(default=5, ge=1, le=5, description="gating order n (HorNet: 2, 3, 4, 5 by stage)")
    kernel_size: PositiveInt = Field(default=7, description="depthwise kernel of filter dw (odd)")
    filter: Literal["dw", "gf"] = Field(default="dw", description="dw: k x k depthwise conv; gf: global-local "
                                                                   "filter (3x3 depthwise + FFT global filter)")
    s: float = Field(default=1 / 3, description="scale of the filter output (1/3 in every HorNet)")
    summary = "recursive gated conv: 1x1 in, depthwise (or global-local FFT) filter, n-order gating, 1x1 out"
    paper = "HorNet: Efficient High-Order Spatial Interactions with Recursive Gated Convolutions (Rao et al. 2022)"
    cost_formula = ("n = order, d_k = C / 2^(n-1-k) (k < n), S = Σ d_k; params 3C² + 3C (1x1 in to 2C, 1x1 out) + "
                    "Σ_{k<n-1} (d_k·d_{k+1} + d_{k+1}) (gating 1x1s) + filter; MACs N·(3C² + Σ_{k<n-1} "
                    "d_k·d_{k+1}) + filter. filter dw: params S·k² + S, MACs N·S·k². filter gf: params 4S (two "
                    "LayerNorms) + 9·S/2 (3x3 depthwise, no bias) + 2·(S/2)·H·(W//2 + 1) (complex weight), MACs "
                    "9·N·S/2, fft_macs 2·(S/2)·1.25·N·log2 N (rfft2 + irfft2; the complex product is element- "
                    "wise)")

    def check(self, ctx: MixerContext) -> None:
        step = 2 ** (self.order - 1)
        if ctx.dim % step:
            raise MixerCheckError(f"order {self.order} gates over widths {ctx.dim}/{step}, ..., {ctx.dim}/2, "
                                  f"{ctx.dim}, so the width must be divisible by 2^(order-1) = {step}; use a "
                                  f"lower order or a width divisible by {step}", "order")
        if self.filter == "dw" and self.kernel_size % 2 == 0:
            raise MixerCheckError(f"kernel_size must be odd so that 'same' padding keeps the feature map, "
                                  f"got {self.kernel_size}", "kernel_size")
        if self.filter == "gf" and sum(gnconv_dims(ctx.dim, self.order)) % 2:
            raise MixerCheckError(f"filter gf halves the {sum(gnconv_dims(ctx.dim, self.order))} filtered "
                                  f"channels, which needs the width divisible by 2^order = {2 ** self.order}",
                                  "filter")

    def filter_size(self, ctx: MixerContext) -> tuple[int, int]:
        """(h, w) of GF's complex weight: the rfft2 spectrum of the stage's feature map."""
        return ctx.height, ctx.width // 2 + 1

    def cost(self, ctx: MixerContext) -> Cost:
        c, hw, n = ctx.dim, (ctx.height, ctx.width), ctx.tokens
        dims = gnconv_dims(c, self.order)
        total = sum(dims)
        cost = linear_cost(c, 2 * c, n) + linear_cost(c, c, n)
        cost += sum((linear_cost(dims[k], dims[k + 1], n) for k in range(self.order - 1)), Cost())
        if self.filter == "dw":
            return cost + conv_cost(total, total, self.kernel_size, hw, groups=total)
        half = total // 2
        fh, fw = self.filter_size(ctx)
        fft = 2 * fft_cost(n, half)  # rfft2 and irfft2 over the H x W map, on half the channels
        return (cost + Cost(4 * total)  # pre_norm and post_norm
                + conv_cost(half, half, GF_LOCAL_KERNEL, hw, groups=half, bias=False)
                + Cost(half * fh * fw * 2, 0, fft))

    def build(self, ctx: MixerContext) -> nn.Module:
        from torch import nn

        from ..nn.mixers.hornet import GlobalLocalFilter, GnConv
        total = sum(gnconv_dims(ctx.dim, self.order))
        if self.filter == "dw":
            spatial = nn.Conv2d(total, total, self.kernel_size, padding=self.kernel_size // 2, groups=total)
        else:
            spatial = GlobalLocalFilter(total, *self.filter_size(ctx))
        return GnConv(ctx.dim, self.order, spatial, self.s)

    def init_weights(self, module: nn.Module) -> None:
        # the generic init leaves the complex filter alone; the official one draws it from trunc_normal(0.02)
        from ..nn.mixers.hornet import GlobalLocalFilter
        if isinstance(module.dwconv, GlobalLocalFilter):
            module.dwconv.reset_filter()


register_symbol("gnConv", "gn_conv", doc="recursive gated conv gⁿConv (HorNet)")
