"""Small building blocks shared by the macros and mixers: activations, norms, scales.

State-dict names follow timm (``act.scale``/``act.bias`` for StarReLU, ``scale`` for Scale, ``weight``/``bias``
for norms) so that compiled models load timm and official checkpoints without renaming.
"""

from functools import lru_cache, wraps

import torch
import torch.nn.functional as F
from torch import nn

from ..cost_types import ACTIVATION_PARAMS  # noqa: F401  (re-exported beside the activations it counts)
from ..layout import Layout


class StarReLU(nn.Module):
    """s * relu(x)**2 + b with one learnable scalar s and b each (MetaFormer baselines; init 1 and 0)."""

    def __init__(self, scale_value: float = 1.0, bias_value: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), scale_value))
        self.bias = nn.Parameter(torch.full((1,), bias_value))

    def forward(self, x):
        return self.scale * F.relu(x) ** 2 + self.bias


class SquaredReLU(nn.Module):
    def forward(self, x):
        return torch.square(F.relu(x))


ACTIVATIONS = {
    "star_relu": StarReLU,
    "squared_relu": SquaredReLU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "relu6": nn.ReLU6,
    "identity": nn.Identity,
}


def make_act(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class Scale(nn.Module):
    """Per-channel learnable scale (layer scale, res scale); ``scale`` has shape (C,)."""

    def __init__(self, dim: int, init_value: float, layout: Layout = "channels_first"):
        super().__init__()
        self.channels_first = layout == "channels_first"
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x):
        return x * (self.scale.view(-1, 1, 1) if self.channels_first else self.scale)


class LayerNorm(nn.Module):
    """LayerNorm over channels in either layout; ``bias=False`` gives timm's *NoBias variants."""

    def __init__(self, dim: int, eps: float = 1e-6, bias: bool = True, layout: Layout = "channels_last"):
        super().__init__()
        self.dim, self.eps, self.channels_first = dim, eps, layout == "channels_first"
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        if self.channels_first:
            x = x.permute(0, 2, 3, 1)
            x = F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
            return x.permute(0, 3, 1, 2)
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)


class GroupNorm1(nn.Module):
    """"Modified LayerNorm" of PoolFormer: normalise over (C, H, W) together, per-channel affine."""

    def __init__(self, dim: int, eps: float = 1e-6, bias: bool = True, layout: Layout = "channels_first"):
        super().__init__()
        self.eps, self.channels_first = eps, layout == "channels_first"
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        if self.channels_first:
            return F.group_norm(x, 1, self.weight, self.bias, self.eps)
        return F.group_norm(x.permute(0, 3, 1, 2), 1, self.weight, self.bias, self.eps).permute(0, 2, 3, 1)


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that also accepts the channels-last layout."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, layout: Layout = "channels_first"):
        super().__init__(dim, eps=eps, affine=True)
        if not bias:
            self.bias = None
        self.channels_first = layout == "channels_first"

    def forward(self, x):
        # nn.BatchNorm2d's forward written out (running statistics with momentum), as TorchScript takes no
        # super().forward
        if not self.channels_first:
            x = x.permute(0, 3, 1, 2)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:   # a cumulative average, as PyTorch's
                factor = 1.0 / float(self.num_batches_tracked)
        y = F.batch_norm(x, self.running_mean if not self.training or self.track_running_stats else None,
                         self.running_var if not self.training or self.track_running_stats else None,
                         self.weight, self.bias, self.training or self.running_mean is None, factor, self.eps)
        return y if self.channels_first else y.permute(0, 2, 3, 1)


NORMS = {"layernorm": LayerNorm, "groupnorm1": GroupNorm1, "batchnorm": BatchNorm}


def to_layout(x: torch.Tensor, current: str, wanted: str) -> torch.Tensor:  # str, not Layout: TorchScript
    if current == wanted:
        return x
    return x.permute(0, 2, 3, 1) if wanted == "channels_last" else x.permute(0, 3, 1, 2)


def fx_tracing() -> bool:
    """True while torch.fx traces symbolically: its proxies cannot take part in a Python ``if``, so size checks
    that raise a clear error in eager mode are skipped then. Call it only outside TorchScript:
    ``if not torch.jit.is_scripting(): if not fx_tracing(): ...`` (TorchScript skips such a block)."""
    return torch.fx._symbolic_trace.is_fx_symbolic_tracing()


def cached_table(fn):
    """lru_cache for the constant index / mask tables a forward pass needs (window partitions, relative-position
    indices), bypassed while torch.compile traces (dynamo would ignore the cache with a warning; in a compiled
    graph the table is folded in anyway).

    TorchScript compiles neither the cache nor ``*args``: a module calls the plain function when
    ``torch.jit.is_scripting()`` and, otherwise, this cached one through a ``@torch.jit.ignore`` wrapper with the
    table's own signature (see nn/mixers/swin.py)."""
    cached = lru_cache(maxsize=64)(fn)

    @wraps(fn)
    def table(*args):
        return fn(*args) if torch.compiler.is_compiling() else cached(*args)

    del table.__wrapped__  # TorchScript must not compile the original through this wrapper
    return table
