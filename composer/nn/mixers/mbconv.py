"""The torch modules of composer.mixers.mbconv (configs and costs live there); keys as timm's ``lowformer.py``
and the official LowFormer code (``conv``, ``norm`` inside ``spatial_conv`` / ``inverted_conv`` / ``depth_conv`` /
``point_conv``)."""

from torch import nn

from ..layers import make_act


class ConvNormAct(nn.Module):
    """conv ('same' padding) -> norm -> act; a missing norm or act is an identity (keys ``conv``, ``norm``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False,
                 norm=None, act: str | None = None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self.norm = norm.build(cout, "channels_first") if norm is not None else nn.Identity()
        self.act = make_act(act) if act is not None else nn.Identity()

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class FusedMBConv(nn.Module):
    """k x k conv (stride) cin -> hidden + norm + act, then 1x1 conv hidden -> cout + norm (a NormConfig; None:
    no norms)."""

    def __init__(self, cin: int, cout: int, hidden: int, kernel: int, stride: int, bias: bool, act: str, norm):
        super().__init__()
        self.spatial_conv = ConvNormAct(cin, hidden, kernel, stride, bias=bias, norm=norm, act=act)
        self.point_conv = ConvNormAct(hidden, cout, 1, norm=norm)

    def forward(self, x):
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    """1x1 conv cin -> hidden + act, k x k depthwise (stride) + act, 1x1 conv hidden -> cout + BatchNorm."""

    def __init__(self, cin: int, cout: int, hidden: int, kernel: int, stride: int, bias: bool, act: str, norm):
        super().__init__()
        self.inverted_conv = ConvNormAct(cin, hidden, 1, bias=bias, act=act)
        self.depth_conv = ConvNormAct(hidden, hidden, kernel, stride, groups=hidden, bias=bias, act=act)
        self.point_conv = ConvNormAct(hidden, cout, 1, norm=norm)

    def forward(self, x):
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))
