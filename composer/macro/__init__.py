"""Macro families: stems, downsampling, blocks and heads. ``MACROS`` (:mod:`composer.registry`) maps a spec's
``macro`` to one."""

from ..registry import MACROS, register_macro
from .base import Macro, Part
from .focalnet import FocalNetMacro
from .hornet import HorNetMacro
from .lowformer import LowFormerMacro
from .metaformer import MetaFormerMacro
from .metanext import MetaNeXtMacro
from .pvt import PvtMacro
from .unified import UnifiedMacro

for _macro in (MetaFormerMacro, HorNetMacro, PvtMacro, UnifiedMacro, MetaNeXtMacro, FocalNetMacro, LowFormerMacro):
    register_macro(_macro)

__all__ = ["MACROS", "Macro", "Part", "register_macro"]
