"""The torch module of composer.mixers.lowtention (config and cost live there)."""

import torch
import torch.nn.functional as F
from torch import nn

from .mbconv import ConvNormAct


class Lowtention(nn.Module):
    """LowFormer's ConvAttention on (B, C, H, W): strided depthwise projection + BN, 1x1 qkv, attention over the
    reduced map, transposed-conv upsampling cropped to H x W."""

    def __init__(self, dim: int, heads: int, head_dim: int, stride: int, kernel: int, fuse_out_proj: bool, norm):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.conv_proj = ConvNormAct(dim, dim, kernel, stride, groups=dim, norm=norm)
        self.pwise = nn.Conv2d(dim, 3 * inner, 1, bias=False)
        up_kernel, padding = (3, 1) if stride == 1 else (2 * stride, stride // 2)
        if fuse_out_proj:
            self.o_proj = nn.Identity()
            self.upsampling = nn.ConvTranspose2d(inner, dim, up_kernel, stride, padding)
        else:
            self.o_proj = nn.Conv2d(inner, dim, 1)
            self.upsampling = nn.ConvTranspose2d(dim, dim, up_kernel, stride, padding, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        qkv = self.pwise(self.conv_proj(x))
        B, _, h, w = qkv.shape
        # channels are [q | k | v] per head: (B, heads, 3·head_dim, n) -> (B, heads, n, 3·head_dim)
        qkv = qkv.reshape(B, self.heads, 3 * self.head_dim, h * w).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)               # (B, heads, n, head_dim)
        out = out.transpose(-1, -2).reshape(B, self.heads * self.head_dim, h, w)
        return self.upsampling(self.o_proj(out))[..., :H, :W]
