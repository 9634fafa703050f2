"""The HorNet macro (Rao et al., "HorNet", NeurIPS 2022; github.com/raoyongming/HorNet ``hornet.py``).

stem: 4x4 stride-4 conv (bias) + channels-first LN; stages 2-4 start with LN + 2x2 stride-2 conv (bias);
blocks are ConvNeXt-like with two residuals, ``x = x + drop_path(gamma1 * mixer(norm1(x)))`` then
``x = x + drop_path(gamma2 * mlp(norm2(x)))`` where norm2 and the MLP (Linear C -> 4C, GELU, Linear
4C -> C, keys ``pwconv1``/``pwconv2``) run on channels-last tensors; the head pools, applies LN and a
linear classifier. Layer-scale init 1e-6 (``gamma1``, ``gamma2``). Init: trunc-normal(0.02) on every
conv/linear weight, zero biases; mixers then apply their own init (GF's complex filter).

Keys inside a block equal the official ones (``norm1``, ``gnconv``, ``norm2``, ``pwconv1``, ``pwconv2``,
``gamma1``, ``gamma2``); around them composer's layout applies: ``stem.{0,1}`` (official
``downsample_layers.0``), ``stages.i.downsample.{0,1}`` (``downsample_layers.i``), ``stages.i.blocks.j``
(``stages.i.j``), ``head.norm`` (``norm``), ``head.fc`` (``head``). ``load(..., source="hornet")`` renames.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from ..channel.mlp import Mlp
from ..cost_types import conv_cost, conv_out
from ..layers import Layout, Scale, to_layout
from ..mixers.base import MixerConfig
from ..parts import LN
from .base import Macro, Part, Shape


class HorNetBlock(nn.Module):
    """HorNet block in its mixer's layout; the MLP branch always runs channels-last (as the official one)."""

    def __init__(self, dim: int, mixer: nn.Module, mlp: nn.Module, norm, layout: Layout, drop_path: float,
                 layer_scale: float | None, res_scale: float | None):
        super().__init__()
        self.layout = layout
        self.embeds_input = hasattr(mixer, "embed_block_input")  # see MetaFormerBlock
        self.norm1 = norm.build(dim, layout)
        self.gnconv = mixer  # the official key, whatever the mixer
        self.norm2 = norm.build(dim, "channels_last")
        if isinstance(mlp, Mlp):  # the official keys pwconv1 / act / pwconv2
            self.pwconv1, self.act, self.drop1, self.pwconv2, self.drop2 = (
                mlp.fc1, mlp.act, mlp.drop1, mlp.fc2, mlp.drop2)
            self.mlp = None
        else:
            self.mlp = mlp
        self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale))) if layer_scale is not None else None
        self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale))) if layer_scale is not None else None
        self.res_scale1 = Scale(dim, res_scale, layout) if res_scale is not None else nn.Identity()
        self.res_scale2 = Scale(dim, res_scale, "channels_last") if res_scale is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _channel(self, x):
        if self.mlp is not None:
            return self.mlp(x)
        return self.drop2(self.pwconv2(self.drop1(self.act(self.pwconv1(x)))))

    def forward(self, x):
        if self.embeds_input:
            x = self.gnconv.embed_block_input(x)
        y = self.gnconv(self.norm1(x))
        if self.gamma1 is not None:
            y = y * (self.gamma1.view(-1, 1, 1) if self.layout == "channels_first" else self.gamma1)
        x = self.res_scale1(x) + self.drop_path(y)
        x = to_layout(x, self.layout, "channels_last")
        y = self._channel(self.norm2(x))
        if self.gamma2 is not None:
            y = y * self.gamma2
        x = self.res_scale2(x) + self.drop_path(y)
        return to_layout(x, "channels_last", self.layout)


class HorNetMacro(Macro):
    name = "hornet"
    summary = "HorNet: 4x4/4 stem, LN + 2x2/2 downsampling, gnConv blocks with a channels-last GELU MLP"
    stem_kernel = 4
    down_kernel = 2

    def spec_defaults(self, data: dict) -> dict:
        return {
            "norm": LN,
            "stem_norm": LN,
            "downsample_norm": LN,
            "channel_mixer": {"type": "mlp", "ratio": 4, "act": "gelu", "bias": True},
            "layer_scale": 1e-6,
            "res_scale": None,
            "head": {"type": "linear", "norm": LN},
        }

    def stem(self, spec) -> Part:
        k = self.stem_kernel
        size = conv_out(spec.input_size, k, k, 0)
        dim = spec.widths[0]
        cost = conv_cost(spec.in_chans, dim, k, (size, size))
        if spec.stem_norm:
            cost += spec.stem_norm.cost(dim)

        def build():
            return nn.Sequential(nn.Conv2d(spec.in_chans, dim, k, stride=k),
                                 spec.stem_norm.build(dim, "channels_first") if spec.stem_norm else nn.Identity())

        return Part("stem", cost, (spec.in_chans, spec.input_size, spec.input_size), (dim, size, size), build)

    def downsample(self, spec, stage: int, in_shape: Shape) -> Part | None:
        if stage == 0:
            return None
        k = self.down_kernel
        cin, h, w = in_shape
        cout = spec.widths[stage]
        ho, wo = conv_out(h, k, k, 0), conv_out(w, k, k, 0)
        cost = conv_cost(cin, cout, k, (ho, wo))
        if spec.downsample_norm:
            cost += spec.downsample_norm.cost(cin)
        norm = spec.downsample_norm

        def build():
            return nn.Sequential(norm.build(cin, "channels_first") if norm else nn.Identity(),
                                 nn.Conv2d(cin, cout, k, stride=k))

        return Part("downsample", cost, in_shape, (cout, ho, wo), build)

    def block(self, spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float) -> Part:
        dim = shape[0]

        def make_block(module, layer_scale, res_scale):
            return HorNetBlock(dim, module, spec.channel_mixer.at_stage(stage).build(dim, "channels_last"), spec.norm,
                               mixer.layout, drop_path, layer_scale, res_scale)

        return self.block_part(spec, stage, index, shape, mixer, drop_path, make_block)
