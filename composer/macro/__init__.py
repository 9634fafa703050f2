"""Macro families: stems, downsampling, blocks and heads. ``MACROS`` maps a spec's ``macro`` to one."""

from .base import Macro, Part
from .hornet import HorNetMacro
from .metaformer import MetaFormerMacro
from .pvt import PvtMacro
from .unified import UnifiedMacro

MACROS: dict[str, Macro] = {m.name: m for m in (MetaFormerMacro(), HorNetMacro(), PvtMacro(), UnifiedMacro())}

__all__ = ["MACROS", "Macro", "Part"]
