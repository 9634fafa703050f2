"""The torch modules of composer.mixers.swin (configs and costs live there)."""

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module, trunc_normal_
from torch import nn

from ...facts import SHIFT_MASK_VALUE
from ..layers import cached_table


def _relative_position_index(window: int, device: torch.device) -> torch.Tensor:
    """(M², M²) row of the bias table for each (query, key) pair of a window, tokens row-major."""
    coords = torch.arange(window, device=device)
    ys, xs = coords.repeat_interleave(window), coords.repeat(window)  # (M²,) row-major
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def _regions(size: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """(size,) the shifted-window region of each position along an axis: 0, 1 or 2."""
    pos = torch.arange(size, device=device)
    return (pos >= size - window).long() + (pos >= size - shift).long()


def _shift_mask(height: int, width: int, window: int, shift: int, device: torch.device,
                dtype: torch.dtype, value: float = SHIFT_MASK_VALUE) -> torch.Tensor:
    """(windows, M², M²) additive mask of the shifted windows of a (padded) H x W map: 0 within a region,
    -100 between regions; regions are the 3 x 3 grid of slices [0:-M], [-M:-s], [-s:] along each axis."""
    label = _regions(height, window, shift, device)[:, None] * 3 + _regions(width, window, shift, device)[None, :]
    label = label.reshape(height // window, window, width // window, window).transpose(1, 2)
    label = label.reshape(-1, window * window)
    differ = label[:, :, None] != label[:, None, :]
    return torch.zeros(differ.shape, device=device, dtype=dtype).masked_fill(differ, value)


_relative_position_index_cached = cached_table(_relative_position_index)
_shift_mask_cached = cached_table(_shift_mask)


@torch.jit.ignore
def _cached_relative_position_index(window: int, device: torch.device) -> torch.Tensor:
    return _relative_position_index_cached(window, device)


@torch.jit.ignore
def _cached_shift_mask(height: int, width: int, window: int, shift: int, device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    return _shift_mask_cached(height, width, window, shift, device, dtype)


@register_notrace_module  # FX: the padding follows the map's shape
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
        m2 = self.window * self.window  # an int under TorchScript (** gives a float)
        if torch.jit.is_scripting():  # TorchScript: no cache (see cached_table)
            index = _relative_position_index(self.window, device)
        else:
            index = _cached_relative_position_index(self.window, device)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, height, width, c = x.shape
        m, s = self.window, self.shift
        hp, wp = (height + m - 1) // m * m, (width + m - 1) // m * m  # padded up to whole windows
        x = F.pad(x, (0, 0, 0, wp - width, 0, hp - height))  # bottom / right, before the shift (official order)
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = x.reshape(b, hp // m, m, wp // m, m, c).transpose(2, 3).reshape(-1, m * m, c)
        mask: torch.Tensor | None = None
        if s:
            if torch.jit.is_scripting():
                mask = _shift_mask(hp, wp, m, s, x.device, x.dtype)  # the default value: TorchScript reads no globals
            else:
                mask = _cached_shift_mask(hp, wp, m, s, x.device, x.dtype)
        out = self.attend(windows, mask)
        out = out.reshape(b, hp // m, wp // m, m, m, c).transpose(2, 3).reshape(b, hp, wp, c)
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))
        return out[:, :height, :width]
