"""The torch modules of composer.mixers.halo (configs and costs live there)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...mixers.halo import _blocks
from ..layers import cached_table


@cached_table
def _key_is_padding(height: int, width: int, block: int, halo: int, device: torch.device) -> torch.Tensor:
    """(num_blocks, 1, w²) bool, True where a key of a block's window lies outside the H x W map (in the halo's
    zero padding or in the padding up to a multiple of the block); broadcasts over (B, heads, blocks, b², w²)."""
    win = block + 2 * halo
    offsets = torch.arange(win, device=device) - halo  # window position -> map position, minus the block start

    def outside(size: int) -> torch.Tensor:  # (blocks along this axis, w)
        pos = torch.arange(_blocks(size, block), device=device)[:, None] * block + offsets
        return (pos < 0) | (pos >= size)

    rows, cols = outside(height), outside(width)
    return (rows[:, None, :, None] | cols[None, :, None, :]).reshape(-1, 1, win * win)


@cached_table
def _offset_index(block: int, win: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(query (b, 1), offset (b, w)) with offset[q, k] = (w - 1) + k - q, the table row of a query at position q
    of its block and a key at position k of its window: ``logits[..., query, offset]`` picks it from (.., b, 2w-1).
    Made per device on first use (not buffers), so a model built on the meta device and materialised works."""
    query = torch.arange(block, device=device)[:, None]
    return query, (win - 1) + torch.arange(win, device=device)[None, :] - query


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

    def forward(self, q):
        """q (B, heads, blocks, b², d) -> logits (B, heads, blocks, b², w²)."""
        b = self.block
        query, offset = _offset_index(b, self.win, q.device)
        q = q.unflatten(-2, (b, b))  # (.., qy, qx, d)
        along_w = (q @ self.width_rel.transpose(0, 1))[..., query, offset]  # (.., qy, qx, kx)
        along_h = q.transpose(-3, -2) @ self.height_rel.transpose(0, 1)  # (.., qx, qy, 2w - 1)
        along_h = along_h[..., query, offset].transpose(-3, -2)  # (.., qy, qx, ky)
        return (along_h.unsqueeze(-1) + along_w.unsqueeze(-2)).flatten(-2).flatten(-3, -2)


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

    def forward(self, x):
        bsz, height, width, c = x.shape
        b, h, w, heads, d = self.block, self.halo, self.win, self.heads, self.head_dim
        nh, nw = _blocks(height, b), _blocks(width, b)
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
            attn = attn.masked_fill(_key_is_padding(height, width, b, h, x.device), -torch.finfo(attn.dtype).max)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = attn @ v  # (B, heads, blocks, b², d)
        out = out.reshape(bsz, heads, nh, nw, b, b, d).permute(0, 2, 4, 3, 5, 1, 6).reshape(bsz, nh * b, nw * b, c)
        return self.proj_drop(self.proj(out[:, :height, :width]))
