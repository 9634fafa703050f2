"""The torch modules of composer.mixers.hornet (configs and costs live there)."""

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module, trunc_normal_
from torch import nn

from ...facts import GF_LOCAL_KERNEL, gnconv_dims
from ..layers import LayerNorm


@register_notrace_module  # FX: the filter is resized to the map's spectrum, a shape-dependent branch
class GlobalLocalFilter(nn.Module):
    """HorNet's GF: LN, [3x3 depthwise | FFT global filter] interleaved, LN; on (B, S, H, W)."""

    def __init__(self, dim: int, h: int, w: int):
        super().__init__()
        half = dim // 2
        self.dw = nn.Conv2d(half, half, GF_LOCAL_KERNEL, padding=GF_LOCAL_KERNEL // 2, groups=half, bias=False)
        self.complex_weight = nn.Parameter(torch.empty(half, h, w, 2, dtype=torch.float32))
        self.pre_norm = LayerNorm(dim, eps=1e-6, layout="channels_first")
        self.post_norm = LayerNorm(dim, eps=1e-6, layout="channels_first")
        self.reset_filter()

    def reset_filter(self) -> None:
        if self.complex_weight.device.type != "meta":
            trunc_normal_(self.complex_weight, std=0.02)

    def forward(self, x):
        x = self.pre_norm(x)
        dtype = x.dtype
        local, glob = torch.chunk(x, 2, dim=1)
        local = self.dw(local)
        b, c, h, w = glob.shape
        spectrum = torch.fft.rfft2(glob.float(), dim=(2, 3), norm="ortho")
        weight = self.complex_weight
        if weight.shape[1:3] != spectrum.shape[2:4]:
            weight = F.interpolate(weight.permute(3, 0, 1, 2), size=spectrum.shape[2:4], mode="bilinear",
                                   align_corners=True).permute(1, 2, 3, 0)
        spectrum = spectrum * torch.view_as_complex(weight.float().contiguous())
        glob = torch.fft.irfft2(spectrum, s=(h, w), dim=(2, 3), norm="ortho").to(dtype)  # the FFT runs in fp32
        x = torch.stack((local, glob), dim=2).reshape(b, 2 * c, h, w)  # local_0, global_0, local_1, ...
        return self.post_norm(x)


class GnConv(nn.Module):
    """Recursive gated convolution on (B, C, H, W)."""

    def __init__(self, dim: int, order: int, spatial: nn.Module, scale: float):
        super().__init__()
        self.order = order
        self.dims = gnconv_dims(dim, order)
        self.scale = scale
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        self.dwconv = spatial
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[k], self.dims[k + 1], 1) for k in range(order - 1))

    def forward(self, x):
        p, abc = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        q = torch.split(self.dwconv(abc) * self.scale, self.dims, dim=1)
        x = p * q[0]
        for k, pw in enumerate(self.pws):
            x = pw(x) * q[k + 1]
        return self.proj_out(x)
