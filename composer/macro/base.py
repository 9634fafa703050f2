"""What a macro (stem / downsampling / block / head conventions) provides to the Plan.

A macro turns a validated spec into :class:`Part` objects, each holding its shapes, its analytic cost and
a ``build`` callable; the Plan stores the parts and building the model is a walk over them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from ..cost_types import Cost
from ..layers import to_layout

if TYPE_CHECKING:
    from ..spec.model import Spec

Shape = tuple[int, int, int]  # (C, H, W)


@dataclass
class Part:
    """One module of the network as the Plan knows it, before anything is allocated."""

    kind: str  # stem | downsample | block | head
    cost: Cost
    in_shape: Shape
    out_shape: Shape
    build: Callable[[], nn.Module]
    info: dict[str, Any] = field(default_factory=dict)


class Stage(nn.Module):
    """Downsampling then blocks. Takes and returns (B, C, H, W); converts layouts between blocks, so
    a stage may mix channels-first mixers (convs) and channels-last ones (attention) block by block."""

    def __init__(self, downsample: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        x = self.downsample(x)
        layout = "channels_first"
        for block in self.blocks:
            x = to_layout(x, layout, block.layout)
            layout = block.layout
            x = block(x)
        return to_layout(x, layout, "channels_first")


class Macro:
    name: str = ""
    summary: str = ""

    def spec_defaults(self, data: dict) -> dict:
        """Values for the spec fields this macro fixes by convention (the user may override any)."""
        return {}

    def stem(self, spec: Spec) -> Part:
        raise NotImplementedError

    def downsample(self, spec: Spec, stage: int, in_shape: Shape) -> Part | None:
        raise NotImplementedError

    def block(self, spec: Spec, stage: int, index: int, shape: Shape, mixer: Any, drop_path: float) -> Part:
        raise NotImplementedError

    def head(self, spec: Spec, in_shape: Shape) -> Part:
        raise NotImplementedError

    def stage(self, downsample: nn.Module, blocks: list[nn.Module]) -> nn.Module:
        return Stage(downsample, blocks)

    def init_weights(self, model: nn.Module) -> None:
        """The reference initialisation, applied once to the whole built model."""
