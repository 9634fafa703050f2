"""What every token mixer provides, and the registry of mixer types and layout symbols.

A mixer family is a config model (a pydantic model discriminated by ``type``) with its analytic cost, in
``composer/mixers/<family>.py``, and its ``nn.Module`` in ``composer/nn/mixers/<family>.py``, imported by
``build`` only: validating, planning and estimating never import torch. The config is the only thing the
rest of composer talks to::

    @register_mixer
    class SepConvConfig(MixerConfig):
        type: Literal["sep_conv"] = "sep_conv"
        kernel_size: PositiveInt = 7
        def cost(self, ctx): ...      # exact params and MACs, no tensors
        def build(self, ctx): ...     # the nn.Module

    register_symbol("Conv", "sep_conv")     # the name users write in a layout

``ctx`` (:class:`MixerContext`) says where the mixer sits: channels, feature-map size at the compiled
input resolution, stage and block index, macro. ``check(ctx)`` rejects a config that cannot work there
(e.g. heads that do not divide the width) before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

from ..cost_types import Cost
from ..layout import Layout
from ..registry import MIXERS, SYMBOLS, RegistryError, Symbol, register_symbol
from ..registry import register_mixer as _register_mixer

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


# slotted, not frozen: plans build two per block and frozen dataclasses construct ~4x slower; hashable by
# value (unsafe_hash) for the cost memo, so treat it as immutable
@dataclass(slots=True, unsafe_hash=True)
class MixerContext:
    """Where a mixer sits in the network."""

    dim: int
    height: int
    width: int
    stage: int = 0
    block: int = 0
    num_stages: int = 4
    depth: int = 1
    macro: str = "metaformer"
    input_size: int = 224

    @property
    def tokens(self) -> int:
        return self.height * self.width

    def without_block(self) -> tuple:
        """Everything but the block index (what the cost of most mixers depends on), as a hashable key."""
        return (self.dim, self.height, self.width, self.stage, self.num_stages, self.depth, self.macro,
                self.input_size)

    @classmethod
    def at(cls, spec, stage: int, block: int, shape: tuple[int, int, int]) -> MixerContext:
        """The context of block ``block`` of ``stage`` in ``spec``, whose input is ``shape`` (C, H, W)."""
        return cls(shape[0], shape[1], shape[2], stage, block, spec.num_stages, spec.depths[stage], spec.macro,
                   spec.input_size)


class MixerCheckError(ValueError):
    """A config that cannot work at its position; ``field`` names the config field to change
    (``None`` when the stage width is what has to change)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class MixerConfig(BaseModel):
    """Base of every token-mixer config. Subclasses set ``type`` as a ``Literal`` with a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # strict: no bool as int (YAML yes/no)

    type: str
    layout: ClassVar[Layout] = "channels_first"
    """The tensor layout the module takes and returns; blocks convert around it."""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    cost_formula: ClassVar[str] = ""
    """The closed form of ``cost`` in words/symbols for the docs catalogue (N tokens, C channels, ...)."""
    cost_depends_on_block: ClassVar[bool] = False
    """Set when ``cost`` reads ``ctx.block`` (e.g. a position embedding only in a stage's first block);
    otherwise plans reuse one block's cost for every equal block."""
    torchscript: ClassVar[bool] = True
    """The module compiles with ``torch.jit.script`` (timm's convention; ``composer check-mixer`` tests the claim)."""
    fx: ClassVar[bool] = True
    """The module traces with torch.fx (timm's FX feature extraction; leaves registered with
    ``timm.layers.register_notrace_module`` count as traceable). ``composer check-mixer`` tests the claim."""

    fixed_input_size: ClassVar[str] = ""
    """Why the module runs only at the input size it was compiled at (a table or filter sized to the map);
    empty when any size works. A model with such a mixer says ``fixed_input_size=True`` in its timm cfg."""

    def buffer_bytes(self, ctx: MixerContext) -> int:
        """Bytes of the non-parameter tensors the module allocates at ``ctx`` (index tables, masks) and the
        largest per-forward table it materialises; composer refuses to build what cannot fit in memory."""
        return 0

    def latency_key(self, ctx: MixerContext) -> dict:
        """What of ``ctx`` besides the shape and this config decides the module's speed (composer.latency keys
        its timings by it): the stage and resolution conventions, and the block index when the cost reads it.
        A mixer whose module depends on more of ctx (Swin's shift in odd blocks) adds it."""
        key = {"stage": ctx.stage, "num_stages": ctx.num_stages, "input_size": ctx.input_size}
        if self.cost_depends_on_block:
            key["block"] = ctx.block
        return key

    def check(self, ctx: MixerContext) -> None:
        """Raise :class:`MixerCheckError` if this config cannot be used at ``ctx``."""

    def cost(self, ctx: MixerContext) -> Cost:
        raise NotImplementedError

    def build(self, ctx: MixerContext) -> nn.Module:
        raise NotImplementedError

    def init_weights(self, module: nn.Module) -> None:
        """Called after the macro's generic init; mixers with an init of their own override this."""


class AttentionHeads:
    """For mixer configs with ``head_dim`` and ``num_heads`` fields: heads = ``num_heads``, or width / ``head_dim``."""

    def heads(self, dim: int) -> int:
        return self.num_heads or dim // self.head_dim

    def check_heads(self, ctx: MixerContext, any_num_heads: bool = False) -> None:
        """``any_num_heads``: the mixer projects to num_heads x head_dim channels (MetaFormer's attention), so
        an explicit num_heads need not divide the width."""
        if self.num_heads is None and ctx.dim % self.head_dim:
            raise MixerCheckError(f"width {ctx.dim} is not divisible by head_dim {self.head_dim}; choose a "
                                  f"width that is a multiple of {self.head_dim}, or set head_dim / num_heads")
        if self.num_heads is not None and ctx.dim % self.num_heads and not any_num_heads:
            raise MixerCheckError(f"width {ctx.dim} is not divisible by num_heads {self.num_heads}; choose a "
                                  f"num_heads that divides {ctx.dim} (and every other width it is used at)",
                                  "num_heads")


def register_mixer(cls: type[MixerConfig]) -> type[MixerConfig]:
    """Class decorator: register a mixer config under its ``type`` (:data:`composer.registry.MIXERS`). The
    config must subclass :class:`MixerConfig` and define ``cost`` and ``build``."""
    if not (isinstance(cls, type) and issubclass(cls, MixerConfig)):
        raise RegistryError(f"register_mixer takes a MixerConfig subclass, got {cls!r}")
    missing = [m for m in ("cost", "build") if getattr(cls, m) is getattr(MixerConfig, m)]
    if missing:
        raise RegistryError(f"{cls.__name__} must define {' and '.join(f'{m}(ctx)' for m in missing)}: the "
                            "exact params / MACs at ctx, and the nn.Module")
    return _register_mixer(cls)


def resolve_symbol(name: str, macro: str) -> Symbol | None:
    entries = SYMBOLS.get(name)
    if not entries:
        return None
    return entries.get(macro) or entries.get(None)


def symbol_names(macro: str | None = None) -> list[str]:
    return sorted(n for n, e in SYMBOLS.items() if macro is None or macro in e or None in e)


__all__ = ["MIXERS", "SYMBOLS", "AttentionHeads", "MixerCheckError", "MixerConfig", "MixerContext", "Symbol",
           "register_mixer", "register_symbol", "resolve_symbol", "symbol_names"]
