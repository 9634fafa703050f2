"""TransNeXt's Convolutional GLU channel mixer (Shi, "TransNeXt", CVPR 2024, §3.2), ``type: conv_glu``.

hidden = int(2 * int(ratio * C) / 3); ``fc1`` (Linear C -> 2 hidden) splits into a gate half (the first) and a
value half (the second); the gate goes through a 3x3 depthwise conv with bias (``dwconv.dwconv``) and GELU,
multiplies the value half, and ``fc2`` (Linear hidden -> C) projects back. ``ratio`` may be one value per
stage (TransNeXt: [8, 8, 4, 4]). Keys equal the official ``mlp.fc1``, ``mlp.dwconv.dwconv``, ``mlp.fc2``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import PositiveFloat

from ..cost_types import Cost, conv_cost, linear_cost
from ..facts import DW_KERNEL
from ..fields import Probability
from ..layout import Layout
from ..perstage import StageValues, per_stage
from ..registry import register_channel_mixer
from .mlp import ChannelConfig

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


@register_channel_mixer
class ConvGLUConfig(ChannelConfig):
    type: Literal["conv_glu"] = "conv_glu"
    ratio: per_stage(PositiveFloat) = 4.0  # type: ignore[valid-type]
    act: Literal["gelu", "relu", "silu"] = "gelu"
    drop: Probability = 0.0
    summary: ClassVar[str] = "convolutional GLU: fc1 to 2 x hidden, 3x3 depthwise + GELU gate, fc2 (TransNeXt)"

    def hidden(self, dim: int) -> int:
        if isinstance(self.ratio, StageValues):
            raise ValueError("conv_glu with per-stage ratios: pick a stage with at_stage(stage) first")
        return int(2 * int(self.ratio * dim) / 3)

    def cost(self, dim: int, tokens: int) -> Cost:
        hidden = self.hidden(dim)
        dw = conv_cost(hidden, hidden, DW_KERNEL, (1, tokens), groups=hidden)  # 'same' padding: one output per token
        return linear_cost(dim, 2 * hidden, tokens) + dw + linear_cost(hidden, dim, tokens)

    def build(self, dim: int, layout: Layout) -> nn.Module:
        from ..nn.channel.convglu import ConvGLU
        return ConvGLU(dim, self.hidden(dim), self.act, self.drop, layout)

