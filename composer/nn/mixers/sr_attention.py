"""The torch modules of composer.mixers.sr_attention (configs and costs live there)."""

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from ...facts import SR_NORM_EPS
from ..layers import fx_tracing


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys / values come from an R x R stride-R reduction of a (B, H, W, C) map."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool, attn_drop: float, proj_drop: float,
                 pos_embed_hw: tuple[int, int] | None = None):
        super().__init__()
        self.num_heads, self.head_dim, self.sr_ratio = num_heads, dim // num_heads, sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=SR_NORM_EPS)
        else:
            self.sr = self.norm = None
        # the position embedding lives here (not in the block) so that its keys sit with the mixer's and its
        # cost is the mixer's; only a stage's first block has one
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *pos_embed_hw)) if pos_embed_hw else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.pos_embed is not None and self.pos_embed.device.type != "meta":
            trunc_normal_(self.pos_embed, std=0.02)

    def embed_block_input(self, x):
        """Add the absolute position embedding to the block's (B, H, W, C) input (identity without one)."""
        if self.pos_embed is None:
            return x
        if not torch.jit.is_scripting():
            if not fx_tracing() and x.shape[1:3] != self.pos_embed.shape[2:]:
                raise ValueError(f"this SR attention's position embedding was compiled for a "
                                 f"{self.pos_embed.shape[2]}x{self.pos_embed.shape[3]} map, got "
                                 f"{x.shape[1]}x{x.shape[2]}; compile the spec at that input_size")
        return x + self.pos_embed.permute(0, 2, 3, 1)

    def forward(self, x):
        b, h, w, c = x.shape
        n, heads, d = h * w, self.num_heads, self.head_dim
        q = self.q(x).reshape(b, n, heads, d).transpose(1, 2)
        if self.sr is not None:
            reduced = self.sr(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)  # (B, N / R², C)
            kv_tokens = self.norm(reduced)
        else:
            kv_tokens = x.reshape(b, n, c)
        k, v = self.kv(kv_tokens).reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        # scale defaults to head_dim ** -0.5, as in the reference
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return self.proj_drop(self.proj(out))
