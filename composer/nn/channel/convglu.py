"""The torch modules of composer.channel.convglu (configs and costs live there)."""

import torch
from torch import nn

from ...facts import DW_KERNEL
from ..layers import Layout, make_act, to_layout


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
