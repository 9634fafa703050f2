"""The analytic cost of a piece of a network, in the convention of docs/flop-conventions.md."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)  # not frozen: frozen dataclasses construct 4x slower, and plans make many
class Cost:
    """Parameters and multiply-accumulates of one forward pass at batch 1.

    ``params`` counts every ``nn.Parameter`` (frozen ones included, buffers excluded), as
    ``sum(p.numel() for p in model.parameters())`` does. ``macs`` counts conv, linear, matmul and
    attention products (QK^T and AV), no norms, activations, softmax or element-wise terms. FFTs are
    kept apart in ``fft_macs`` (real FFT 1.25·N·log2 N MAC-equivalents), a float because of the log.
    """

    params: int = 0
    macs: int = 0
    fft_macs: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs, self.fft_macs + other.fft_macs)

    def __radd__(self, other):  # lets sum() start from 0
        return self if other == 0 else NotImplemented

    def __mul__(self, k: int) -> Cost:
        return Cost(self.params * k, self.macs * k, self.fft_macs * k)


ZERO = Cost()

ACTIVATION_PARAMS = {"star_relu": 2}
"""Learnable parameters of an activation by name (StarReLU's scale and bias); the others have none."""


def conv_cost(cin: int, cout: int, kernel: int | tuple[int, int], out_hw: tuple[int, int], groups: int = 1,
              bias: bool = True) -> Cost:
    """Cost of a 2-D convolution producing an ``out_hw`` map."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    weight = cout * (cin // groups) * kh * kw
    return Cost(weight + (cout if bias else 0), out_hw[0] * out_hw[1] * weight)


def linear_cost(cin: int, cout: int, tokens: int, bias: bool = True) -> Cost:
    """Cost of a linear layer (or 1x1 convolution) applied to ``tokens`` positions."""
    return Cost(cin * cout + (cout if bias else 0), tokens * cin * cout)


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def fft_cost(n: int, batch: int, real: bool = True) -> float:
    """MAC-equivalents of one FFT call on ``batch`` signals of ``n`` points (FFTW convention: a real transform
    is 2.5·n·log2 n flops, a complex one 5·n·log2 n; 2 flops per MAC), rounded to whole flops per call as the
    counted cross-check reports it."""
    if n <= 1:
        return 0.0
    return round(2 * batch * (1.25 if real else 2.5) * n * math.log2(n)) / 2
