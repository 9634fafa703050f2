"""The torch modules of composer.macro.base (configs and costs live there)."""

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import make_act, to_layout


class Stage(nn.Module):
    """Downsampling, blocks, then the macro's stage norm if it has one. Takes and returns (B, C, H, W);
    converts layouts between blocks, so a stage may mix channels-first mixers (convs) and channels-last ones
    (attention) block by block."""

    grad_checkpointing: bool

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module], norm: nn.Module | None = None):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)
        if norm is not None:  # only then: stages of the other macros keep their module list and keys
            self.norm = norm
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        layout = "channels_first"
        for block in self.blocks:
            x = to_layout(x, layout, block.layout)
            layout = block.layout
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = checkpoint(block, x, use_reentrant=False)  # recompute the block in backward: less memory
            else:
                x = block(x)
        x = to_layout(x, layout, "channels_first")
        if hasattr(self, "norm"):  # TorchScript decides this at compile time
            x = self.norm(x)
        return x


class GlobalAvgPool(nn.Module):
    """The mean over the map, keeping (B, C, 1, 1); ``pool=False`` (timm's ``global_pool=''``) passes the map."""

    pool: bool

    def __init__(self, pool: bool = True):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True) if self.pool else x


class TransformPool(nn.Module):
    """1x1 conv (no bias) -> BatchNorm -> GELU, then the global average (the unified architecture's "extra
    transform" before pooling; ``head.transform_ratio``); ``pool=False`` keeps the transformed map."""

    pool: bool

    def __init__(self, dim: int, out_dim: int, pool: bool = True, act: str = "gelu"):
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_dim)
        self.act = make_act(act)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.conv(x)))
        return x.mean((2, 3), keepdim=True) if self.pool else x


class Head(nn.Sequential):
    """global_pool -> norm -> flatten -> drop -> fc, as timm's MetaFormer head (keys ``norm``, ``fc``); with
    ``transform_ratio`` the pool is a :class:`TransformPool`; the ``efficientvit`` head is a TransformPool (its
    act) and an :class:`~composer.nn.parts.MlpHead` that applies the dropout itself, before its last linear."""

    def __init__(self, dim: int, num_classes: int, cfg):
        super().__init__()
        pooled = cfg.pooled_dim(dim)
        if cfg.widths is not None:
            self.global_pool = TransformPool(dim, pooled, act=cfg.act)
        else:
            self.global_pool = TransformPool(dim, pooled) if cfg.transform_ratio else GlobalAvgPool()
        self.norm = cfg.norm.build(pooled, "channels_first") if cfg.norm else nn.Identity()
        self.flatten = nn.Flatten(1)
        self.drop = nn.Dropout(0.0 if cfg.type == "efficientvit" else cfg.drop)
        self.fc = cfg.build_classifier(pooled, num_classes)
