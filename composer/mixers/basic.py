"""The MetaFormer baseline mixers: identity, pooling, random mixing (Yu et al., "MetaFormer Baselines
for Vision", 2022; timm ``metaformer.py`` and sail-sg ``metaformer_baselines.py``)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import PositiveInt
from torch import nn

from ..cost_types import ZERO, Cost
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol


@register_mixer
class IdentityConfig(MixerConfig):
    """No token mixing at all (IdentityFormer)."""

    type: Literal["identity"] = "identity"
    summary = "identity: no token mixing (IdentityFormer)"
    paper = "MetaFormer Baselines for Vision (Yu et al. 2022)"
    cost_formula = "0 params, 0 MACs"

    def cost(self, ctx: MixerContext) -> Cost:
        return ZERO

    def build(self, ctx: MixerContext) -> nn.Module:
        return nn.Identity()


class Pooling(nn.Module):
    """PoolFormer's mixer: average pooling minus the input (the block's residual adds the input back)."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


@register_mixer
class PoolingConfig(MixerConfig):
    type: Literal["pooling"] = "pooling"
    pool_size: PositiveInt = 3
    summary = "average pooling minus identity (PoolFormer)"
    paper = "MetaFormer Is Actually What You Need for Vision (Yu et al. 2022)"
    cost_formula = "0 params, 0 MACs (the pooling and the subtraction are element-wise terms, not counted)"

    def check(self, ctx: MixerContext) -> None:
        if self.pool_size % 2 == 0:
            raise MixerCheckError(f"pool_size must be odd to keep the feature map size, got {self.pool_size}",
                                  "pool_size")

    def cost(self, ctx: MixerContext) -> Cost:
        return ZERO  # pooling is an element-wise term: not counted (flop-conventions.md)

    def build(self, ctx: MixerContext) -> nn.Module:
        return Pooling(self.pool_size)


class RandomMixing(nn.Module):
    """A frozen random token-mixing matrix (RandFormer): row-softmax of U[0, 1) noise, N x N."""

    def __init__(self, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.random_matrix = nn.Parameter(torch.softmax(torch.rand(num_tokens, num_tokens), dim=-1),
                                          requires_grad=False)

    def forward(self, x):  # (B, H, W, C)
        b, h, w, c = x.shape
        if h * w != self.num_tokens:
            raise ValueError(f"RandomMixing was compiled for {self.num_tokens} tokens but got {h}x{w}={h * w}; "
                             "compile the spec at this input_size")
        x = torch.einsum("mn,bnc->bmc", self.random_matrix, x.reshape(b, h * w, c))
        return x.reshape(b, h, w, c)


@register_mixer
class RandomMixingConfig(MixerConfig):
    type: Literal["random_mixing"] = "random_mixing"
    layout = "channels_last"
    summary = "frozen random N x N token mixing (RandFormer); N fixed by the compiled input size"
    paper = "MetaFormer Baselines for Vision (Yu et al. 2022)"
    cost_formula = ("params N² (the frozen matrix is an nn.Parameter); MACs N²·C (N x N matrix times N x C "
                    "tokens)")

    def cost(self, ctx: MixerContext) -> Cost:
        n = ctx.tokens
        return Cost(params=n * n, macs=n * n * ctx.dim)

    def build(self, ctx: MixerContext) -> nn.Module:
        return RandomMixing(ctx.tokens)


register_symbol("Id", "identity", doc="identity (IdentityFormer)")
register_symbol("Pool", "pooling", doc="pooling minus identity (PoolFormer)")
register_symbol("Rand", "random_mixing", doc="frozen random token mixing (RandFormer)")
