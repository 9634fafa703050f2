"""The torch modules of composer.macro.hornet (configs and costs live there)."""

import torch
from timm.layers import DropPath
from torch import nn

from ..channel.mlp import Mlp
from ..layers import Layout, Scale, to_layout


class HorNetBlock(nn.Module):
    """HorNet block in its mixer's layout; the MLP branch always runs channels-last (as the official one)."""

    def __init__(self, dim: int, mixer: nn.Module, mlp: nn.Module, norm, layout: Layout, drop_path: float,
                 layer_scale: float | None, res_scale: float | None):
        super().__init__()
        self.layout = layout
        self.norm1 = norm.build(dim, layout)
        self.gnconv = mixer  # the official key, whatever the mixer
        self.norm2 = norm.build(dim, "channels_last")
        if isinstance(mlp, Mlp):  # the official keys pwconv1 / act / pwconv2
            self.pwconv1, self.act, self.drop1, self.pwconv2, self.drop2 = (
                mlp.fc1, mlp.act, mlp.drop1, mlp.fc2, mlp.drop2)
        else:
            self.mlp = mlp
        self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale))) if layer_scale is not None else None
        self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale))) if layer_scale is not None else None
        self.res_scale1 = Scale(dim, res_scale, layout) if res_scale is not None else nn.Identity()
        self.res_scale2 = Scale(dim, res_scale, "channels_last") if res_scale is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _channel(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pwconv1"):  # static under TorchScript: the official MLP keys, or another channel mixer
            return self.drop2(self.pwconv2(self.drop1(self.act(self.pwconv1(x)))))
        return self.mlp(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.gnconv, "embed_block_input"):  # decided at compile time under TorchScript
            x = self.gnconv.embed_block_input(x)
        y = self.gnconv(self.norm1(x))
        if self.gamma1 is not None:
            y = y * (self.gamma1.view(-1, 1, 1) if self.layout == "channels_first" else self.gamma1)
        x = self.res_scale1(x) + self.drop_path(y)
        x = to_layout(x, self.layout, "channels_last")
        y = self._channel(self.norm2(x))
        if self.gamma2 is not None:
            y = y * self.gamma2
        x = self.res_scale2(x) + self.drop_path(y)
        return to_layout(x, "channels_last", self.layout)
