"""The MetaFormer macro (Yu et al., "MetaFormer Baselines for Vision"; timm ``metaformer.py``).

stem: 7x7 stride-4 conv (bias) + norm; stages 2-4 start with a pre-norm 3x3 stride-2 conv; blocks are
pre-norm residual ``x = res_scale(x) + layer_scale(drop_path(mixer(norm1(x))))`` then the same with the
MLP; the head pools, normalises and classifies (MLP head or linear). Init: trunc-normal(0.02) on every
conv/linear weight, zero biases. State-dict keys equal timm's.
"""

from __future__ import annotations

from ..cost_types import conv_cost, conv_out
from ..mixers.base import MixerConfig
from ..parts import LN, LN_NOBIAS
from .base import Macro, Part, Shape


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

        def build():
            from ..nn.macro.metaformer import Stem

            return Stem(spec.in_chans, dim, self.stem_kernel, self.stem_stride, self.stem_padding, spec.stem_norm)

        return Part("stem", cost, (spec.in_chans, spec.input_size, spec.input_size), (dim, size, size), build)

    def downsample(self, spec, stage: int, in_shape: Shape) -> Part | None:
        if stage == 0:
            return None
        cin, h, w = in_shape
        cout = spec.widths[stage]
        ho, wo = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        cost = conv_cost(cin, cout, 3, (ho, wo))
        if spec.downsample_norm:
            cost += spec.downsample_norm.cost(cin)

        def build():
            from ..nn.macro.metaformer import Downsampling

            return Downsampling(cin, cout, spec.downsample_norm)

        return Part("downsample", cost, in_shape, (cout, ho, wo), build)

    def block(self, spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float) -> Part:
        dim = shape[0]

        def make_block(module, layer_scale, res_scale):
            from ..nn.macro.metaformer import MetaFormerBlock

            return MetaFormerBlock(dim, module, spec.channel_mixer.at_stage(stage).build(dim, mixer.layout), spec.norm,
                                   mixer.layout, drop_path, layer_scale, res_scale)

        return self.block_part(spec, stage, index, shape, mixer, drop_path, make_block)
