"""Channel mixers (the block's second branch): MLP, TransNeXt's ConvGLU."""

from . import convglu  # noqa: F401  (registers conv_glu)
from .mlp import CHANNEL_MIXERS, ChannelConfig, MlpConfig

__all__ = ["CHANNEL_MIXERS", "ChannelConfig", "MlpConfig"]
