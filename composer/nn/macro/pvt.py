"""The torch modules of composer.macro.pvt (configs and costs live there)."""

import torch
from torch import nn

from .metaformer import MetaFormerBlock


class PatchEmbed(nn.Module):
    """[pre_norm] -> overlapping conv (``proj``) -> LN (``norm``), on (B, C, H, W)."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, norm, pre_norm=None):
        super().__init__()
        self.pre_norm = pre_norm.build(in_chans, "channels_first") if pre_norm else nn.Identity()
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=kernel // 2)
        self.norm = norm.build(dim, "channels_first") if norm else nn.Identity()

    def forward(self, x):
        return self.norm(self.proj(self.pre_norm(x)))


class NormPool(nn.Module):
    """The last stage's norm on every token, then the mean over tokens (TransNeXt's ``norm4`` + mean);
    ``pool=False`` (timm's ``global_pool=''``) keeps the normalised map."""

    pool: bool

    def __init__(self, norm: nn.Module, pool: bool = True):
        super().__init__()
        self.norm = norm
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return x.mean((2, 3), keepdim=True) if self.pool else x


class PvtHead(nn.Sequential):
    """global_pool (norm + mean) -> norm (identity) -> flatten -> drop -> fc; the same interface as Head."""

    def __init__(self, dim: int, num_classes: int, cfg):
        super().__init__()
        self.global_pool = NormPool(cfg.norm.build(dim, "channels_first") if cfg.norm else nn.Identity())
        self.norm = nn.Identity()
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(cfg.drop)
        self.fc = cfg.build_classifier(dim, num_classes)


class PvtBlock(MetaFormerBlock):
    """The pre-norm block with TransNeXt's keys (``norm1``, ``attn``, ``norm2``, ``mlp``); optional scales."""

    mixer_key = "attn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.attn, "embed_block_input"):  # see MetaFormerBlock.forward
            x = self.attn.embed_block_input(x)
        return self._channel_branch(self.res_scale1(x) + self.layer_scale1(self.drop_path1(
            self.attn(self.norm1(x)))))
