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

from ..cost_types import conv_cost, conv_out
from ..mixers.base import MixerConfig
from ..parts import LN
from .base import Macro, Part, Shape


class HorNetMacro(Macro):
    name = "hornet"
    summary = "HorNet: 4x4/4 stem, LN + 2x2/2 downsampling, gnConv blocks with a channels-last GELU MLP"
    stem_kernel = 4
    first_conv = "stem.0"
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
            from torch import nn

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
            from torch import nn

            return nn.Sequential(norm.build(cin, "channels_first") if norm else nn.Identity(),
                                 nn.Conv2d(cin, cout, k, stride=k))

        return Part("downsample", cost, in_shape, (cout, ho, wo), build)

    def block(self, spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float) -> Part:
        dim = shape[0]

        def make_block(module, layer_scale, res_scale):
            from ..nn.macro.hornet import HorNetBlock

            return HorNetBlock(dim, module, spec.channel_mixer.at_stage(stage).build(dim, "channels_last"), spec.norm,
                               mixer.layout, drop_path, layer_scale, res_scale)

        return self.block_part(spec, stage, index, shape, mixer, drop_path, make_block)
