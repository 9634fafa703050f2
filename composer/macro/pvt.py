"""The PVT-style macro of TransNeXt (Shi, CVPR 2024; github.com/DaiShiResearch/TransNeXt ``transnext.py``,
after PVTv2): overlapping patch embeddings, pre-norm blocks without layer scale, a norm after every stage.

* stem (``patch_embed1``): 7x7 stride-4 conv (padding 3, bias) + LN (eps 1e-5, ``stem_norm``);
* stages 2-4 start with the previous stage's norm (``norm{i}``, the block norm: LN eps 1e-6) and an overlapping
  3x3 stride-2 conv (padding 1, bias) + LN (eps 1e-5, ``downsample_norm``): ``stages.i.downsample.{pre_norm,
  proj, norm}``;
* blocks: ``x = x + drop_path(attn(norm1(x)))``, ``x = x + drop_path(mlp(norm2(x)))``, keys ``norm1``, ``attn``,
  ``norm2``, ``mlp`` (ConvGLU, ratio [8, 8, 4, 4]);
* head: the last stage's norm (``norm4``, on every token: ``head.global_pool.norm``), mean over tokens, Linear;
* init: trunc-normal(0.02) on linears, normal(0, sqrt(2 / fan_out)) on convs, zero biases, then each mixer's
  own init (query embedding, learnable tokens, local bias, temperature).

In this macro ``A`` is aggregated attention and ``M`` TransNeXt's full attention (composer/mixers/transnext.py).
With ``sr_ratio`` unset, aggregated attention pools every stage to the last stage's map (input / 32: 7x7 at
224), halved when the last stage uses aggregated attention too (4x4 at 256 for A-A-A-A), as the paper sets it
(appendix D.6; the official sr_ratios 8, 4, 2 and 16, 8, 4, 2). A-A-A-A at 224 (7x7 last map) is rejected:
its pool would be degenerate. An explicit ``sr_ratio`` (normal mode) or ``pool_size`` (linear mode) overrides
the rule. ``load(..., source="transnext")`` renames the official keys.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..cost_types import conv_cost, conv_out
from ..mixers.base import MixerCheckError, MixerConfig, MixerContext
from ..parts import LN, NormConfig
from .base import Macro, Part, Shape

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn

LN_EPS5 = NormConfig(type="layernorm", bias=True, eps=1e-5)


def _modules():
    """composer.nn.macro.pvt, imported when a model is built: planning stays torch-free."""
    from ..nn.macro import pvt

    return pvt


def _spec_error(spec, path, message):
    from ..spec.errors import SpecError  # the spec package imports the macros

    return SpecError.at(path, message, spec._locations)


class PvtMacro(Macro):
    name = "pvt"
    first_conv = "stem.proj"
    summary = "PVT / TransNeXt: overlapping patch embeddings, pre-norm blocks, ConvGLU, a norm after each stage"
    stem_kernel, stem_stride = 7, 4
    down_kernel, down_stride = 3, 2

    def spec_defaults(self, data: dict) -> dict:
        return {
            "norm": LN,
            "stem_norm": LN_EPS5,
            "downsample_norm": LN_EPS5,
            "channel_mixer": {"type": "conv_glu", "ratio": 4, "act": "gelu"},
            "layer_scale": None,
            "res_scale": None,
            "head": {"type": "linear", "norm": LN},
        }

    def stem(self, spec) -> Part:
        k, s = self.stem_kernel, self.stem_stride
        size = conv_out(spec.input_size, k, s, k // 2)
        dim = spec.widths[0]
        cost = conv_cost(spec.in_chans, dim, k, (size, size))
        if spec.stem_norm:
            cost += spec.stem_norm.cost(dim)
        return Part("stem", cost, (spec.in_chans, spec.input_size, spec.input_size), (dim, size, size),
                    lambda: _modules().PatchEmbed(spec.in_chans, dim, k, s, spec.stem_norm))

    def downsample(self, spec, stage: int, in_shape: Shape) -> Part | None:
        if stage == 0:
            return None
        k, s = self.down_kernel, self.down_stride
        cin, h, w = in_shape
        cout = spec.widths[stage]
        ho, wo = conv_out(h, k, s, k // 2), conv_out(w, k, s, k // 2)
        cost = spec.norm.cost(cin) + conv_cost(cin, cout, k, (ho, wo))  # the previous stage's norm, the conv
        if spec.downsample_norm:
            cost += spec.downsample_norm.cost(cout)
        return Part("downsample", cost, in_shape, (cout, ho, wo),
                    lambda: _modules().PatchEmbed(cin, cout, k, s, spec.downsample_norm, pre_norm=spec.norm))

    def maps(self, spec) -> list[tuple[int, int]]:
        """The feature-map size of every stage at ``input_size``."""
        side = conv_out(spec.input_size, self.stem_kernel, self.stem_stride, self.stem_kernel // 2)
        sides = [side]
        for _ in range(1, spec.num_stages):
            sides.append(conv_out(sides[-1], self.down_kernel, self.down_stride, self.down_kernel // 2))
        return [(s, s) for s in sides]

    def resolve(self, spec, stage: int, mixer: MixerConfig) -> MixerConfig:
        """Aggregated attention without sr_ratio / pool_size gets the paper's pool (appendix D.6): the last
        stage's map in every stage (7x7 at 224), or half of it when the last stage uses aggregated attention
        too (4x4 at 256); a last-stage map with no such halving makes that pool degenerate: a SpecError."""
        if mixer.type != "aggregated_attention" or mixer.sr_ratio is not None or mixer.pool_size is not None:
            return mixer
        last = spec.num_stages - 1
        symbols = spec.stage_symbols()[last]
        side = self.maps(spec)[last][0]
        if any(spec.symbol_type(symbol) == "aggregated_attention" for symbol in symbols):
            if side < 2 or side % 2:
                why = (f"a {side}x{side} map leaves an empty pool" if side < 2 else
                       f"a {side}x{side} map has no integer halving, so the pool would be degenerate "
                       f"({side // 2}x{side // 2} overlapping cells; pooling to {side}x{side} would put the "
                       "window's features into the softmax twice)")
                raise _spec_error(spec, ("layout",), (
                    f"stage {last} ({symbols[0]}, {side}x{side} map at input_size {spec.input_size}): aggregated "
                    f"attention in the last stage pools every stage to half the last stage's map, and {why}. Use "
                    f"an input_size whose last-stage map is even (e.g. 256), full attention (M) in stage {last}, or "
                    f"set mixers.{symbols[0]}.sr_ratio / pool_size explicitly"))
            side //= 2
        return mixer.model_copy(update={"pool_size": side})

    def block(self, spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float) -> Part:
        dim = shape[0]
        mixer = self.resolve(spec, stage, mixer)
        try:
            mixer.check(MixerContext.at(spec, stage, index, shape))
        except MixerCheckError as exc:
            symbol = spec.stage_symbols()[stage][index]
            raise _spec_error(spec, ("input_size",), f"stage {stage} ({symbol}, width {dim}, {shape[1]}x{shape[2]} "
                                                     f"map at input_size {spec.input_size}): {exc}") from None
        channel = spec.channel_mixer.at_stage(stage)

        def make_block(module, layer_scale, res_scale):
            return _modules().PvtBlock(dim, module, channel.build(dim, mixer.layout), spec.norm, mixer.layout,
                                       drop_path, layer_scale, res_scale)

        return self.block_part(spec, stage, index, shape, mixer, drop_path, make_block)

    def head(self, spec, in_shape: Shape) -> Part:
        dim = in_shape[0]
        return Part("head", spec.head.cost(dim, spec.num_classes), in_shape, (spec.num_classes or dim, 1, 1),
                    lambda: _modules().PvtHead(dim, spec.num_classes, spec.head))

    def init_layer(self, module: nn.Conv2d | nn.Linear) -> None:
        """TransNeXt's init: trunc-normal(0.02) linears, He-normal (fan-out) convs, zero biases."""
        from timm.layers import trunc_normal_
        from torch import nn
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        else:
            trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
