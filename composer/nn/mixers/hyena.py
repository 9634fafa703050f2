"""The torch modules of composer.mixers.hyena (configs and costs live there)."""

import math

import torch
from timm.layers import register_notrace_module
from torch import nn

from ...facts import fft_conv1d_size

_FAST_DECAY, _SLOW_DECAY, _TARGET = 0.3, 1.5, 1e-2  # the filters' decay window (official defaults)


def _decay_rates(channels: int) -> torch.Tensor:
    """Per-channel decay rates from ln(target)/slow (channel 0) to ln(target)/fast (last channel)."""
    return torch.linspace(math.log(_TARGET) / _SLOW_DECAY, math.log(_TARGET) / _FAST_DECAY, channels)


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


@register_notrace_module  # FX: the FFT sizes follow the map's shape, so the operator is one leaf of the graph
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise_conv(self.pointwise_conv(x.permute(0, 3, 1, 2)))
        q, k, v = x.split(self.dim, dim=1)
        u = q * k
        if hasattr(self, "qk_norm"):  # use_layernorm; hasattr is static under TorchScript
            u = self.qk_norm(u.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = v * self.long_conv(u)
        if hasattr(self, "out_norm"):
            return self.out_proj(self.out_norm(y.permute(0, 2, 3, 1)))
        return self.out_proj(y).permute(0, 2, 3, 1)


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


@register_notrace_module  # FX: see HyenaPixel
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        n = h * w
        if not torch.jit.is_scripting():
            self.check_input(h, w)
        u = self.in_proj(x.reshape(b, n, c)).transpose(1, 2)
        u = self.short_filter(u)[:, :, :n]
        chunks = u.split(self.dim, dim=1)  # gates 0 .. order-1, then v
        v = chunks[self.order]
        k = self.filter_fn.filter().T.reshape(self.order - 1, self.dim, -1)
        d = self.filter_fn.bias.reshape(self.order - 1, self.dim)
        for i in range(self.order - 1):  # the gates from the last to the second, each before a long conv
            v = v * chunks[self.order - 1 - i]
            if hasattr(self, "qk_norm"):
                v = self._qk_norm(v, i)
            v = fft_conv1d(v, k[i], d[i], self.causal)
        y = (v * chunks[0]).transpose(1, 2)
        if hasattr(self, "out_norm"):
            y = self.out_norm(y)
        return self.out_proj(y).reshape(b, h, w, c)

    def _qk_norm(self, v: torch.Tensor, i: int) -> torch.Tensor:
        for j, norm in enumerate(self.qk_norm):  # TorchScript indexes a ModuleList only in a loop
            if j == i:
                v = norm(v.transpose(1, 2)).transpose(1, 2)
        return v
