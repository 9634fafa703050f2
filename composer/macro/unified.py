"""The unified architecture of "Demystify Transformers & Convolutions in Modern Image Deep Networks" (Hu et al.,
TPAMI 2025; github.com/OpenGVLab/STM-Evaluation ``classification/models/meta_arch.py``, ``MetaArch``).

One macro in which only the spatial token mixer (STM) changes, so that Halo, SR (PVT), Swin, DW and DCNv3
attention / convolution compare on equal terms:

* stem, total stride 4: 3x3 stride-2 conv (3 -> C/2, bias) + LN + GELU + 3x3 stride-2 conv (C/2 -> C, bias) + LN
  (``stem_norm``; LN eps 1e-6 over channels);
* stages 2-4 start with a bias-free 3x3 stride-2 conv + LN (``downsample_norm``): the norm after the conv;
* blocks: ``x = x + drop_path(gamma1 * mixer(norm1(x)))`` then ``x = x + drop_path(gamma2 * mlp(norm2(x)))``,
  layer scale 1e-6, MLP Linear C -> 4C (bias), GELU, Linear; the block norm is LN eps 1e-6 (the Swin and DW
  blocks); the Halo, PVT and DCN blocks use ``nn.LayerNorm``'s eps 1e-5, which their specs set with ``norm``;
* a LN (eps 1e-6) after every stage (``stages.i.norm``), so ``forward_stages`` gives the normalised maps the
  dense-prediction necks of the paper read;
* head: 1x1 conv to 1.5 C (no bias) + BatchNorm + GELU ("extra transform", ``head.transform_ratio``), global
  average pool, Linear;
* init: trunc-normal(0.02) on every conv / linear weight and zero biases, applied after the blocks are built
  (it overwrites inits inside the blocks, as MetaArch does), then each mixer's own ``init_weights``.

Keys are composer's (``stem.{0..4}``, ``stages.i.downsample.{0,1}``, ``stages.i.blocks.j.{norm1, token_mixer,
layer_scale1, norm2, mlp, layer_scale2}``, ``stages.i.norm``, ``head.global_pool.{conv, norm}``, ``head.fc``).
"""

from __future__ import annotations

from ..cost_types import conv_cost, conv_out
from ..parts import LN
from .base import Part, Shape
from .metaformer import MetaFormerMacro


class UnifiedMacro(MetaFormerMacro):
    """MetaFormer's pre-norm blocks (``block`` is inherited) with MetaArch's stem, downsampling, stage norms
    and head."""

    name = "unified"
    summary = ("unified architecture (Demystify Transformers & Convolutions): two-conv stem, 3x3/2 conv + LN "
               "downsampling, layer-scaled pre-norm blocks, LN after each stage, conv-BN-GELU head")
    stage_norm_config = LN

    def spec_defaults(self, data: dict) -> dict:
        return {
            "norm": LN,
            "stem_norm": LN,
            "downsample_norm": LN,
            "channel_mixer": {"type": "mlp", "ratio": 4, "act": "gelu", "bias": True},
            "layer_scale": 1e-6,
            "res_scale": None,
            "head": {"type": "linear", "norm": None, "transform_ratio": 1.5},
        }

    first_conv = "stem.0"

    def check(self, spec) -> list[tuple[str, tuple]]:
        if spec.widths[0] // 2 < 1:  # the stem's first conv has half the first stage's channels
            return [(f"width {spec.widths[0]} leaves the stem's first conv (widths[0] // 2 channels) none; the "
                     "unified macro needs widths[0] of at least 2", ("widths", 0))]
        return []

    def stem(self, spec) -> Part:
        dim, half = spec.widths[0], spec.widths[0] // 2
        s1 = conv_out(spec.input_size, 3, 2, 1)
        s2 = conv_out(s1, 3, 2, 1)
        norm = spec.stem_norm
        cost = conv_cost(spec.in_chans, half, 3, (s1, s1)) + conv_cost(half, dim, 3, (s2, s2))
        if norm:
            cost += norm.cost(half) + norm.cost(dim)

        def build():
            from torch import nn

            return nn.Sequential(
                nn.Conv2d(spec.in_chans, half, 3, stride=2, padding=1),
                norm.build(half, "channels_first") if norm else nn.Identity(),
                nn.GELU(),
                nn.Conv2d(half, dim, 3, stride=2, padding=1),
                norm.build(dim, "channels_first") if norm else nn.Identity())

        return Part("stem", cost, (spec.in_chans, spec.input_size, spec.input_size), (dim, s2, s2), build)

    def downsample(self, spec, stage: int, in_shape: Shape) -> Part | None:
        if stage == 0:
            return None
        cin, h, w = in_shape
        cout = spec.widths[stage]
        ho, wo = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        norm = spec.downsample_norm
        cost = conv_cost(cin, cout, 3, (ho, wo), bias=False)
        if norm:
            cost += norm.cost(cout)

        def build():
            from torch import nn

            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                                 norm.build(cout, "channels_first") if norm else nn.Identity())

        return Part("downsample", cost, in_shape, (cout, ho, wo), build)

    def stage_norm(self, spec, stage: int, shape: Shape) -> Part:
        norm = self.stage_norm_config
        return Part("norm", norm.cost(shape[0]), shape, shape, lambda: norm.build(shape[0], "channels_first"))
