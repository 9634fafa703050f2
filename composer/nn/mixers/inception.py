"""The torch modules of composer.mixers.inception (configs and costs live there)."""

import torch
from torch import nn

from ...facts import branch_channels


class InceptionDWConv(nn.Module):
    """Inception depthwise conv on (B, C, H, W)."""

    def __init__(self, dim: int, square_kernel_size: int = 3, band_kernel_size: int = 11, branch_ratio: float = 0.125):
        super().__init__()
        g = branch_channels(dim, branch_ratio)
        ks, kb = square_kernel_size, band_kernel_size
        self.dwconv_hw = nn.Conv2d(g, g, ks, padding=ks // 2, groups=g)
        self.dwconv_w = nn.Conv2d(g, g, (1, kb), padding=(0, kb // 2), groups=g)
        self.dwconv_h = nn.Conv2d(g, g, (kb, 1), padding=(kb // 2, 0), groups=g)
        self.split_sizes = (dim - 3 * g, g, g, g)

    def forward(self, x):
        x_id, x_hw, x_w, x_h = torch.split(x, self.split_sizes, dim=1)
        return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), dim=1)
