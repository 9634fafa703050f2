"""The MetaFormer baseline mixers: identity, pooling, random mixing (Yu et al., "MetaFormer Baselines
for Vision", 2022; timm ``metaformer.py`` and sail-sg ``metaformer_baselines.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import PositiveInt

from ..cost_types import ZERO, Cost
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


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
        from torch import nn
        return nn.Identity()


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
        from ..nn.mixers.basic import Pooling
        return Pooling(self.pool_size)


@register_mixer
class RandomMixingConfig(MixerConfig):
    fixed_input_size = "its N x N token-mixing matrix is sized to the compiled map"
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
        from ..nn.mixers.basic import RandomMixing
        return RandomMixing(ctx.tokens)


register_symbol("Id", "identity", doc="identity (IdentityFormer)")
register_symbol("Pool", "pooling", doc="pooling minus identity (PoolFormer)")
register_symbol("Rand", "random_mixing", doc="frozen random token mixing (RandFormer)")
