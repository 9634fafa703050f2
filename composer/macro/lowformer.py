"""The LowFormer macro (Nottebaum et al., "LowFormer: Hardware Efficient Design for Convolutional Transformer
Backbones", WACV 2025; github.com/altair199797/LowFormer ``lowformer_model.py``; timm ``lowformer.py``).

Five stages at strides 2, 4, 8, 16, 32, as the official backbone's ``stage0`` ... ``stage4``:

* stem: 3x3 stride-2 conv (no bias) + BatchNorm + hardswish (keys ``stem.conv``, ``stem.norm``); stage 0 has no
  downsampling, its blocks (if any) run at the stem's width;
* stages 1-4 start with a stride-2 fused MBConv (3x3 conv to round(C_in · ``downsample_ratio``) + BN +
  hardswish, 1x1 conv + BN; no residual);
* blocks: a conv-block mixer (``FMB``, ``MBConv``) forms the block by itself, ``x + drop_path(mixer(x))``
  (LowFormer's first stages); any other mixer sits in the LowFormer block,
  ``x = x + drop_path(mixer(norm1(x)))``, ``x = x + drop_path(mlp(norm2(x)))`` (GroupNorm(1) eps 1e-5, a 1x1-conv
  GELU MLP, ratio 4), then ``x = x + drop_path(local(x))`` with the local branch a fused MBConv (bias, ratio 4)
  below 256 channels and an MBConv (bias, ratio 4) from 256 on, as the official ``LowFormerBlock``;
* head: EfficientViT's (``head.type: efficientvit``): 1x1 conv to widths[0] + BN + hardswish, pooling, Linear
  (no bias) to widths[1] + LayerNorm + hardswish, Linear to the classes;
* init: trunc-normal(0.02) on every conv / linear / transposed-conv weight, zero biases (the official
  ``init_modules``).

Stages may have depth 0 (LowFormer-B0's stages 1-2 are their downsampling only). ``composer.weights.load``
takes the official checkpoints (``source="lowformer"``) and timm's (``source="timm"``).
"""

from __future__ import annotations

from ..cost_types import Cost, conv_cost, conv_out
from ..mixers.base import MixerConfig, MixerContext
from ..mixers.mbconv import (
    BN,
    FusedMBConvConfig,
    MBConvConfig,
    expanded,
    fused_mbconv_cost,
    mbconv_cost,
)
from ..parts import NormConfig
from ..perstage import pick
from .base import Macro, Part, Shape, memo_mixer_cost

GN1 = NormConfig(type="groupnorm1", bias=True, eps=1e-5)
LOCAL_RATIO = 4
"""Expansion of the LowFormer block's local branch (the official ``expand_ratio``)."""
LOCAL_FUSED_BELOW = 256
"""Widths below this get a fused MBConv as the local branch, wider ones an MBConv (the official rule)."""


def local_branch(dim: int, in_hw: tuple[int, int]) -> tuple[str, int, Cost]:
    """(kind, hidden width, cost) of the LowFormer block's local branch at ``dim`` channels."""
    hidden = expanded(dim, LOCAL_RATIO)
    if dim < LOCAL_FUSED_BELOW:
        return "fused", hidden, fused_mbconv_cost(dim, dim, hidden, 3, 1, in_hw, bias=True)
    return "mbconv", hidden, mbconv_cost(dim, dim, hidden, 3, 1, in_hw, bias=True)


