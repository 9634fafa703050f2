"""Token mixers: one module per family, each with its nn.Module, config model and cost formula.

Importing this package registers every mixer type and layout symbol.
"""

from . import (  # noqa: F401  (registration side effects)
    attention,
    basic,
    conv,
    dcnv3,
    focal,
    gfnet,
    halo,
    hornet,
    hyena,
    inception,
    sr_attention,
    swin,
    transnext,
)
from .base import (
    MIXERS,
    SYMBOLS,
    MixerCheckError,
    MixerConfig,
    MixerContext,
    register_mixer,
    register_symbol,
    resolve_symbol,
    symbol_names,
)

__all__ = ["MIXERS", "SYMBOLS", "MixerCheckError", "MixerConfig", "MixerContext", "register_mixer",
           "register_symbol", "resolve_symbol", "symbol_names"]
