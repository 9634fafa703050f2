"""Channel mixers (the block's second branch): MLP now, ConvGLU and others as they land."""

from .mlp import CHANNEL_MIXERS, ChannelConfig, MlpConfig

__all__ = ["CHANNEL_MIXERS", "ChannelConfig", "MlpConfig"]
