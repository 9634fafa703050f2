"""Hyena long-convolution token mixers of HyenaPixel (Spravil et al., ECAI 2024; arXiv 2402.19305):

* ``Hpx`` (``hyena_pixel``): the 2-D HyenaPixel operator. 1x1 conv to 3C, 5x5 depthwise, split q, k, v;
  ``v * (h * (q k) + D (q k))`` with a K x K implicit filter ``h`` (sin/cos 2-D embedding -> 1x1 conv FFN
  with Sin activations -> exponential decay window around the centre), then an output projection.
* ``Hb`` (``hyena_bidirectional``): the 1-D Hyena operator on the raster-flattened map, non-causal: a
  centred filter of length 2N-1 over N = H*W tokens (tent-shaped decay), short depthwise conv of 3.
  Chunk roles differ from Hpx: chunks 3 and 2 are multiplied before the long conv, chunk 1 gates after.
* ``Hyena`` (``hyena``): the same with the original causal filter (length N, decay growing with the lag
  as in HazyResearch/safari).

The long convolution is computed by zero-padded FFTs and is a true (flipped-kernel) convolution; for the
non-causal filters the centre tap meets the same position. Filter sizes default to ``auto``: global at the
compiled input size (2F-1 for Hpx, 2N-1 for Hb, N for Hyena; F the larger side of the map, N = H*W).
State-dict keys equal the official code's. Cost convention (docs/flop-conventions.md): the filter FFN is
counted once per forward (it does not depend on the batch), FFTs go to ``fft_macs``; element-wise products,
sin, exp and norms are not counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import PositiveInt

from ..cost_types import Cost, conv_cost, fft_cost, linear_cost
from ..facts import fft_conv1d_size
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn

FilterSize = PositiveInt | Literal["auto"] | None


# ----------------------------------------------------------------------------------------------------------
# FFT long convolutions


# ----------------------------------------------------------------------------------------------------------
# Hpx: the 2-D HyenaPixel operator


def _side(ctx: MixerContext) -> int:
    return max(ctx.height, ctx.width)


@register_mixer
class HyenaPixelConfig(MixerConfig):
    type: Literal["hyena_pixel"] = "hyena_pixel"
    long_kernel_size: FilterSize = "auto"
    """K of the K x K implicit filter; auto: 2F-1 (global) for the F x F map at the compiled input size."""
    filter_emb_dim: PositiveInt = 32
    filter_order: PositiveInt | None = None
    """width of the filter FFN; None: 2 * filter_emb_dim."""
    kernel_size: PositiveInt = 5
    use_layernorm: bool = False
    layout = "channels_last"
    summary = "HyenaPixel: q k gate -> K x K implicit long conv (FFT) + D skip -> v gate -> 1x1 (HpxFormer)"
    paper = "HyenaPixel: Global Image Context with Convolutions (Spravil et al. 2024)"
    cost_formula = ("K = long_kernel_size (auto: 2·max(H, W) - 1), T = K², E = filter_emb_dim, O = filter_order "
                    "(2E), k = kernel_size; params 4C² + 4C (1x1 in to 3C, 1x1 out) + 3C·k² + 3C (short "
                    "depthwise) + E·T + T + 3C + 2O (z, distance map, deltas, shift, D, Sin) + E·O + O² + O·C + "
                    "2O (filter FFN) (+ 2C with use_layernorm); MACs N·(4C² + 3C·k²) + T·(E·O + O² + O·C) (the "
                    "filter FFN once per forward, not per image); fft_macs 3·C·1.25·P·log2 P, P = max(2H, "
                    "K)·max(2W, K) (rfft2 of filter and input, irfft2)")

    def size(self, ctx: MixerContext) -> int:
        return 2 * _side(ctx) - 1 if self.long_kernel_size in (None, "auto") else self.long_kernel_size

    def order(self) -> int:
        return self.filter_order or 2 * self.filter_emb_dim

    def check(self, ctx: MixerContext) -> None:
        if self.filter_emb_dim % 4:
            raise MixerCheckError(f"filter_emb_dim must be a multiple of 4 (2-D sin/cos embedding), got "
                                  f"{self.filter_emb_dim}", "filter_emb_dim")
        if self.size(ctx) % 2 == 0:
            raise MixerCheckError(f"long_kernel_size must be odd (the filter is centred), got {self.size(ctx)}",
                                  "long_kernel_size")
        if self.kernel_size % 2 == 0:
            raise MixerCheckError(f"kernel_size must be odd, got {self.kernel_size}", "kernel_size")

    def fft_size(self, ctx: MixerContext) -> int:
        k = self.size(ctx)
        return max(2 * ctx.height, k) * max(2 * ctx.width, k)

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, k, e, o = ctx.dim, ctx.tokens, self.size(ctx), self.filter_emb_dim, self.order()
        taps = k * k
        filt = (Cost(e * taps + taps + 3 * c + 2 * o)  # z, distance_map, deltas, shift, D, 2 Sin freqs
                + linear_cost(e, o, taps) + linear_cost(o, o, taps) + linear_cost(o, c, taps, bias=False))
        cost = (linear_cost(c, 3 * c, n)
                + conv_cost(3 * c, 3 * c, self.kernel_size, (ctx.height, ctx.width), groups=3 * c)
                + filt + linear_cost(c, c, n) + Cost(2 * c if self.use_layernorm else 0))
        # rfft2 of the filter (C maps) and of the input (C maps), irfft2 of the product (C maps)
        return cost + Cost(fft_macs=3 * fft_cost(self.fft_size(ctx), c))

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.hyena import HyenaPixel
        return HyenaPixel(ctx.dim, self.kernel_size, self.size(ctx), self.filter_emb_dim, self.order(),
                          self.use_layernorm)


# ----------------------------------------------------------------------------------------------------------
# Hb and causal Hyena: the 1-D Hyena operator on the raster-flattened map


class _HyenaConfigBase(MixerConfig):
    fixed_input_size = "its filter indexes the raster sequence of the compiled map"
    filter_size: FilterSize = "auto"
    emb_dim: PositiveInt = 33
    """input width of the filter FFN: 1 time channel + (emb_dim - 1) / 2 cos and as many sin bands."""
    filter_order: PositiveInt = 64
    order: PositiveInt = 2
    use_layernorm: bool = False
    layout = "channels_last"
    causal: ClassVar[bool] = False
    shift: float = 0.0

    def size(self, ctx: MixerContext) -> int:
        raise NotImplementedError

    def check(self, ctx: MixerContext) -> None:
        if self.emb_dim % 2 == 0 or self.emb_dim < 3:
            raise MixerCheckError(f"emb_dim must be odd and >= 3 (time + cos and sin bands), got {self.emb_dim}",
                                  "emb_dim")
        if self.order < 2:
            raise MixerCheckError(f"order must be at least 2, got {self.order}", "order")
        if not self.causal and self.size(ctx) % 2 == 0:
            raise MixerCheckError(f"filter_size must be odd (the filter is centred), got {self.size(ctx)}",
                                  "filter_size")

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, length, e, o, r = ctx.dim, ctx.tokens, self.size(ctx), self.emb_dim, self.filter_order, self.order
        inner, fc = c * (r + 1), c * (r - 1)
        norms = Cost(r * c if self.use_layernorm else 0)
        short = Cost(inner * 3 + inner, inner * 3 * (n + 2 if self.causal else n))  # causal: N+2 outputs, cut
        filt = (Cost(length * e + fc + 3 * o)  # z, D, 3 Sin frequencies
                + linear_cost(e, o, length) + linear_cost(o, o, length) * 2 + linear_cost(o, fc, length, bias=False))
        cost = linear_cost(c, inner, n) + short + filt + norms + linear_cost(c, c, n)
        # per order step: rfft of the filter and of the input, irfft of the product (C sequences each)
        return cost + Cost(fft_macs=3 * (r - 1) * fft_cost(fft_conv1d_size(n), c))

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.hyena import Hyena1D
        return Hyena1D(ctx.dim, self.size(ctx), self.emb_dim, self.filter_order, self.order, self.causal,
                       self.use_layernorm, self.shift, (ctx.height, ctx.width), ctx.input_size)


@register_mixer
class HyenaBidirectionalConfig(_HyenaConfigBase):
    type: Literal["hyena_bidirectional"] = "hyena_bidirectional"
    summary = ("bidirectional 1-D Hyena over the raster sequence: centred implicit filter of length 2N-1, "
               "FFT long conv (HbFormer)")
    paper = "HyenaPixel: Global Image Context with Convolutions (Spravil et al. 2024)"
    cost_formula = ("L = filter_size (auto: 2N - 1), r = order, E = emb_dim, O = filter_order, I = C(r + 1), F = "
                    "C(r - 1); params C·I + I (in proj) + 4I (3-tap short depthwise) + L·E + F + 3O (z, D, Sin) + "
                    "E·O + 2O² + O·F + 3O (filter FFN) + C² + C (out proj) (+ r·C with use_layernorm); MACs "
                    "N·(C·I + 3I + C²) + L·(E·O + 2O² + O·F) (filter FFN once per forward); fft_macs 3(r - "
                    "1)·C·1.25·P·log2 P, P = 2N")

    def size(self, ctx: MixerContext) -> int:
        return 2 * ctx.tokens - 1 if self.filter_size in (None, "auto") else self.filter_size


@register_mixer
class HyenaCausalConfig(_HyenaConfigBase):
    type: Literal["hyena"] = "hyena"
    causal = True
    summary = "causal 1-D Hyena over the raster sequence: implicit filter of length N, FFT long conv"
    paper = "Hyena Hierarchy: Towards Larger Convolutional Language Models (Poli et al. 2023)"
    cost_formula = ("as hyena_bidirectional with L = filter_size (auto: N) and the causal short conv producing N "
                    "+ 2 outputs: MACs N·(C·I + C²) + 3I·(N + 2) + L·(E·O + 2O² + O·F); fft_macs 3(r - "
                    "1)·C·1.25·P·log2 P, P = 2N")

    def size(self, ctx: MixerContext) -> int:
        return ctx.tokens if self.filter_size in (None, "auto") else self.filter_size


register_symbol("Hpx", "hyena_pixel", doc="HyenaPixel 2-D implicit long conv (HpxFormer)")
register_symbol("Hb", "hyena_bidirectional", doc="bidirectional 1-D Hyena over the raster sequence (HbFormer)")
register_symbol("Hyena", "hyena", doc="causal 1-D Hyena over the raster sequence")