class LowFormerMacro(Macro):
    name = "lowformer"
    summary = ("LowFormer: 3x3/2 stem, stride-2 fused-MBConv downsampling, conv-block stages, then "
               "attention + MLP + local-conv blocks, EfficientViT head")
    first_conv = "stem.conv"
    empty_stages = True
    downsample_expands = True

    def spec_defaults(self, data: dict) -> dict:
        return {
            "norm": GN1,
            "stem_norm": BN,
            "downsample_norm": BN,
            "downsample_ratio": 4.0,
            "channel_mixer": {"type": "mlp", "ratio": 4, "act": "gelu", "bias": True},
            "layer_scale": None,
            "res_scale": None,
            "head": {"type": "efficientvit", "widths": [1536, 1600], "norm": None, "act": "hardswish",
                     "hidden_norm": {"type": "layernorm", "eps": 1e-5}},
        }

    def stem(self, spec) -> Part:
        size = conv_out(spec.input_size, 3, 2, 1)
        dim = spec.widths[0]
        cost = conv_cost(spec.in_chans, dim, 3, (size, size), bias=False)
        if spec.stem_norm:
            cost += spec.stem_norm.cost(dim)

        def build():
            from ..nn.mixers.mbconv import ConvNormAct

            return ConvNormAct(spec.in_chans, dim, 3, 2, norm=spec.stem_norm, act="hardswish")

        return Part("stem", cost, (spec.in_chans, spec.input_size, spec.input_size), (dim, size, size), build)

    def check(self, spec) -> list[tuple[str, tuple]]:
        problems = []
        for stage in range(1, spec.num_stages):  # stage i's downsampling expands the width of stage i - 1
            cin, ratio = spec.widths[stage - 1], pick(spec.downsample_ratio, stage)
            if ratio is not None and expanded(cin, ratio) < 1:
                problems.append((f"stage {stage}: downsample_ratio {ratio} leaves round({cin}·{ratio}) = "
                                 f"{expanded(cin, ratio)} hidden channels; it must give at least 1",
                                 ("downsample_ratio",)))
        return problems

    def downsample(self, spec, stage: int, in_shape: Shape) -> Part | None:
        if stage == 0:
            return None
        cin, h, w = in_shape
        cout = spec.widths[stage]
        hidden = expanded(cin, pick(spec.downsample_ratio, stage))
        norm = spec.downsample_norm
        cost = fused_mbconv_cost(cin, cout, hidden, 3, 2, (h, w), bias=False, norm=False)
        if norm:
            cost += norm.cost(hidden) + norm.cost(cout)

        def build():
            from ..nn.mixers.mbconv import FusedMBConv

            return FusedMBConv(cin, cout, hidden, 3, 2, False, "hardswish", norm)

        return Part("downsample", cost, in_shape, (cout, conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)), build,
                    {"hidden": hidden})

    def block(self, spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float) -> Part:
        dim, h, w = shape
        if isinstance(mixer, (FusedMBConvConfig, MBConvConfig)):
            return self._conv_block(spec, stage, index, shape, mixer, drop_path)
        kind, hidden, local = local_branch(dim, (h, w))

        def make_block(module, layer_scale, res_scale):
            from ..nn.macro.lowformer import LowFormerBlock
            from ..nn.mixers.mbconv import FusedMBConv, MBConv

            local_cls = FusedMBConv if kind == "fused" else MBConv
            return LowFormerBlock(dim, module, spec.channel_mixer.at_stage(stage).build(dim, mixer.layout), spec.norm,
                                  mixer.layout, drop_path, layer_scale, res_scale,
                                  local_cls(dim, dim, hidden, 3, 1, True, "hardswish", BN))

        part = self.block_part(spec, stage, index, shape, mixer, drop_path, make_block)
        part.cost = part.cost + local
        part.info["local_cost"] = local
        return part

    def _conv_block(self, spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float) -> Part:
        dim = shape[0]
        ctx = MixerContext.at(spec, stage, index, shape)
        layer_scale, res_scale = pick(spec.layer_scale, stage), pick(spec.res_scale, stage)
        mixer_cost = memo_mixer_cost(mixer, ctx)
        scales = Cost(sum(dim for value in (layer_scale, res_scale) if value is not None))

        def build():
            from ..nn.macro.lowformer import ConvBlock

            module = mixer.build(ctx)
            module.mixer_config = mixer
            return ConvBlock(dim, module, drop_path, layer_scale, res_scale)

        return Part("block", mixer_cost + scales, shape, shape, build,
                    {"mixer": mixer, "mixer_cost": mixer_cost, "channel_cost": Cost(), "drop_path": drop_path,
                     "layout": "channels_first", "buffer_bytes": mixer.buffer_bytes(ctx)})
