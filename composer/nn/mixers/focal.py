"""The torch modules of composer.mixers.focal (configs and costs live there)."""

import torch
from torch import nn

from ...facts import POST_NORM_EPS
from ..layers import LayerNorm


class FocalModulation(nn.Module):
    """Focal modulation on (B, C, H, W); keys ``f``, ``focal_layers.l.0``, ``h``, ``norm``, ``proj`` (timm's)."""

    def __init__(self, dim: int, kernel_sizes: list[int], bias: bool = True, normalize_modulator: bool = False,
                 use_post_norm: bool = False):
        super().__init__()
        self.focal_level = len(kernel_sizes)
        self.normalize_modulator = normalize_modulator
        self.split_sizes = (dim, dim, self.focal_level + 1)  # q, context, gates
        self.f = nn.Conv2d(dim, 2 * dim + self.focal_level + 1, 1, bias=bias)
        self.focal_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU())
            for k in kernel_sizes)
        self.act = nn.GELU()
        self.h = nn.Conv2d(dim, dim, 1, bias=bias)
        self.norm = LayerNorm(dim, eps=POST_NORM_EPS, layout="channels_first") if use_post_norm else nn.Identity()
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        q, ctx, gates = torch.split(self.f(x), self.split_sizes, dim=1)
        ctx_all = 0
        for level, focal_layer in enumerate(self.focal_layers):
            ctx = focal_layer(ctx)  # each level refines the previous one (growing receptive field)
            ctx_all = ctx_all + ctx * gates[:, level:level + 1]
        # the global level summarises the last level's output, not the input
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level:]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        return self.proj(self.norm(q * self.h(ctx_all)))
