"""The torch side of MSA-Conv (the config and its cost live in ``composer_msaconv``)."""

import torch
from torch import nn
from torch.nn import functional as F


class MSAConv(nn.Module):
    """TiC's MSA-Conv on (B, C, H, W); parameter names as the official module (``qkv_conv``, ``mlp``), so its
    state dicts load as they are."""

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1, attn_drop: float = 0.1):
        super().__init__()
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.scale = dim ** -0.5
        self.qkv_conv = nn.Conv2d(dim, 3 * dim, kernel_size=1)
        self.attn_drop = nn.Dropout(attn_drop)
        self.mlp = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, bias=False)
        self.act = nn.ReLU()

    def _windows(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H·W, k², C): every pixel's zero-padded k x k window."""
        b, c, h, w = t.shape
        cols = F.unfold(t, self.kernel_size, dilation=self.dilation, padding=self.padding)
        return cols.view(b, c, self.kernel_size * self.kernel_size, h * w).permute(0, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_conv(x).chunk(3, dim=1)
        query = q.flatten(2).transpose(1, 2).unsqueeze(2)                    # (B, N, 1, C)
        # matmuls (not mul + sum) so that FLOP counters see the window products the cost formula counts
        dots = torch.matmul(query, self._windows(k).transpose(2, 3)) * self.scale   # (B, N, 1, k²)
        attn = self.attn_drop(dots.softmax(dim=-1))
        out = torch.matmul(attn, self._windows(v))                          # (B, N, 1, C)
        out = out.squeeze(2).transpose(1, 2).reshape(b, c, h, w) + x
        return self.act(self.mlp(out))
