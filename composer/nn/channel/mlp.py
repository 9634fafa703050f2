"""The torch modules of composer.channel.mlp (configs and costs live there)."""

from torch import nn

from ..layers import Layout, make_act


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
