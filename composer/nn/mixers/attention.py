"""The torch modules of composer.mixers.attention (configs and costs live there)."""

import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Full softmax self-attention on a (B, H, W, C) map; keys ``qkv`` and ``proj`` as in timm."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, qkv_bias: bool, proj_bias: bool,
                 attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        b, h, w, c = x.shape
        n = h * w
        qkv = self.qkv(x.reshape(b, n, c)).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        # scale defaults to head_dim ** -0.5, as in the reference
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out)).reshape(b, h, w, c)
