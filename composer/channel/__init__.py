"""Channel mixers (the block's second branch): MLP, TransNeXt's ConvGLU. ``CHANNEL_MIXERS`` is
:data:`composer.registry.CHANNEL_MIXERS`; ``register_channel_mixer`` adds one."""

from ..registry import CHANNEL_MIXERS, register_channel_mixer
from . import convglu  # noqa: F401  (registers conv_glu)
from .mlp import ChannelConfig, MlpConfig

__all__ = ["CHANNEL_MIXERS", "ChannelConfig", "MlpConfig", "register_channel_mixer"]
