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

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt
from timm.layers import trunc_normal_
from torch import nn

from ..cost_types import Cost, linear_cost
from ..layers import cached_table
from .base import AttentionHeads, MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

SHIFT_MASK_VALUE = -100.0  # the official additive mask between tokens of different regions (not -inf)


def _padded(size: int, window: int) -> int:
    return -(-size // window) * window


@cached_table
def _relative_position_index(window: int, device: torch.device) -> torch.Tensor:
    """(M², M²) row of the bias table for each (query, key) pair of a window, tokens row-major."""
    coords = torch.arange(window, device=device)
    ys, xs = coords.repeat_interleave(window), coords.repeat(window)  # (M²,) row-major
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


@cached_table
def _shift_mask(height: int, width: int, window: int, shift: int, device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    """(windows, M², M²) additive mask of the shifted windows of a (padded) H x W map: 0 within a region,
    -100 between regions; regions are the 3 x 3 grid of slices [0:-M], [-M:-s], [-s:] along each axis."""

    def regions(size: int) -> torch.Tensor:
        pos = torch.arange(size, device=device)
        return (pos >= size - window).long() + (pos >= size - shift).long()  # 0, 1, 2

    label = regions(height)[:, None] * 3 + regions(width)[None, :]  # (H, W)
    label = label.reshape(height // window, window, width // window, window).transpose(1, 2).reshape(-1, window ** 2)
    differ = label[:, :, None] != label[:, None, :]
    return torch.zeros(differ.shape, device=device, dtype=dtype).masked_fill(differ, SHIFT_MASK_VALUE)


class ShiftedWindowAttention(nn.Module):
    """Window attention with relative position bias on a (B, H, W, C) map, cyclically shifted by ``shift``
    (0: plain W-MSA). See the module docstring."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, qkv_bias: bool, attn_drop: float,
                 proj_drop: float):
        super().__init__()
        self.heads, self.head_dim, self.window, self.shift = heads, dim // heads, window, shift
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(torch.empty((2 * window - 1) ** 2, heads))
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.relative_position_bias_table.device.type != "meta":
            trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, device: torch.device) -> torch.Tensor:
        """(heads, M², M²)"""
        m2 = self.window ** 2
        index = _relative_position_index(self.window, device)
        return self.relative_position_bias_table[index.view(-1)].view(m2, m2, -1).permute(2, 0, 1)

    def attend(self, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Multi-head attention inside each window: (B·windows, M², C) -> (B·windows, M², C)."""
        bw, m2, c = windows.shape
        q, k, v = self.qkv(windows).reshape(bw, m2, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.position_bias(windows.device)
        if mask is not None:  # (windows, M², M²), the same for every image of the batch
            attn = (attn.view(-1, mask.shape[0], self.heads, m2, m2) + mask[:, None]).view(bw, self.heads, m2, m2)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(bw, m2, c)))

    def forward(self, x):
        b, height, width, c = x.shape
        m, s = self.window, self.shift
        hp, wp = _padded(height, m), _padded(width, m)
        x = F.pad(x, (0, 0, 0, wp - width, 0, hp - height))  # bottom / right, before the shift (official order)
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = x.reshape(b, hp // m, m, wp // m, m, c).transpose(2, 3).reshape(-1, m * m, c)
        mask = _shift_mask(hp, wp, m, s, x.device, x.dtype) if s else None
        out = self.attend(windows, mask)
        out = out.reshape(b, hp // m, wp // m, m, m, c).transpose(2, 3).reshape(b, hp, wp, c)
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))
        return out[:, :height, :width]


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
        return ShiftedWindowAttention(ctx.dim, self.heads(ctx.dim), self.window(ctx), self.shift(ctx),
                                      self.qkv_bias, self.attn_drop, self.proj_drop)

    def init_weights(self, module: nn.Module) -> None:
        module.reset_parameters()  # trunc-normal 0.02 bias table (the generic init only touches conv / linear)


register_symbol("Swin", "window_attention",
                doc="shifted-window attention, window 7, shift on odd blocks, relative position bias (U-Swin)")
