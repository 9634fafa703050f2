"""The two-layer MLP channel mixer (1x1 convs in the channels-first layout, linears otherwise)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, NonNegativeFloat, PositiveFloat
from torch import nn

from ..cost_types import Cost, linear_cost
from ..layers import ACTIVATION_PARAMS, Layout, make_act
from ..perstage import StageValues, per_stage


class ChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str

    def at_stage(self, stage: int) -> ChannelConfig:
        """This config with its per-stage values (fields typed ``per_stage(...)``) picked for ``stage``."""
        update = {name: value[stage] for name, value in self.__dict__.items() if type(value) is StageValues}
        return self.model_copy(update=update) if update else self

    def cost(self, dim: int, tokens: int) -> Cost:
        raise NotImplementedError

    def build(self, dim: int, layout: Layout) -> nn.Module:
        raise NotImplementedError


CHANNEL_MIXERS: dict[str, type[ChannelConfig]] = {}


class Mlp(nn.Module):
    """fc1 -> act -> drop -> fc2 -> drop; state-dict keys ``fc1``, ``act``, ``fc2`` as timm's Mlp."""

    def __init__(self, dim: int, hidden: int, act: str, bias: bool, drop: float, layout: Layout):
        super().__init__()
        layer = (lambda i, o: nn.Conv2d(i, o, 1, bias=bias)) if layout == "channels_first" else \
            (lambda i, o: nn.Linear(i, o, bias=bias))
        self.fc1 = layer(dim, hidden)
        self.act = make_act(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = layer(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class MlpConfig(ChannelConfig):
    type: Literal["mlp"] = "mlp"
    ratio: per_stage(PositiveFloat) = 4.0  # type: ignore[valid-type]  # e.g. PVT's [8, 8, 4, 4]
    act: Literal["star_relu", "gelu", "relu", "silu", "squared_relu"] = "star_relu"
    bias: bool = False
    drop: NonNegativeFloat = 0.0
    summary: ClassVar[str] = "two-layer MLP, hidden = ratio x width"

    def hidden(self, dim: int) -> int:
        if isinstance(self.ratio, StageValues):
            raise ValueError("mlp with per-stage ratios: pick a stage with at_stage(stage) first")
        return int(self.ratio * dim)

    def cost(self, dim: int, tokens: int) -> Cost:
        hidden = self.hidden(dim)
        return (linear_cost(dim, hidden, tokens, self.bias) + Cost(ACTIVATION_PARAMS.get(self.act, 0))
                + linear_cost(hidden, dim, tokens, self.bias))

    def build(self, dim: int, layout: Layout) -> nn.Module:
        return Mlp(dim, self.hidden(dim), self.act, self.bias, self.drop, layout)


CHANNEL_MIXERS["mlp"] = MlpConfig
