"""The torch modules of composer.macro.lowformer (configs and costs live there)."""

import torch
from timm.layers import DropPath
from torch import nn

from ..layers import Scale, to_layout
from .metaformer import MetaFormerBlock


class ConvBlock(nn.Module):
    """``x + drop_path(mixer(x))`` with optional res / layer scale: a conv-block mixer (fused MBConv, MBConv) as
    a whole block, as LowFormer's first stages (key ``token_mixer``)."""

    def __init__(self, dim: int, mixer: nn.Module, drop_path: float, layer_scale: float | None,
                 res_scale: float | None):
        super().__init__()
        self.layout = "channels_first"
        self.token_mixer = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale = Scale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.res_scale = Scale(dim, res_scale) if res_scale is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_scale(x) + self.layer_scale(self.drop_path(self.token_mixer(x)))


class LowFormerBlock(MetaFormerBlock):
    """The pre-norm attention and MLP branches (MetaFormerBlock, in the mixer's layout), then the local conv
    branch ``x + drop_path(local(x))`` on the channels-first map (keys ``norm1``, ``token_mixer``, ``norm2``,
    ``mlp.fc1`` / ``mlp.fc2``, ``local``)."""

    def __init__(self, dim: int, mixer: nn.Module, mlp: nn.Module, norm, layout: str, drop_path: float,
                 layer_scale: float | None, res_scale: float | None, local: nn.Module):
        super().__init__(dim, mixer, mlp, norm, layout, drop_path, layer_scale, res_scale)
        self.local = local
        self.drop_path3 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # MetaFormerBlock.forward written out: TorchScript takes no super().forward
        if hasattr(self.token_mixer, "embed_block_input"):
            x = self.token_mixer.embed_block_input(x)
        x = self._channel_branch(self.res_scale1(x) + self.layer_scale1(self.drop_path1(
            self.token_mixer(self.norm1(x)))))
        x = to_layout(x, self.layout, "channels_first")
        x = x + self.drop_path3(self.local(x))
        return to_layout(x, "channels_first", self.layout)
