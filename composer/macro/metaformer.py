"""The MetaFormer macro (Yu et al., "MetaFormer Baselines for Vision"; timm ``metaformer.py``).

stem: 7x7 stride-4 conv (bias) + norm; stages 2-4 start with a pre-norm 3x3 stride-2 conv; blocks are
pre-norm residual ``x = res_scale(x) + layer_scale(drop_path(mixer(norm1(x))))`` then the same with the
MLP; the head pools, normalises and classifies (MLP head or linear). Init: trunc-normal(0.02) on every
conv/linear weight, zero biases. State-dict keys equal timm's.
"""

from __future__ import annotations

from timm.layers import DropPath
from torch import nn

from ..cost_types import conv_cost, conv_out
from ..layers import Layout, Scale
from ..mixers.base import MixerConfig
from ..parts import LN, LN_NOBIAS
from .base import Macro, Part, Shape


class Stem(nn.Module):
    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, padding: int, norm):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, dim, kernel, stride=stride, padding=padding)
        self.norm = norm.build(dim, "channels_first") if norm else nn.Identity()

    def forward(self, x):
        return self.norm(self.conv(x))


class Downsampling(nn.Module):
    """Pre-norm strided conv between stages (keys ``norm``, ``conv``)."""

    def __init__(self, in_dim: int, out_dim: int, norm):
        super().__init__()
        self.norm = norm.build(in_dim, "channels_first") if norm else nn.Identity()
        self.conv = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(self.norm(x))


class MetaFormerBlock(nn.Module):
    """Pre-norm block with optional res-scale and layer-scale on both branches, in the mixer's layout.

    The token mixer is registered as ``mixer_key`` (timm's ``token_mixer``; subclasses rename it to keep
    their reference's state-dict keys). A mixer module defining ``embed_block_input(x)`` (e.g. PVT's absolute
    position embedding) gets the block's input first, so what it adds reaches the residual and the norm."""

    mixer_key = "token_mixer"

    def __init__(self, dim: int, mixer: nn.Module, mlp: nn.Module, norm, layout: Layout, drop_path: float,
                 layer_scale: float | None, res_scale: float | None):
        super().__init__()
        self.layout = layout
        self.embeds_input = hasattr(mixer, "embed_block_input")

        def scale(value):
            return Scale(dim, value, layout) if value is not None else nn.Identity()

        self.norm1 = norm.build(dim, layout)
        self.add_module(self.mixer_key, mixer)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale1 = scale(layer_scale)
        self.res_scale1 = scale(res_scale)
        self.norm2 = norm.build(dim, layout)
        self.mlp = mlp
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale2 = scale(layer_scale)
        self.res_scale2 = scale(res_scale)

    def forward(self, x):
        mixer = self._modules[self.mixer_key]
        if self.embeds_input:
            x = mixer.embed_block_input(x)
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path1(mixer(self.norm1(x))))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))


class MetaFormerMacro(Macro):
    name = "metaformer"
    summary = "MetaFormer baselines (PoolFormerV2, ConvFormer, CAFormer, ...): 7x7/4 stem, pre-norm blocks"
    stem_kernel, stem_stride, stem_padding = 7, 4, 2

    def spec_defaults(self, data: dict) -> dict:
        widths = data.get("widths")
        n = len(widths) if isinstance(widths, list) else 4
        return {
            "norm": LN_NOBIAS,
            "stem_norm": LN_NOBIAS,
            "downsample_norm": LN_NOBIAS,
            "channel_mixer": {"type": "mlp", "ratio": 4, "act": "star_relu", "bias": False},
            "res_scale": [None] * max(n - 2, 0) + [1.0] * min(n, 2),  # stages 3-4 of the baselines
            "layer_scale": None,
            "head": {"type": "mlp", "norm": LN, "ratio": 4, "act": "squared_relu", "hidden_norm": LN},
        }

    def stem(self, spec) -> Part:
        size = conv_out(spec.input_size, self.stem_kernel, self.stem_stride, self.stem_padding)
        dim = spec.widths[0]
        cost = conv_cost(spec.in_chans, dim, self.stem_kernel, (size, size))
        if spec.stem_norm:
            cost += spec.stem_norm.cost(dim)
        return Part("stem", cost, (spec.in_chans, spec.input_size, spec.input_size), (dim, size, size),
                    lambda: Stem(spec.in_chans, dim, self.stem_kernel, self.stem_stride, self.stem_padding,
                                 spec.stem_norm))

    def downsample(self, spec, stage: int, in_shape: Shape) -> Part | None:
        if stage == 0:
            return None
        cin, h, w = in_shape
        cout = spec.widths[stage]
        ho, wo = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        cost = conv_cost(cin, cout, 3, (ho, wo))
        if spec.downsample_norm:
            cost += spec.downsample_norm.cost(cin)
        return Part("downsample", cost, in_shape, (cout, ho, wo),
                    lambda: Downsampling(cin, cout, spec.downsample_norm))

    def block(self, spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float) -> Part:
        dim = shape[0]

        def make_block(module, layer_scale, res_scale):
            return MetaFormerBlock(dim, module, spec.channel_mixer.at_stage(stage).build(dim, mixer.layout), spec.norm,
                                   mixer.layout, drop_path, layer_scale, res_scale)

        return self.block_part(spec, stage, index, shape, mixer, drop_path, make_block)
