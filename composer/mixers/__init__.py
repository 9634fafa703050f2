"""Token mixers: one module per family, each with its config model and cost formula (the nn.Modules live in
``composer/nn/mixers``).

Importing this package registers every built-in mixer type and layout symbol in :data:`MIXERS` and
:data:`SYMBOLS` (:mod:`composer.registry`). Plugins use the same public API::

    from composer.mixers import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol
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
    lowtention,
    mbconv,
    sr_attention,
    swin,
    transnext,
)
from .base import (
    MIXERS,
    SYMBOLS,
    AttentionHeads,
    MixerCheckError,
    MixerConfig,
    MixerContext,
    Symbol,
    register_mixer,
    register_symbol,
    resolve_symbol,
    symbol_names,
)

__all__ = ["MIXERS", "SYMBOLS", "AttentionHeads", "MixerCheckError", "MixerConfig", "MixerContext", "Symbol",
           "register_mixer", "register_symbol", "resolve_symbol", "symbol_names"]
