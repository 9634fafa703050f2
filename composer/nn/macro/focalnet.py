"""The torch modules of composer.macro.focalnet (configs and costs live there)."""

import torch
from torch import nn

from .metaformer import MetaFormerBlock


class PatchConv(nn.Module):
    """k x k stride-k conv then a norm (timm's FocalNet ``Downsample``; keys ``proj``, ``norm``)."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int, norm):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, out_chans, kernel, stride=kernel)
        self.norm = norm.build(out_chans, "channels_first") if norm else nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(x))


class FocalNetBlock(MetaFormerBlock):
    """The pre-norm block with FocalNet's keys (``norm1``, ``modulation``, ``norm2``, ``mlp``)."""

    mixer_key = "modulation"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.modulation, "embed_block_input"):  # see MetaFormerBlock.forward
            x = self.modulation.embed_block_input(x)
        return self._channel_branch(self.res_scale1(x) + self.layer_scale1(self.drop_path1(
            self.modulation(self.norm1(x)))))
