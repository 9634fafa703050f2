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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..cost_types import Cost
from ..layout import Layout

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
    def buffer_bytes(self, ctx: MixerContext) -> int:
        """Bytes of the non-parameter tensors the module allocates at ``ctx`` (index tables, masks) and the
        largest per-forward table it materialises; composer refuses to build what cannot fit in memory."""
        return 0

    fixed_input_size: ClassVar[str] = ""
    """Why the module runs only at the input size it was compiled at (a table or filter sized to the map);
    empty when any size works. A model with such a mixer says ``fixed_input_size=True`` in its timm cfg."""
    """Set when ``cost`` reads ``ctx.block`` (e.g. a position embedding only in a stage's first block);
    otherwise plans reuse one block's cost for every equal block."""

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


MIXERS: dict[str, type[MixerConfig]] = {}


def register_mixer(cls: type[MixerConfig]) -> type[MixerConfig]:
    type_name = cls.model_fields["type"].default
    if not isinstance(type_name, str):
        raise TypeError(f"{cls.__name__}.type needs a string default (the discriminator value)")
    if type_name in MIXERS and MIXERS[type_name] is not cls:
        raise ValueError(f"mixer type {type_name!r} registered twice")
    MIXERS[type_name] = cls
    return cls


@dataclass(frozen=True)
class Symbol:
    """A layout symbol: shorthand for a mixer type plus default parameters, possibly per macro."""

    name: str
    type: str
    defaults: dict[str, Any] = field(default_factory=dict)
    macro: str | None = None  # None: every macro without a macro-specific entry
    doc: str = ""


SYMBOLS: dict[str, dict[str | None, Symbol]] = {}


def register_symbol(name: str, type_name: str, *, macro: str | None = None, doc: str = "", **defaults) -> None:
    SYMBOLS.setdefault(name, {})[macro] = Symbol(name, type_name, defaults, macro, doc)


def resolve_symbol(name: str, macro: str) -> Symbol | None:
    entries = SYMBOLS.get(name)
    if not entries:
        return None
    return entries.get(macro) or entries.get(None)


def symbol_names(macro: str | None = None) -> list[str]:
    return sorted(n for n, e in SYMBOLS.items() if macro is None or macro in e or None in e)
