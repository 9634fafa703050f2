"""The torch modules of composer.mixers.conv (configs and costs live there)."""

from torch import nn

from ..layers import make_act


class SepConv(nn.Module):
    """Inverted separable convolution (MobileNetV2 style): 1x1 up, act, k x k depthwise, act, 1x1 down."""

    def __init__(self, dim: int, mid: int, kernel_size: int, act1: str, act2: str, bias: bool):
        super().__init__()
        self.pwconv1 = nn.Conv2d(dim, mid, 1, bias=bias)
        self.act1 = make_act(act1)
        self.dwconv = nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, groups=mid, bias=bias)
        self.act2 = make_act(act2)
        self.pwconv2 = nn.Conv2d(mid, dim, 1, bias=bias)

    def forward(self, x):
        return self.pwconv2(self.act2(self.dwconv(self.act1(self.pwconv1(x)))))


class DWConv(nn.Module):
    """1x1 projection, k x k depthwise conv, 1x1 projection; no activation (U-DWConv's spatial mixer)."""

    def __init__(self, dim: int, kernel_size: int, bias: bool):
        super().__init__()
        self.pwconv1 = nn.Conv2d(dim, dim, 1, bias=bias)
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias)
        self.pwconv2 = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x):
        return self.pwconv2(self.dwconv(self.pwconv1(x)))
