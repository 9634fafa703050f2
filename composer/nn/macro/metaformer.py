"""The torch modules of composer.macro.metaformer (configs and costs live there)."""

import torch
from timm.layers import DropPath
from torch import nn

from ..layers import Layout, Scale


class Stem(nn.Module):
    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, padding: int, norm):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=padding)
        self.norm = norm.build(dim, "channels_first") if norm else nn.Identity()

    def forward(self, x):
        return self.norm(self.conv(x))


class Downsampling(nn.Module):
    """Pre-norm strided conv between stages (keys ``norm``, ``conv``)."""

    def __init__(self, in_dim: int, out_dim: int, norm):
        super().__init__()
        self.norm = norm.build(in_dim, "channels_first") if norm else nn.Identity()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(self.norm(x))


class MetaFormerBlock(nn.Module):
    """Pre-norm block with optional res-scale and layer-scale on both branches, in the mixer's layout.

    The token mixer is registered as ``mixer_key`` (timm's ``token_mixer``; subclasses rename it to keep
    their reference's state-dict keys). A mixer module defining ``embed_block_input(x)`` (e.g. PVT's absolute
    position embedding) gets the block's input first, so what it adds reaches the residual and the norm."""

    mixer_key = "token_mixer"

    def __init__(self, dim: int, mixer: nn.Module, mlp: nn.Module, norm, layout: Layout, drop_path: float,
                 layer_scale: float | None, res_scale: float | None):
        super().__init__()
        self.layout = layout

        def scale(value):
            return Scale(dim, value, layout) if value is not None else nn.Identity()

        self.norm1 = norm.build(dim, layout)
        self.add_module(self.mixer_key, mixer)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale1 = scale(layer_scale)
        self.res_scale1 = scale(res_scale)
        self.norm2 = norm.build(dim, layout)
        self.mlp = mlp
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale2 = scale(layer_scale)
        self.res_scale2 = scale(res_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the mixer by its attribute name, not self._modules[self.mixer_key]: TorchScript needs a static name;
        # hasattr on a submodule is decided at compile time
        if hasattr(self.token_mixer, "embed_block_input"):
            x = self.token_mixer.embed_block_input(x)
        return self._channel_branch(self.res_scale1(x) + self.layer_scale1(self.drop_path1(
            self.token_mixer(self.norm1(x)))))

    def _channel_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))
