"""The MetaNeXt macro of InceptionNeXt (Yu et al., "InceptionNeXt: When Inception Meets ConvNeXt", CVPR 2024;
timm ``inception_next.py``).

stem: 4x4 stride-4 conv (bias) + BatchNorm; stages 2-4 start with BatchNorm + a 2x2 stride-2 conv (bias);
blocks have one residual, ``x = x + drop_path(gamma * mlp(norm(mixer(x))))``: the token mixer on the block's
input (no norm before it), BatchNorm, a two-layer 1x1-conv MLP (GELU; ratio 4, 4, 4, 3 by stage) and
layer scale (init 1e-6); the head pools and applies an MLP head (Linear C -> 3C, GELU, LayerNorm eps 1e-6,
Linear -> classes) with no norm before it. Init: trunc-normal(0.02) on every conv / linear weight, zero biases.

Keys equal timm's but for the head: timm's ``head.fc1`` / ``head.norm`` / ``head.fc2`` (``MlpClassifierHead``)
are composer's ``head.fc.fc1`` / ``head.fc.norm`` / ``head.fc.fc2`` (the MLP head is the classifier, as in
timm's MetaFormer); ``composer.weights.load(..., source="timm")`` renames them. Any token mixer fits: one whose
layout is channels-last gets its input permuted, and the block runs channels-first around it.
"""

from __future__ import annotations

from ..cost_types import Cost
from ..mixers.base import MixerConfig, MixerContext
from ..parts import NormConfig
from ..perstage import pick
from .base import Macro, Part, Shape, memo_mixer_cost
from .hornet import HorNetMacro

BN = NormConfig(type="batchnorm")


class MetaNeXtMacro(Macro):
    name = "metanext"
    summary = "MetaNeXt (InceptionNeXt): 4x4/4 stem + BN, BN + 2x2/2 downsampling, mixer -> BN -> conv MLP blocks"
    first_conv = "stem.0"

    def spec_defaults(self, data: dict) -> dict:
        widths = data.get("widths")
        n = len(widths) if isinstance(widths, list) else 4
        return {
            "norm": BN,
            "stem_norm": BN,
            "downsample_norm": BN,
            "channel_mixer": {"type": "mlp", "ratio": [4] * (n - 1) + [3], "act": "gelu", "bias": True},
            "layer_scale": 1e-6,
            "res_scale": None,
            "head": {"type": "mlp", "norm": None, "ratio": 3, "act": "gelu",
                     "hidden_norm": {"type": "layernorm", "eps": 1e-6}},
        }

    # the stem (4x4/4 conv + norm) and the downsampling (norm + 2x2/2 conv) are HorNet's, with BatchNorm
    stem_kernel, down_kernel = 4, 2
    stem = HorNetMacro.stem
    downsample = HorNetMacro.downsample

    def block(self, spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float) -> Part:
        dim, h, w = shape
        ctx = MixerContext.at(spec, stage, index, shape)
        layer_scale, res_scale = pick(spec.layer_scale, stage), pick(spec.res_scale, stage)
        mixer_cost = memo_mixer_cost(mixer, ctx)
        channel_mixer = spec.channel_mixer.at_stage(stage)
        channel = channel_mixer.cost(dim, h * w)
        scales = Cost(sum(dim for value in (layer_scale, res_scale) if value is not None))
        rest = spec.norm.cost(dim) + channel + scales   # one norm: between the mixer and the MLP

        def build():
            from ..nn.macro.metanext import MetaNeXtBlock

            module = mixer.build(ctx)
            module.mixer_config = mixer
            return MetaNeXtBlock(dim, module, channel_mixer.build(dim, "channels_first"), spec.norm, mixer.layout,
                                 drop_path, layer_scale, res_scale)

        return Part("block", mixer_cost + rest, shape, shape, build,
                    {"mixer": mixer, "mixer_cost": mixer_cost, "channel_cost": channel, "drop_path": drop_path,
                     "layout": "channels_first", "buffer_bytes": mixer.buffer_bytes(ctx)})
