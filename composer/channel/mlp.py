"""The two-layer MLP channel mixer (1x1 convs in the channels-first layout, linears otherwise)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, PositiveFloat

from ..cost_types import ACTIVATION_PARAMS, Cost, linear_cost
from ..fields import Probability
from ..layout import Layout
from ..mixers.base import MixerCheckError
from ..perstage import StageValues, per_stage
from ..registry import CHANNEL_MIXERS, register_channel_mixer  # noqa: F401  (CHANNEL_MIXERS: re-exported)

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


class ChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # strict: no bool as int (YAML yes/no)
    type: str

    hidden_field: ClassVar[str] = "ratio"
    """The field that sets ``hidden(dim)`` (where the config has one), named when it leaves no channel."""

    def check(self, dim: int) -> None:
        """Raise :class:`~composer.mixers.MixerCheckError` if this config cannot work at width ``dim``. By
        default: a config with ``hidden(dim)`` must leave at least one hidden channel (a ratio of 0.01 at width 64
        leaves none, and a layer of 0 channels divides by zero in its cost and fails in its build)."""
        hidden = getattr(self, "hidden", None)
        if hidden is not None and hidden(dim) < 1:
            value = getattr(self, self.hidden_field, None)
            raise MixerCheckError(f"channel_mixer {self.hidden_field} {value} leaves {hidden(dim)} hidden channels "
                                  f"of width {dim}; it must give at least 1", self.hidden_field)

    def at_stage(self, stage: int) -> ChannelConfig:
        """This config with its per-stage values (fields typed ``per_stage(...)``) picked for ``stage``."""
        update = {name: value[stage] for name, value in self.__dict__.items() if type(value) is StageValues}
        return self.model_copy(update=update) if update else self

    def cost(self, dim: int, tokens: int) -> Cost:
        raise NotImplementedError

    def build(self, dim: int, layout: Layout) -> nn.Module:
        raise NotImplementedError


@register_channel_mixer
class MlpConfig(ChannelConfig):
    type: Literal["mlp"] = "mlp"
    ratio: per_stage(PositiveFloat) = 4.0  # type: ignore[valid-type]  # e.g. PVT's [8, 8, 4, 4]
    act: Literal["star_relu", "gelu", "relu", "silu", "squared_relu"] = "star_relu"
    bias: bool = False
    drop: Probability = 0.0
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
        from ..nn.channel.mlp import Mlp
        return Mlp(dim, self.hidden(dim), self.act, self.bias, self.drop, layout)

