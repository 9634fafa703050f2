"""The FocalNet macro (Yang et al., "Focal Modulation Networks", NeurIPS 2022; timm ``focalnet.py``).

stem: 4x4 stride-4 conv (bias) then a channels-first LayerNorm (eps 1e-5; keys ``stem.proj``, ``stem.norm``);
stages 2-4 start with a 2x2 stride-2 conv then the LayerNorm (post-norm, keys ``downsample.proj`` /
``downsample.norm``); blocks are pre-norm with two residuals, ``x = x + drop_path(mixer(norm1(x)))`` then
``x = x + drop_path(mlp(norm2(x)))`` (a 1x1-conv GELU MLP, ratio 4), all channels-first; after the last stage a
LayerNorm on the map (timm's ``norm``, here ``stages.3.norm``), then global pooling and a linear classifier.
Init: trunc-normal(0.02) on every conv / linear weight, zero biases. The token mixer's key is ``modulation``
(whatever the mixer); ``composer.weights.load(..., source="timm")`` renames ``layers.i`` to ``stages.i`` and
``norm`` to the last stage's norm.

Sizes: srf (small receptive field) = focal_level 2, lrf = 3; focal_window 3 at every stage.
"""

from __future__ import annotations

from ..cost_types import conv_cost, conv_out
from ..mixers.base import MixerConfig
from ..parts import NormConfig
from .base import Macro, Part, Shape

LN2D = NormConfig(type="layernorm", bias=True, eps=1e-5)


class FocalNetMacro(Macro):
    name = "focalnet"
    summary = "FocalNet: 4x4/4 stem + LN, 2x2/2 conv + LN downsampling, pre-norm blocks, a final LN on the map"
    first_conv = "stem.proj"

    def spec_defaults(self, data: dict) -> dict:
        return {
            "norm": LN2D,
            "stem_norm": LN2D,
            "downsample_norm": LN2D,
            "channel_mixer": {"type": "mlp", "ratio": 4, "act": "gelu", "bias": True},
            "layer_scale": None,
            "res_scale": None,
            "head": {"type": "linear", "norm": None},
        }

    def _patch_conv(self, cin: int, cout: int, k: int, in_hw: tuple[int, int], norm, kind: str,
                    in_shape: Shape) -> Part:
        ho, wo = conv_out(in_hw[0], k, k, 0), conv_out(in_hw[1], k, k, 0)
        cost = conv_cost(cin, cout, k, (ho, wo))
        if norm:
            cost += norm.cost(cout)

        def build():
            from ..nn.macro.focalnet import PatchConv

            return PatchConv(cin, cout, k, norm)

        return Part(kind, cost, in_shape, (cout, ho, wo), build)

    def stem(self, spec) -> Part:
        return self._patch_conv(spec.in_chans, spec.widths[0], 4, (spec.input_size, spec.input_size),
                                spec.stem_norm, "stem", (spec.in_chans, spec.input_size, spec.input_size))

    def downsample(self, spec, stage: int, in_shape: Shape) -> Part | None:
        if stage == 0:
            return None
        return self._patch_conv(in_shape[0], spec.widths[stage], 2, in_shape[1:], spec.downsample_norm,
                                "downsample", in_shape)

    def stage_norm(self, spec, stage: int, shape: Shape) -> Part | None:
        if stage != spec.num_stages - 1 or not spec.norm:
            return None
        norm = spec.norm

        def build():
            return norm.build(shape[0], "channels_first")

        return Part("norm", norm.cost(shape[0]), shape, shape, build)

    def block(self, spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float) -> Part:
        dim = shape[0]

        def make_block(module, layer_scale, res_scale):
            from ..nn.macro.focalnet import FocalNetBlock

            return FocalNetBlock(dim, module, spec.channel_mixer.at_stage(stage).build(dim, mixer.layout), spec.norm,
                                 mixer.layout, drop_path, layer_scale, res_scale)

        return self.block_part(spec, stage, index, shape, mixer, drop_path, make_block)
