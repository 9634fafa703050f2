"""The torch modules of composer.macro.metanext (configs and costs live there)."""

import torch
from timm.layers import DropPath
from torch import nn

from ..layers import Layout, Scale, to_layout


class MetaNeXtBlock(nn.Module):
    """mixer -> norm -> mlp -> layer scale, one residual (timm's MetaNeXtBlock; keys ``token_mixer``, ``norm``,
    ``mlp.fc1`` / ``mlp.fc2``, ``gamma``). The block runs channels-first; a channels-last mixer gets its input
    permuted and its output permuted back."""

    def __init__(self, dim: int, mixer: nn.Module, mlp: nn.Module, norm, layout: Layout, drop_path: float,
                 layer_scale: float | None, res_scale: float | None):
        super().__init__()
        self.layout = "channels_first"   # what the block takes and gives (the stage permutes to it)
        self.mixer_layout = layout
        self.token_mixer = mixer
        self.norm = norm.build(dim, "channels_first")
        self.mlp = mlp
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale))) if layer_scale is not None else None
        self.res_scale = Scale(dim, res_scale, "channels_first") if res_scale is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_layout(x, "channels_first", self.mixer_layout)
        if hasattr(self.token_mixer, "embed_block_input"):  # decided at compile time under TorchScript
            x = self.token_mixer.embed_block_input(x)   # (PVT's position embedding): reaches the residual too
        y = to_layout(self.token_mixer(x), self.mixer_layout, "channels_first")
        x = to_layout(x, self.mixer_layout, "channels_first")
        y = self.mlp(self.norm(y))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return self.res_scale(x) + self.drop_path(y)
