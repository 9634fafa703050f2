"""Tensor layouts, named without importing torch (the spec, Plan and cost layers stay torch-free)."""

from typing import Literal

Layout = Literal["channels_first", "channels_last"]
"""``channels_first`` is (B, C, H, W); ``channels_last`` is (B, H, W, C), the token layout."""
