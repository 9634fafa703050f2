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

import math
from typing import ClassVar, Literal

import torch
from pydantic import PositiveInt
from torch import nn

from ..cost_types import Cost, conv_cost, fft_cost, linear_cost
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

FilterSize = PositiveInt | Literal["auto"] | None

_FAST_DECAY, _SLOW_DECAY, _TARGET = 0.3, 1.5, 1e-2


def _decay_rates(channels: int) -> torch.Tensor:
    """Per-channel decay rates from ln(target)/slow (channel 0) to ln(target)/fast (last channel)."""
    return torch.linspace(math.log(_TARGET) / _SLOW_DECAY, math.log(_TARGET) / _FAST_DECAY, channels)


# ----------------------------------------------------------------------------------------------------------
# FFT long convolutions


def fft_conv2d(u: torch.Tensor, k: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Depthwise centred true convolution of ``u`` (B, C, H, W) with ``k`` (1, C, Kh, Kw) plus ``u * d``,
    via FFTs zero-padded to (max(2H, Kh), max(2W, Kw)) in float32. Equals
    ``conv2d(u, flip(k), padding=K // 2, groups=C) + u * d`` for odd kernels."""
    dtype = u.dtype
    u, k, d = u.float(), k.float(), d.float()
    h, w = u.shape[-2:]
    kh, kw = k.shape[-2:]
    size = (max(2 * h, kh), max(2 * w, kw))
    spectrum = torch.fft.rfft2(u, s=size) * torch.fft.rfft2(k, s=size)
    y = torch.fft.irfft2(spectrum, s=size)[..., kh // 2:kh // 2 + h, kw // 2:kw // 2 + w]
    return (y + u * d).to(dtype)


def fft_conv1d_size(seq_len: int) -> int:
    return 2 * seq_len


def fft_conv1d(u: torch.Tensor, k: torch.Tensor, d: torch.Tensor, causal: bool) -> torch.Tensor:
    """Depthwise long convolution of ``u`` (B, C, N) with ``k`` (C, L) plus ``u * d[:, None]`` via FFTs of
    size 2N. Causal: ``y[t] = sum_j k[j] u[t - j]``. Non-causal (L odd): centred, ``y[t] = sum_j k[j]
    u[t - j + L // 2]``. Taps that cannot reach any output are dropped first, so any L is exact."""
    dtype = u.dtype
    n = u.shape[-1]
    length = k.shape[-1]
    if causal:
        k = k[..., :n]
        offset = 0
    else:
        if length > 2 * n - 1:  # keep the centred 2N-1 taps: the others never meet the map
            cut = length // 2 - (n - 1)
            k = k[..., cut:cut + 2 * n - 1]
        offset = k.shape[-1] // 2
    size = fft_conv1d_size(n)
    spectrum = torch.fft.rfft(u.to(k.dtype), n=size) * torch.fft.rfft(k, n=size)
    y = torch.fft.irfft(spectrum, n=size)[..., offset:offset + n]
    return (y + u * d.unsqueeze(-1)).to(dtype)


# ----------------------------------------------------------------------------------------------------------
# Hpx: the 2-D HyenaPixel operator


class Sin2D(nn.Module):
    """sin(freq * x) with a learnable per-channel frequency of shape (1, C, 1, 1)."""

    def __init__(self, dim: int, w: float = 1.0):
        super().__init__()
        self.freq = nn.Parameter(torch.full((1, dim, 1, 1), float(w)))

    def forward(self, x):
        return torch.sin(self.freq * x)


def sincos_embedding_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """(dim, H, W): the first dim/2 channels encode the column index (even sin, odd cos), the last dim/2 the
    row index; frequencies 10000^(-2i/(dim/2)); raw indices from 0 in the corner."""
    half = dim // 2
    freqs = torch.exp(torch.arange(0.0, half, 2) * (-math.log(10000.0) / half))
    cols = torch.arange(0.0, width)[:, None] * freqs  # (W, dim/4)
    rows = torch.arange(0.0, height)[:, None] * freqs  # (H, dim/4)
    pe = torch.zeros(dim, height, width)
    pe[0:half:2] = torch.sin(cols).T[:, None, :].expand(-1, height, -1)
    pe[1:half:2] = torch.cos(cols).T[:, None, :].expand(-1, height, -1)
    pe[half::2] = torch.sin(rows).T[:, :, None].expand(-1, -1, width)
    pe[half + 1::2] = torch.cos(rows).T[:, :, None].expand(-1, -1, width)
    return pe


def centre_distance(size: int) -> torch.Tensor:
    """(size, size): Euclidean distance of each tap (i + 0.5, j + 0.5) from the point (size/2, size/2)."""
    pos = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
    return torch.sqrt(pos[:, None] ** 2 + pos[None, :] ** 2)


class Hyena2DConv(nn.Module):
    """The implicit K x K filter and its FFT convolution (keys z, distance_map, deltas, shift, bias,
    implicit_filter.*)."""

    def __init__(self, dim: int, kernel_size: int, emb_dim: int, order: int):
        super().__init__()
        self.z = nn.Parameter(sincos_embedding_2d(emb_dim, kernel_size, kernel_size).unsqueeze(0))
        self.distance_map = nn.Parameter(centre_distance(kernel_size)[None, None], requires_grad=False)
        self.deltas = nn.Parameter(_decay_rates(dim)[None, :, None, None] / kernel_size)
        self.shift = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.bias = nn.Parameter(torch.randn(dim)[None, :, None, None])
        self.implicit_filter = nn.Sequential(
            nn.Conv2d(emb_dim, order, 1), Sin2D(order),
            nn.Conv2d(order, order, 1), Sin2D(order),
            nn.Conv2d(order, dim, 1, bias=False),
        )

    def filter(self) -> torch.Tensor:
        h = self.implicit_filter(self.z)
        return h * (torch.exp(-self.distance_map * self.deltas.abs()) + self.shift)

    def forward(self, x):
        return fft_conv2d(x, self.filter(), self.bias)


class HyenaPixel(nn.Module):
    """Hpx on a (B, H, W, C) map (keys as the official ``HyenaPixelOperator``)."""

    def __init__(self, dim: int, kernel_size: int, long_kernel_size: int, emb_dim: int, order: int,
                 use_layernorm: bool):
        super().__init__()
        self.dim, self.use_layernorm = dim, use_layernorm
        self.pointwise_conv = nn.Conv2d(dim, 3 * dim, 1)
        self.depthwise_conv = nn.Conv2d(3 * dim, 3 * dim, kernel_size, padding=kernel_size // 2, groups=3 * dim)
        self.long_conv = Hyena2DConv(dim, long_kernel_size, emb_dim, order)
        if use_layernorm:
            self.qk_norm = nn.LayerNorm(dim, eps=1e-5, bias=False)
            self.out_norm = nn.LayerNorm(dim, eps=1e-5, bias=False)
            self.out_proj = nn.Linear(dim, dim)
        else:
            self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        x = self.depthwise_conv(self.pointwise_conv(x.permute(0, 3, 1, 2)))
        q, k, v = x.split(self.dim, dim=1)
        u = q * k
        if self.use_layernorm:
            u = self.qk_norm(u.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = v * self.long_conv(u)
        if self.use_layernorm:
            return self.out_proj(self.out_norm(y.permute(0, 2, 3, 1)))
        return self.out_proj(y).permute(0, 2, 3, 1)


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
        return HyenaPixel(ctx.dim, self.kernel_size, self.size(ctx), self.filter_emb_dim, self.order(),
                          self.use_layernorm)


# ----------------------------------------------------------------------------------------------------------
# Hb and causal Hyena: the 1-D Hyena operator on the raster-flattened map


class Sin(nn.Module):
    """sin(freq * x) with a learnable frequency of shape (1, C)."""

    def __init__(self, dim: int, w: float = 1.0):
        super().__init__()
        self.freq = nn.Parameter(torch.full((1, dim), float(w)))

    def forward(self, x):
        return torch.sin(self.freq * x)


def time_coordinate(length: int, causal: bool) -> torch.Tensor:
    """(length,): causal ramp 0..1, or (odd length) a tent 0..1..0 peaking at the centre tap."""
    if causal:
        return torch.linspace(0, 1, length)
    ramp = torch.linspace(0, 1, length // 2 + 1)
    return torch.cat([ramp[:-1], ramp.flip(0)])


class PositionalEmbedding(nn.Module):
    """z (1, L, emb_dim) = [t, cos(2 pi f_b n / L), -sin(2 pi f_b n / L)] (trainable) and the decay
    coordinate t (buffer): 1 - tent for the non-causal filter, the ramp t for the causal one."""

    def __init__(self, emb_dim: int, length: int, causal: bool):
        super().__init__()
        t = time_coordinate(length, causal)[None, :, None]
        bands = (emb_dim - 1) // 2
        angle = 2 * math.pi * torch.linspace(0, length - 1, length)[None, :, None] / length
        f = torch.linspace(1e-4, bands - 1, bands)[None, None]
        self.z = nn.Parameter(torch.cat([t, torch.cos(f * angle), -torch.sin(f * angle)], dim=-1))
        self.register_buffer("t", t if causal else 1 - t)


class ExponentialModulation(nn.Module):
    """h * (exp(-t |deltas|) + shift) with fixed deltas (buffer) and a constant shift."""

    def __init__(self, channels: int, shift: float):
        super().__init__()
        self.shift = shift
        self.register_buffer("deltas", _decay_rates(channels)[None, None])

    def forward(self, t, h):
        return h * (torch.exp(-t * self.deltas.abs()) + self.shift)


class HyenaFilter(nn.Module):
    """Implicit filter of length L for ``channels`` channels (keys bias, pos_emb.z, implicit_filter.*)."""

    def __init__(self, channels: int, emb_dim: int, order: int, length: int, causal: bool, shift: float,
                 num_inner_mlps: int = 2):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(channels))
        self.pos_emb = PositionalEmbedding(emb_dim, length, causal)
        layers = [nn.Linear(emb_dim, order), Sin(order)]
        for _ in range(num_inner_mlps):
            layers += [nn.Linear(order, order), Sin(order)]
        layers.append(nn.Linear(order, channels, bias=False))
        self.implicit_filter = nn.Sequential(*layers)
        self.modulation = ExponentialModulation(channels, shift)

    def filter(self) -> torch.Tensor:
        """(L, channels)"""
        return self.modulation(self.pos_emb.t, self.implicit_filter(self.pos_emb.z))[0]


class Hyena1D(nn.Module):
    """Hyena of order ``order`` over the raster sequence of a (B, H, W, C) map (keys as the official
    ``HyenaOperator``: in_proj, short_filter, filter_fn.*, qk_norm.i, out_norm, out_proj)."""

    def __init__(self, dim: int, filter_size: int, emb_dim: int, filter_order: int, order: int, causal: bool,
                 use_layernorm: bool, shift: float, compiled_hw: tuple[int, int] | None = None,
                 input_size: int | None = None):
        super().__init__()
        self.dim, self.order, self.causal, self.use_layernorm = dim, order, causal, use_layernorm
        self.compiled_hw, self.input_size = compiled_hw, input_size
        inner = dim * (order + 1)
        self.in_proj = nn.Linear(dim, inner)
        if use_layernorm:
            self.qk_norm = nn.ModuleList(nn.LayerNorm(dim, eps=1e-5, bias=False) for _ in range(order - 1))
            self.out_norm = nn.LayerNorm(dim, eps=1e-5, bias=False)
        self.out_proj = nn.Linear(dim, dim)
        self.short_filter = nn.Conv1d(inner, inner, 3, padding=2 if causal else 1, groups=inner)
        self.filter_fn = HyenaFilter(dim * (order - 1), emb_dim, filter_order, filter_size, causal, shift)

    def check_input(self, h: int, w: int) -> None:
        """The filter indexes the raster sequence of the compiled map: a smaller map would meet taps trained for
        other offsets (the official code then silently computes something else), so refuse it."""
        if self.compiled_hw is not None and h * w < self.compiled_hw[0] * self.compiled_hw[1]:
            ch, cw = self.compiled_hw
            at = f" (input_size {self.input_size})" if self.input_size else ""
            raise ValueError(
                f"{'causal Hyena' if self.causal else 'Hb'} was compiled for a {ch}x{cw} map{at} but got {h}x{w}; "
                "its filter indexes the raster sequence of the compiled map, so a smaller input would give wrong "
                "results: compile the spec at this input_size (auto filters re-size; "
                "composer.resolution.resize_hyena_state_dict converts weights)")

    def forward(self, x):
        b, h, w, c = x.shape
        n = h * w
        self.check_input(h, w)
        u = self.in_proj(x.reshape(b, n, c)).transpose(1, 2)
        u = self.short_filter(u)[..., :n]
        *gates, v = u.split(self.dim, dim=1)
        k = self.filter_fn.filter().T.reshape(self.order - 1, self.dim, -1)
        d = self.filter_fn.bias.reshape(self.order - 1, self.dim)
        for i, gate in enumerate(reversed(gates[1:])):
            v = v * gate
            if self.use_layernorm:
                v = self.qk_norm[i](v.transpose(1, 2)).transpose(1, 2)
            v = fft_conv1d(v, k[i], d[i], self.causal)
        y = (v * gates[0]).transpose(1, 2)
        if self.use_layernorm:
            y = self.out_norm(y)
        return self.out_proj(y).reshape(b, h, w, c)


class _HyenaConfigBase(MixerConfig):
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
