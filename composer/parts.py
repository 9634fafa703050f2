"""Config models for the parts every macro shares: norms and classification heads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from .cost_types import ACTIVATION_PARAMS, Cost, linear_cost
from .fields import Probability
from .layout import Layout

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn

_NORM_SHORTHANDS = {
    "layernorm": ("layernorm", True), "layernorm_nobias": ("layernorm", False),
    "groupnorm1": ("groupnorm1", True), "groupnorm1_nobias": ("groupnorm1", False),
    "batchnorm": ("batchnorm", True),
}


class NormConfig(BaseModel):
    """A normalisation layer. Shorthands: ``layernorm``, ``layernorm_nobias``, ``groupnorm1`` (PoolFormer's
    "modified LN" over C, H, W), ``groupnorm1_nobias``, ``batchnorm``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # strict: no bool as int (YAML yes/no)
    type: Literal["layernorm", "groupnorm1", "batchnorm"] = "layernorm"
    bias: bool = True
    eps: PositiveFloat = 1e-6
    """1e-6 for the layer norms (timm's MetaFormer); a batchnorm without eps gets PyTorch's 1e-5."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in _NORM_SHORTHANDS:
                raise ValueError(f"unknown norm {data!r}; allowed: {', '.join(_NORM_SHORTHANDS)} "
                                 "or {type: ..., bias: ..., eps: ...}")
            kind, bias = _NORM_SHORTHANDS[data]
            return {"type": kind, "bias": bias, "eps": 1e-5 if kind == "batchnorm" else 1e-6}
        if isinstance(data, dict) and data.get("type") == "batchnorm" and "eps" not in data:
            return {**data, "eps": 1e-5}   # PyTorch's (and timm's) BatchNorm eps, as the shorthand gives it
        return data

    def cost(self, dim: int) -> Cost:
        return Cost(dim * (2 if self.bias else 1))

    def build(self, dim: int, layout: Layout) -> nn.Module:
        from .nn.layers import NORMS

        return NORMS[self.type](dim, eps=self.eps, bias=self.bias, layout=layout)


LN = NormConfig(type="layernorm", bias=True)
LN_NOBIAS = NormConfig(type="layernorm", bias=False)


class HeadConfig(BaseModel):
    """Classification head after global average pooling and ``norm``: an MLP head or a linear layer; or
    EfficientViT's head (``efficientvit``, as LowFormer uses it): 1x1 conv to ``widths[0]`` (no bias) + BatchNorm
    + act on the map, global average pooling, Linear to ``widths[1]`` (no bias) + ``hidden_norm`` + act, dropout
    ``drop``, Linear to the classes."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # strict: no bool as int (YAML yes/no)
    type: Literal["mlp", "linear", "efficientvit"] = "mlp"
    norm: NormConfig | None = Field(default=LN, description="norm after pooling (head.norm)")
    ratio: PositiveFloat = Field(default=4.0, description="MLP head hidden width / final width")
    act: Literal["squared_relu", "gelu", "relu", "star_relu", "hardswish"] = "squared_relu"
    hidden_norm: NormConfig = Field(default=LN, description="norm inside the MLP head")
    hidden_drop: Probability = Field(default=0.0, description="dropout inside the MLP head")
    drop: Probability = Field(default=0.0, description="dropout before the classifier")
    transform_ratio: PositiveFloat | None = Field(
        default=None, description="before pooling: 1x1 conv to ratio x width (no bias) + BatchNorm + GELU "
                                  "(the unified architecture's extra transform, 1.5)")
    widths: list[PositiveInt] | None = Field(
        default=None, min_length=2, max_length=2,
        description="efficientvit head: [conv width before pooling, hidden width after it] (LowFormer 1536, 1600)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data  # head: linear

    @model_validator(mode="after")
    def _widths_for_efficientvit(self) -> HeadConfig:
        if self.type == "efficientvit" and self.widths is None:
            raise ValueError("the efficientvit head needs widths: [conv width, hidden width], e.g. [1536, 1600]")
        if self.type != "efficientvit" and self.widths is not None:
            raise ValueError(f"widths is for the efficientvit head; a {self.type} head has none (remove it)")
        if self.type == "efficientvit" and self.transform_ratio:
            raise ValueError("the efficientvit head has its own conv before pooling (widths[0]); remove "
                             "transform_ratio")
        return self

    def pooled_dim(self, dim: int) -> int:
        """The width after pooling: ``dim``, or ``transform_ratio`` x ``dim`` with the extra transform, or the
        efficientvit head's conv width."""
        if self.widths is not None:
            return self.widths[0]
        return int(self.transform_ratio * dim) if self.transform_ratio else dim

    def cost(self, dim: int, num_classes: int, tokens: int = 1) -> Cost:
        """``tokens``: the final feature map's H x W (only the extra transform runs before pooling)."""
        transform = Cost()
        if self.transform_ratio or self.widths is not None:  # bias-free 1x1 conv on every token + BatchNorm
            transform = linear_cost(dim, self.pooled_dim(dim), tokens, bias=False) + Cost(2 * self.pooled_dim(dim))
            dim = self.pooled_dim(dim)
        norm = transform + (self.norm.cost(dim) if self.norm else Cost())
        if num_classes == 0:
            return norm
        if self.type == "linear":
            return norm + linear_cost(dim, num_classes, 1)
        if self.type == "efficientvit":
            hidden = self.widths[1]
            return (norm + linear_cost(dim, hidden, 1, bias=False) + self.hidden_norm.cost(hidden)
                    + linear_cost(hidden, num_classes, 1))
        hidden = int(self.ratio * dim)
        return (norm + linear_cost(dim, hidden, 1) + Cost(ACTIVATION_PARAMS.get(self.act, 0))
                + self.hidden_norm.cost(hidden) + linear_cost(hidden, num_classes, 1))

    def build_classifier(self, dim: int, num_classes: int) -> nn.Module:
        from torch import nn

        from .nn.parts import MlpHead
        if num_classes == 0:
            return nn.Identity()
        if self.type == "linear":
            return nn.Linear(dim, num_classes)
        if self.type == "efficientvit":
            return MlpHead(dim, self.widths[1], num_classes, self.act, self.hidden_norm, self.drop, fc1_bias=False,
                           norm_first=True)
        return MlpHead(dim, int(self.ratio * dim), num_classes, self.act, self.hidden_norm, self.hidden_drop)
