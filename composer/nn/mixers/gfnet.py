"""The torch modules of composer.mixers.gfnet (configs and costs live there)."""

import torch
from timm.layers import register_notrace_module
from torch import nn


@register_notrace_module  # FX: the compiled-size check is a shape-dependent branch
class GlobalFilter(nn.Module):
    """FFT-domain global depthwise filter on (B, H, W, C); key ``complex_weight`` as the official one."""

    def __init__(self, dim: int, height: int, width: int):
        super().__init__()
        self.size = (height, width)
        self.complex_weight = nn.Parameter(torch.randn(height, width // 2 + 1, dim, 2, dtype=torch.float32) * 0.02)

    def forward(self, x):
        _, h, w, _ = x.shape
        if (h, w) != self.size:
            raise ValueError(f"GlobalFilter was compiled for a {self.size[0]}x{self.size[1]} map but got {h}x{w}; "
                             "compile the spec at this input_size")
        dtype = x.dtype
        spectrum = torch.fft.rfft2(x.float(), dim=(1, 2), norm="ortho")  # float32 whatever the input (as GFNet)
        spectrum = spectrum * torch.view_as_complex(self.complex_weight.float())
        return torch.fft.irfft2(spectrum, s=(h, w), dim=(1, 2), norm="ortho").to(dtype)
