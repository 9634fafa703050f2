"""What a macro (stem / downsampling / block / head conventions) provides to the Plan.

A macro turns a validated spec into :class:`Part` objects, each holding its shapes, its analytic cost and
a ``build`` callable; the Plan stores the parts and building the model is a walk over them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..cost_types import Cost
from ..mixers.base import MixerConfig, MixerContext
from ..perstage import pick

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn

    from ..spec.model import Spec

Shape = tuple[int, int, int]  # (C, H, W)


@dataclass
class Part:
    """One module of the network as the Plan knows it, before anything is allocated."""

    kind: str  # stem | downsample | block | head
    cost: Cost
    in_shape: Shape
    out_shape: Shape
    build: Callable[[], nn.Module]
    info: dict[str, Any] = field(default_factory=dict)


_MIXER_COSTS: dict = {}


def memo_mixer_cost(mixer: MixerConfig, ctx: MixerContext) -> Cost:
    """``mixer.cost(ctx)``, memoized: blocks with equal configs and contexts cost the same, so a stage of
    nine blocks (and a search's thousands of similar samples) computes each closed form once. ``ctx.block``
    takes part only for mixers that declare ``cost_depends_on_block``. The returned Cost is shared: never
    mutate it."""
    where = ctx if mixer.cost_depends_on_block else ctx.without_block()
    try:
        cost = _MIXER_COSTS.get((mixer, where))
    except TypeError:  # a config holding an unhashable value: no memo
        return mixer.cost(ctx)
    if cost is None:
        if len(_MIXER_COSTS) > 8192:
            _MIXER_COSTS.clear()
        cost = _MIXER_COSTS[(mixer, where)] = mixer.cost(ctx)
    return cost


@lru_cache(maxsize=8192)
def _branch_costs(norm, channel_mixer, dim: int, tokens: int, layer_scale, res_scale) -> tuple[Cost, Cost]:
    """(channel mixer, everything of a block but its token mixer): two norms, the scales, the channel mixer."""
    channel = channel_mixer.cost(dim, tokens)
    scales = Cost(sum(2 * dim for value in (layer_scale, res_scale) if value is not None))
    return channel, norm.cost(dim) * 2 + scales + channel


BlockFactory = Callable[..., "nn.Module"]  # (mixer module, layer_scale, res_scale) -> block


class Macro:
    name: str = ""
    summary: str = ""
    first_conv: str = "stem.conv"
    empty_stages: bool = False
    """Stages may have depth 0 (downsampling only), as LowFormer-B0's first stages."""
    downsample_expands: bool = False
    """The downsampling is an inverted residual whose expansion ``spec.downsample_ratio`` sets."""
    """The module path of the stem's first convolution (timm's ``first_conv``, e.g. for in_chans adaptation)."""

    def spec_defaults(self, data: dict) -> dict:
        """Values for the spec fields this macro fixes by convention (the user may override any)."""
        return {}

    def check(self, spec: Spec) -> list[tuple[str, tuple]]:
        """(message, spec field to change) for what this macro's own conventions cannot build in ``spec``: a width
        they derive that leaves no channel. The Plan checks it before any part is costed."""
        return []

    def stem(self, spec: Spec) -> Part:
        raise NotImplementedError

    def downsample(self, spec: Spec, stage: int, in_shape: Shape) -> Part | None:
        raise NotImplementedError

    def stage_norm(self, spec: Spec, stage: int, shape: Shape) -> Part | None:
        """A norm after the stage's blocks (``stages.i.norm``), or None (the default)."""
        return None

    def block(self, spec: Spec, stage: int, index: int, shape: Shape, mixer: Any, drop_path: float) -> Part:
        raise NotImplementedError

    def block_part(self, spec: Spec, stage: int, index: int, shape: Shape, mixer: MixerConfig, drop_path: float,
                   make_block: BlockFactory) -> Part:
        """A pre-norm two-branch block (token mixer, then channel mixer, each with optional layer / res
        scale): its cost, and ``make_block(mixer_module, layer_scale, res_scale)`` to build it."""
        dim, h, w = shape
        ctx = MixerContext.at(spec, stage, index, shape)
        layer_scale, res_scale = pick(spec.layer_scale, stage), pick(spec.res_scale, stage)
        mixer_cost = memo_mixer_cost(mixer, ctx)
        channel_mixer = spec.channel_mixer.at_stage(stage)
        channel, rest = _branch_costs(spec.norm, channel_mixer, dim, h * w, layer_scale, res_scale)

        def build():
            module = mixer.build(ctx)
            module.mixer_config = mixer  # lets init_weights find each mixer's own init
            return make_block(module, layer_scale, res_scale)

        return Part("block", mixer_cost + rest, shape, shape, build,
                    {"mixer": mixer, "mixer_cost": mixer_cost, "channel_cost": channel, "drop_path": drop_path,
                     "layout": mixer.layout, "buffer_bytes": mixer.buffer_bytes(ctx)})

    def head(self, spec: Spec, in_shape: Shape) -> Part:
        """Global average pool, ``head.norm``, then the classifier of ``spec.head``."""
        dim = in_shape[0]

        def build():
            from ..nn.macro.base import Head

            return Head(dim, spec.num_classes, spec.head)

        return Part("head", spec.head.cost(dim, spec.num_classes, in_shape[1] * in_shape[2]), in_shape,
                    (spec.num_classes or spec.head.pooled_dim(dim), 1, 1), build)

    def stage(self, downsample: nn.Module, blocks: list[nn.Module], norm: nn.Module | None = None) -> nn.Module:
        from ..nn.macro.base import Stage
        return Stage(downsample, blocks, norm)

    def init_weights(self, model: nn.Module) -> None:
        """The reference initialisation, applied once to the whole built model: trunc-normal(0.02) on every
        conv / linear weight and zero biases (MetaFormer, HorNet, ...), then each mixer's own init."""
        from torch import nn
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                self.init_layer(module)
        for module in model.modules():
            config = getattr(module, "mixer_config", None)
            if config is not None:
                config.init_weights(module)

    def init_layer(self, module: nn.Conv2d | nn.Linear) -> None:
        """The generic init of one conv / linear layer; macros whose reference differs override this."""
        from timm.layers import trunc_normal_
        from torch import nn
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
