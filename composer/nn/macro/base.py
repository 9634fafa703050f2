"""The torch modules of composer.macro.base (configs and costs live there)."""

from __future__ import annotations

from torch import nn

from ..layers import to_layout


class Stage(nn.Module):
    """Downsampling, blocks, then the macro's stage norm if it has one. Takes and returns (B, C, H, W);
    converts layouts between blocks, so a stage may mix channels-first mixers (convs) and channels-last ones
    (attention) block by block."""

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module], norm: nn.Module | None = None):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        if norm is not None:  # only then: stages of the other macros keep their module list and keys
            self.norm = norm

    def forward(self, x):
        x = self.downsample(x)
        layout = "channels_first"
        for block in self.blocks:
            x = to_layout(x, layout, block.layout)
            layout = block.layout
            x = block(x)
        x = to_layout(x, layout, "channels_first")
        return self.norm(x) if "norm" in self._modules else x


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


class TransformPool(nn.Module):
    """1x1 conv (no bias) -> BatchNorm -> GELU, then the global average (the unified architecture's "extra
    transform" before pooling; ``head.transform_ratio``)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_dim)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.norm(self.conv(x))).mean((2, 3), keepdim=True)


class Head(nn.Sequential):
    """global_pool -> norm -> flatten -> drop -> fc, as timm's MetaFormer head (keys ``norm``, ``fc``); with
    ``transform_ratio`` the pool is a :class:`TransformPool`."""

    def __init__(self, dim: int, num_classes: int, cfg):
        super().__init__()
        pooled = cfg.pooled_dim(dim)
        self.global_pool = TransformPool(dim, pooled) if cfg.transform_ratio else GlobalAvgPool()
        self.norm = cfg.norm.build(pooled, "channels_first") if cfg.norm else nn.Identity()
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(cfg.drop)
        self.fc = cfg.build_classifier(pooled, num_classes)
