"""The torch modules of composer.macro.pvt (configs and costs live there)."""

from __future__ import annotations

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
    """The last stage's norm on every token, then the mean over tokens (TransNeXt's ``norm4`` + mean)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return self.norm(x).mean((2, 3), keepdim=True)


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
