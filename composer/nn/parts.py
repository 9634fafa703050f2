"""The torch modules of composer.parts (configs and costs live there)."""

from typing import TYPE_CHECKING

from torch import nn

from .layers import make_act

if TYPE_CHECKING:  # the config side imports this module to build; importing it back would be a circle
    from ..parts import NormConfig


class MlpHead(nn.Module):
    """fc1 -> act -> norm -> dropout -> fc2 (MetaFormer's MlpHead; keys fc1, norm, fc2); ``norm_first``:
    fc1 -> norm -> act (EfficientViT's / LowFormer's head)."""

    norm_first: bool

    def __init__(self, dim: int, hidden: int, num_classes: int, act: str, norm: "NormConfig", drop: float,
                 fc1_bias: bool = True, norm_first: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=fc1_bias)
        self.act = make_act(act)
        self.norm = norm.build(hidden, "channels_last")
        self.head_drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.norm_first = norm_first

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(self.norm(x)) if self.norm_first else self.norm(self.act(x))
        return self.fc2(self.head_drop(x))
