"""The torch modules of composer.parts (configs and costs live there)."""

from typing import TYPE_CHECKING

from torch import nn

from .layers import make_act

if TYPE_CHECKING:  # the config side imports this module to build; importing it back would be a circle
    from ..parts import NormConfig


class MlpHead(nn.Module):
    """fc1 -> act -> norm -> dropout -> fc2 (MetaFormer's MlpHead; keys fc1, norm, fc2)."""

    def __init__(self, dim: int, hidden: int, num_classes: int, act: str, norm: "NormConfig", drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_act(act)
        self.norm = norm.build(hidden, "channels_last")
        self.head_drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(self.head_drop(self.norm(self.act(self.fc1(x)))))
