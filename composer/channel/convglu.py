"""TransNeXt's Convolutional GLU channel mixer (Shi, "TransNeXt", CVPR 2024, §3.2), ``type: conv_glu``.

hidden = int(2 * int(ratio * C) / 3); ``fc1`` (Linear C -> 2 hidden) splits into a gate half (the first) and a
value half (the second); the gate goes through a 3x3 depthwise conv with bias (``dwconv.dwconv``) and GELU,
multiplies the value half, and ``fc2`` (Linear hidden -> C) projects back. ``ratio`` may be one value per
stage (TransNeXt: [8, 8, 4, 4]). Keys equal the official ``mlp.fc1``, ``mlp.dwconv.dwconv``, ``mlp.fc2``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import NonNegativeFloat, PositiveFloat
from torch import nn

from ..cost_types import Cost, conv_cost, linear_cost
from ..layers import Layout, make_act, to_layout
from ..perstage import StageValues, per_stage
from .mlp import CHANNEL_MIXERS, ChannelConfig

DW_KERNEL = 3


class _DWConv(nn.Module):
    """The 3x3 depthwise conv on a (B, H, W, C) map (key ``dwconv``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, DW_KERNEL, padding=DW_KERNEL // 2, groups=dim)

    def forward(self, x):
        return self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ConvGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str, drop: float, layout: Layout):
        super().__init__()
        self.layout = layout
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.dwconv = _DWConv(hidden)
        self.act = make_act(act)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = to_layout(x, self.layout, "channels_last")
        gate, value = torch.chunk(self.fc1(x), 2, dim=-1)
        x = self.drop(self.act(self.dwconv(gate)) * value)
        x = self.drop(self.fc2(x))
        return to_layout(x, "channels_last", self.layout)


class ConvGLUConfig(ChannelConfig):
    type: Literal["conv_glu"] = "conv_glu"
    ratio: per_stage(PositiveFloat) = 4.0  # type: ignore[valid-type]
    act: Literal["gelu", "relu", "silu"] = "gelu"
    drop: NonNegativeFloat = 0.0
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
        return ConvGLU(dim, self.hidden(dim), self.act, self.drop, layout)


CHANNEL_MIXERS["conv_glu"] = ConvGLUConfig
