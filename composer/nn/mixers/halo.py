"""The torch modules of composer.mixers.halo (configs and costs live there)."""

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

from ..layers import cached_table


def _outside(size: int, block: int, halo: int, device: torch.device) -> torch.Tensor:
    """(blocks along an axis of ``size``, w) bool: the window positions that fall outside the map."""
    win = block + 2 * halo
    offsets = torch.arange(win, device=device) - halo  # window position -> map position, minus the block start
    pos = torch.arange((size + block - 1) // block, device=device)[:, None] * block + offsets
    return (pos < 0) | (pos >= size)


def _key_is_padding(height: int, width: int, block: int, halo: int, device: torch.device) -> torch.Tensor:
    """(num_blocks, 1, w²) bool, True where a key of a block's window lies outside the H x W map (in the halo's
    zero padding or in the padding up to a multiple of the block); broadcasts over (B, heads, blocks, b², w²)."""
    win = block + 2 * halo
    rows, cols = _outside(height, block, halo, device), _outside(width, block, halo, device)
    return (rows[:, None, :, None] | cols[None, :, None, :]).reshape(-1, 1, win * win)


def _offset_index(block: int, win: int, device: torch.device) -> torch.Tensor:
    """offset (b, w) with offset[q, k] = (w - 1) + k - q, the table column of a query at position q of its block
    and a key at position k of its window: a gather along the last axis of (.., b, 2w-1) picks it. Made per
    device on first use (not buffers), so a model built on the meta device and materialised works."""
    query = torch.arange(block, device=device)[:, None]
    return (win - 1) + torch.arange(win, device=device)[None, :] - query


_key_is_padding_cached = cached_table(_key_is_padding)
_offset_index_cached = cached_table(_offset_index)


@torch.jit.ignore
def _cached_key_is_padding(height: int, width: int, block: int, halo: int, device: torch.device) -> torch.Tensor:
    return _key_is_padding_cached(height, width, block, halo, device)


@torch.jit.ignore
def _cached_offset_index(block: int, win: int, device: torch.device) -> torch.Tensor:
    return _offset_index_cached(block, win, device)


def _pick(logits: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(.., b, 2w-1) -> (.., b, w): entry [.., q, offset[q, k]] (a gather: exact, and TorchScript indexes no
    tensors after an ellipsis)."""
    return logits.gather(-1, offset.expand(logits.shape[:-1] + offset.shape[-1:]))


class RelativeLogits(nn.Module):
    """Query-related relative position logits q·height_rel[(w-1) + ky - qy] + q·width_rel[(w-1) + kx - qx]
    (one (2w - 1, d) table per axis, shared by the heads; timm's / STM-Evaluation's ``PosEmbedRel``).

    Each table meets the queries in one matmul, q (.., b, b, d) @ tableᵀ -> (.., b, b, 2w - 1), and the
    (query, key) pairs then pick their offset's column (a gather, no arithmetic): HW·d·(2w - 1) MACs per axis
    and head."""

    def __init__(self, block: int, win: int, head_dim: int):
        super().__init__()
        self.block, self.win = block, win
        self.height_rel = nn.Parameter(torch.empty(2 * win - 1, head_dim))
        self.width_rel = nn.Parameter(torch.empty(2 * win - 1, head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.height_rel.device.type == "meta":
            return
        std = self.height_rel.shape[1] ** -0.5  # the reference: randn · d^-1/2
        nn.init.normal_(self.height_rel, std=std)
        nn.init.normal_(self.width_rel, std=std)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """q (B, heads, blocks, b², d) -> logits (B, heads, blocks, b², w²)."""
        b = self.block
        if torch.jit.is_scripting():  # TorchScript: no cache (see cached_table)
            offset = _offset_index(b, self.win, q.device)
        else:
            offset = _cached_offset_index(b, self.win, q.device)
        q = q.unflatten(-2, (b, b))  # (.., qy, qx, d)
        along_w = _pick(q @ self.width_rel.transpose(0, 1), offset)  # (.., qy, qx, kx)
        along_h = q.transpose(-3, -2) @ self.height_rel.transpose(0, 1)  # (.., qx, qy, 2w - 1)
        along_h = _pick(along_h, offset).transpose(-3, -2)  # (.., qy, qx, ky)
        return (along_h.unsqueeze(-1) + along_w.unsqueeze(-2)).flatten(-2).flatten(-3, -2)


@register_notrace_module  # FX: the padding and block counts follow the map's shape
class HaloAttention(nn.Module):
    """Blocked local self-attention with a halo on a (B, H, W, C) map (see the module docstring)."""

    def __init__(self, dim: int, heads: int, block: int, halo: int, qkv_bias: bool, mask_padding: bool,
                 attn_drop: float, proj_drop: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.block, self.halo, self.win = block, halo, block + 2 * halo
        self.mask_padding = mask_padding
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Conv2d(dim, 2 * dim, 1, bias=qkv_bias)
        self.pos_embed = RelativeLogits(block, self.win, self.head_dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, height, width, c = x.shape
        b, h, w, heads, d = self.block, self.halo, self.win, self.heads, self.head_dim
        nh, nw = (height + b - 1) // b, (width + b - 1) // b
        pad_h, pad_w = nh * b - height, nw * b - width
        # queries: (B, heads, blocks, b², d), blocks row-major, pixels row-major inside a block
        q = F.pad(self.q(x), (0, 0, 0, pad_w, 0, pad_h))
        q = q.reshape(bsz, nh, b, nw, b, heads, d).permute(0, 5, 1, 3, 2, 4, 6).reshape(bsz, heads, nh * nw, b * b, d)
        # keys / values: the w x w window around each block, cut from the zero-padded map
        kv = F.pad(self.kv(x.permute(0, 3, 1, 2)), (h, h + pad_w, h, h + pad_h))
        kv = kv.unfold(2, w, b).unfold(3, w, b)  # (B, 2C, nh, nw, w, w)
        kv = kv.reshape(bsz, heads, 2 * d, nh * nw, w * w).permute(0, 1, 3, 4, 2)
        k, v = kv.split(d, dim=-1)
        attn = (q * self.scale) @ k.transpose(-1, -2) + self.pos_embed(q)  # position logits unscaled
        if self.mask_padding:
            # -inf: every query's window holds its own block's real pixels, so no row is all padding
            if torch.jit.is_scripting():
                padding = _key_is_padding(height, width, b, h, x.device)
            else:
                padding = _cached_key_is_padding(height, width, b, h, x.device)
            attn = attn.masked_fill(padding, float("-inf"))
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = attn @ v  # (B, heads, blocks, b², d)
        out = out.reshape(bsz, heads, nh, nw, b, b, d).permute(0, 2, 4, 3, 5, 1, 6).reshape(bsz, nh * b, nw * b, c)
        return self.proj_drop(self.proj(out[:, :height, :width]))
