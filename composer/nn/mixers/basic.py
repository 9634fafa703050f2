"""The torch modules of composer.mixers.basic (configs and costs live there)."""

import torch
from torch import nn

from ..layers import fx_tracing


class Pooling(nn.Module):
    """PoolFormer's mixer: average pooling minus the input (the block's residual adds the input back)."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


class RandomMixing(nn.Module):
    """A frozen random token-mixing matrix (RandFormer): row-softmax of U[0, 1) noise, N x N."""

    def __init__(self, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.random_matrix = nn.Parameter(torch.softmax(torch.rand(num_tokens, num_tokens), dim=-1),
                                          requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        b, h, w, c = x.shape
        if not torch.jit.is_scripting():
            if not fx_tracing() and h * w != self.num_tokens:
                raise ValueError(f"RandomMixing was compiled for {self.num_tokens} tokens but got {h}x{w}="
                                 f"{h * w}; compile the spec at this input_size")
        x = torch.einsum("mn,bnc->bmc", self.random_matrix, x.reshape(b, h * w, c))
        return x.reshape(b, h, w, c)
