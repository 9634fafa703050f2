"""Shifted-window attention (``Swin``): Swin Transformer's W-MSA / SW-MSA (Liu et al., ICCV 2021) as U-Swin of
"Demystify Transformers & Convolutions in Modern Image Deep Networks" (Hu et al., TPAMI 2025;
OpenGVLab/STM-Evaluation ``blocks/swin.py`` around timm's ``WindowAttention``). On (B, H, W, C) maps.

* The map is cut into non-overlapping M x M windows (M = 7); multi-head self-attention runs inside each window:
  ``qkv`` (Linear C -> 3C, bias), heads of d = 32 channels, logits q·kᵀ·d^-1/2 + B, where B comes from a
  learnable ``relative_position_bias_table`` of ((2M-1)², heads) entries (trunc-normal 0.02) indexed by the
  pair's (Δy + M - 1)·(2M - 1) + (Δx + M - 1); softmax; ``proj`` (Linear C -> C, bias).
* Shift: blocks with an odd index inside their stage (``ctx.block``) roll the map by (-M//2, -M//2) first and
  back afterwards; the windows that then wrap around the border get -100 between tokens of different original
  regions (the 3 x 3 regions [0:-M], [-M:-s], [-s:] along each axis).
* When the map is not larger than the window (stage 4 at 224: 7 x 7), the window is clamped to the map and
  the shift disabled, as the official code does; the bias table then has (2·min(H, W) - 1)² rows. Window and
  shift are fixed when the module is built, for the stage's map at the spec's ``input_size``.

Maps that are not a multiple of the window are padded, as the official Swin code for dense prediction does
(microsoft/Swin-Transformer-Object-Detection, and STM-Evaluation's detection backbone): zeros at the bottom /
right up to a multiple of M, then the shift and its region mask computed on the padded map, attention, and a
crop back to H x W. The padded tokens are NOT masked in unshifted windows (the reference attends to them: their
keys are the qkv bias). Padding rather than rejecting keeps every input size usable, at the reference's
semantics; the padded windows are computed, so the cost counts them (N' = ceil(H/M)·M · ceil(W/M)·M tokens in
qkv, the attention products and proj). timm 1.0 pads after rolling instead, which differs from the official
order only on such maps.

State-dict keys equal timm's / the official ones (``qkv``, ``proj``, ``relative_position_bias_table``); the
relative-position index and the shift mask are made on first use per device, not stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from ..cost_types import Cost, linear_cost
from .base import AttentionHeads, MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


def _padded(size: int, window: int) -> int:
    return -(-size // window) * window


@register_mixer
class WindowAttentionConfig(AttentionHeads, MixerConfig):
    type: Literal["window_attention"] = "window_attention"
    window_size: PositiveInt = Field(default=7, description="window side M (clamped to maps not larger than it)")
    shift_size: NonNegativeInt | None = Field(
        default=None, description="cyclic shift of odd blocks in a stage (default: window_size // 2; 0: never)")
    head_dim: PositiveInt = Field(default=32, description="channels per head (heads = width / head_dim)")
    num_heads: PositiveInt | None = Field(default=None, description="heads (default: width / head_dim)")
    qkv_bias: bool = True
    attn_drop: float = Field(default=0.0, ge=0.0, lt=1.0)
    proj_drop: float = Field(default=0.0, ge=0.0, lt=1.0)
    layout = "channels_last"
    summary = ("(shifted) window attention: M x M windows, relative position bias, cyclic shift on every "
               "second block with a -100 region mask (Swin, U-Swin)")
    paper = ("Swin Transformer: Hierarchical Vision Transformer using Shifted Windows (Liu et al. 2021); "
             "Demystify Transformers & Convolutions in Modern Image Deep Networks (Hu et al. 2025)")
    cost_formula = ("params 4C² + 4C + (2M-1)²·heads; MACs 4N'C² (qkv, proj) + 2N'M²C (q·kᵀ, attn·v); "
                    "M = min(window, H, W), N' = HW padded to whole M x M windows (= HW when M divides the map)")

    def window(self, ctx: MixerContext) -> int:
        """The window at ctx: clamped to the map when the map is not larger than it (official)."""
        return min(self.window_size, ctx.height, ctx.width)

    def shift(self, ctx: MixerContext) -> int:
        if min(ctx.height, ctx.width) <= self.window_size or ctx.block % 2 == 0:
            return 0
        return self.window_size // 2 if self.shift_size is None else self.shift_size

    def latency_key(self, ctx: MixerContext) -> dict:
        return {**super().latency_key(ctx), "shift": self.shift(ctx)}  # odd blocks roll the map and mask

    def check(self, ctx: MixerContext) -> None:
        self.check_heads(ctx)
        if self.shift_size is not None and self.shift_size >= self.window_size:
            raise MixerCheckError(f"shift_size {self.shift_size} must be smaller than window_size "
                                  f"{self.window_size} (official default: window_size // 2)", "shift_size")

    def cost(self, ctx: MixerContext) -> Cost:
        c, m = ctx.dim, self.window(ctx)
        tokens = _padded(ctx.height, m) * _padded(ctx.width, m)
        return (linear_cost(c, 3 * c, tokens, self.qkv_bias) + linear_cost(c, c, tokens)  # qkv, proj
                + Cost((2 * m - 1) ** 2 * self.heads(c), 2 * tokens * m * m * c))  # bias table; q·kᵀ, attn·v

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.swin import ShiftedWindowAttention
        return ShiftedWindowAttention(ctx.dim, self.heads(ctx.dim), self.window(ctx), self.shift(ctx),
                                      self.qkv_bias, self.attn_drop, self.proj_drop)

    def init_weights(self, module: nn.Module) -> None:
        module.reset_parameters()  # trunc-normal 0.02 bias table (the generic init only touches conv / linear)


register_symbol("Swin", "window_attention",
                doc="shifted-window attention, window 7, shift on odd blocks, relative position bias (U-Swin)")
