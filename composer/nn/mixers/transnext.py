"""The torch modules of composer.mixers.transnext (configs and costs live there)."""

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from ...facts import CPB_HIDDEN, TEMPERATURE_INIT, axis_offsets, window_tables
from ..layers import fx_tracing


def _default_device() -> torch.device:
    return torch.empty(0).device  # follows `with torch.device(...)`, e.g. meta


@lru_cache(maxsize=32)
def _cpb_tables(height: int, width: int, pool_h: int, pool_w: int, pre_h: int, pre_w: int):
    """(index (N, P) int64, coordinates (U, 2) float32) of the log-CPB, ordered as ``torch.unique(dim=0)``."""
    uh, ih = axis_offsets(height, pool_h)
    uw, iw = axis_offsets(width, pool_w)
    index = (ih[:, None, :, None] * len(uw) + iw[None, :, None, :]).reshape(height * width, pool_h * pool_w)
    dh = torch.tensor(uh / 2, dtype=torch.float32, device="cpu") / (pre_h - 1) * 8
    dw = torch.tensor(uw / 2, dtype=torch.float32, device="cpu") / (pre_w - 1) * 8
    coords = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), dim=-1).reshape(-1, 2)
    coords = torch.sign(coords) * torch.log2(coords.abs() + 1.0) / math.log2(8)
    return torch.from_numpy(index.astype(np.int64)), coords


class _WithCPB(nn.Module):
    """Log-spaced continuous position bias: ``cpb_fc1`` (2 -> 512), ReLU, ``cpb_fc2`` (512 -> heads) over the
    fixed relative-coordinate table, gathered to (heads, N, P) on every forward."""

    def init_cpb(self, heads: int, height: int, width: int, pool_h: int, pool_w: int, pre_h: int, pre_w: int):
        self.cpb_fc1 = nn.Linear(2, CPB_HIDDEN)
        self.cpb_act = nn.ReLU()
        self.cpb_fc2 = nn.Linear(CPB_HIDDEN, heads)
        index, coords = _cpb_tables(height, width, pool_h, pool_w, pre_h, pre_w)
        device = _default_device()
        self.register_buffer("cpb_index", index.to(device), persistent=False)
        self.register_buffer("cpb_coords", coords.to(device), persistent=False)
        self.cpb_shape = (height * width, pool_h * pool_w)
        self.compiled_hw = (height, width)

    def check_size(self, height: int, width: int) -> None:
        """The position tables are built for the compiled map: another size is a clear error, not a shape
        mismatch deep inside (the model's timm cfg says fixed_input_size)."""
        if not torch.jit.is_scripting():
            if not fx_tracing() and (height, width) != self.compiled_hw:
                ch, cw = self.compiled_hw
                raise ValueError(f"this TransNeXt attention was compiled for a {ch}x{cw} map but got {height}x"
                                 f"{width}; its position tables are built for the compiled map: compile the spec "
                                 "at this input_size")

    def position_bias(self):
        table = self.cpb_fc2(self.cpb_act(self.cpb_fc1(self.cpb_coords)))  # (U, heads)
        return table.transpose(0, 1)[:, self.cpb_index.view(-1)].view(-1, *self.cpb_shape)  # (heads, N, P)


def _temperature(heads: int) -> nn.Parameter:
    return nn.Parameter(torch.full((heads, 1, 1), math.log(math.expm1(TEMPERATURE_INIT))))


class AggregatedAttention(_WithCPB):
    """TransNeXt's aggregated attention on a (B, H, W, C) map (see the module docstring)."""

    def __init__(self, dim: int, heads: int, height: int, width: int, window: int, pool: tuple[int, int],
                 pretrain: tuple[int, int], qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.heads, self.head_dim, self.window = heads, dim // heads, window
        self.local_len, self.pool = window * window, pool
        self.pool_len = pool[0] * pool[1]
        self.temperature = _temperature(heads)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.query_embedding = nn.Parameter(torch.zeros(heads, 1, self.head_dim))
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr = nn.Conv2d(dim, dim, 1)
        self.norm = nn.LayerNorm(dim)  # eps 1e-5, as the reference
        self.act = nn.GELU()
        self.init_cpb(heads, height, width, *pool, *pretrain)
        self.relative_pos_bias_local = nn.Parameter(torch.zeros(heads, self.local_len))
        self.learnable_tokens = nn.Parameter(torch.zeros(heads, self.head_dim, self.local_len))
        self.learnable_bias = nn.Parameter(torch.zeros(heads, 1, self.local_len))
        mask, valid = window_tables(height, width, window)
        device = _default_device()
        scale = np.log(valid.astype(np.float64) + self.pool_len).astype(np.float32)[:, None]
        self.register_buffer("padding_mask", torch.from_numpy(mask).to(device), persistent=False)
        self.register_buffer("seq_length_scale", torch.from_numpy(scale).to(device), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.query_embedding.device.type == "meta":
            return
        trunc_normal_(self.query_embedding, std=0.02)
        trunc_normal_(self.relative_pos_bias_local, std=0.0004)
        trunc_normal_(self.learnable_tokens, std=0.02)
        nn.init.zeros_(self.learnable_bias)
        with torch.no_grad():
            self.temperature.fill_(math.log(math.expm1(TEMPERATURE_INIT)))

    def logits(self, x):
        """Both paths' logits and values: (window logits (B,h,N,k²), pooled logits (B,h,N,P), q̂, window
        values (B,h,N,k²,d), pooled values (B,h,P,d)). Padded window positions hold -inf."""
        b, height, width, c = x.shape
        n, h, d, k2 = height * width, self.heads, self.head_dim, self.local_len
        q = F.normalize(self.q(x).reshape(b, n, h, d).transpose(1, 2), dim=-1)
        q_scaled = (q + self.query_embedding) * F.softplus(self.temperature) * self.seq_length_scale
        # window path: the shared kv on every pixel, keys normalised, gathered over the k x k window
        k, v = self.kv(x).reshape(b, n, 2, h, d).unbind(2)
        kv = torch.cat([F.normalize(k, dim=-1), v], dim=2).reshape(b, height, width, 2 * c).permute(0, 3, 1, 2)
        kv = F.unfold(kv, self.window, padding=self.window // 2).reshape(b, 2, h, d, k2, n)
        k_win = kv[:, 0].permute(0, 1, 4, 2, 3)  # (B, h, N, d, k²)
        v_win = kv[:, 1].permute(0, 1, 4, 3, 2)  # (B, h, N, k², d)
        win = (q_scaled.unsqueeze(-2) @ k_win).squeeze(-2) + self.relative_pos_bias_local.unsqueeze(1)
        win = win.masked_fill(self.padding_mask, float("-inf"))
        # pooled path: activate and pool, then the same kv
        pooled = F.adaptive_avg_pool2d(self.act(self.sr(x.permute(0, 3, 1, 2))), self.pool)
        pooled = self.norm(pooled.flatten(2).transpose(1, 2))
        k_pool, v_pool = self.kv(pooled).reshape(b, self.pool_len, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        pool = q_scaled @ F.normalize(k_pool, dim=-1).transpose(-2, -1) + self.position_bias()
        return win, pool, q, v_win, v_pool

    def weights(self, win, pool):
        """One softmax over both paths, split back into (window weights, pooled weights)."""
        attn = self.attn_drop(torch.cat([win, pool], dim=-1).softmax(dim=-1))
        return torch.split(attn, [self.local_len, self.pool_len], dim=-1)

    def forward(self, x):
        b, height, width, c = x.shape
        self.check_size(height, width)
        win, pool, q, v_win, v_pool = self.logits(x)
        w_win, w_pool = self.weights(win, pool)
        w_win = w_win + q @ self.learnable_tokens + self.learnable_bias  # QLV, after the softmax
        out = (w_win.unsqueeze(-2) @ v_win).squeeze(-2) + w_pool @ v_pool
        out = out.transpose(1, 2).reshape(b, height, width, c)
        return self.proj_drop(self.proj(out))


class CosineAttention(_WithCPB):
    """TransNeXt's full attention (stage 4): length-scaled cosine attention with query embedding and CPB."""

    def __init__(self, dim: int, heads: int, height: int, width: int, pretrain: tuple[int, int], qkv_bias: bool,
                 attn_drop: float, proj_drop: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.temperature = _temperature(heads)
        self.register_buffer("seq_length_scale", torch.tensor(math.log(height * width), device=_default_device()),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.query_embedding = nn.Parameter(torch.zeros(heads, 1, self.head_dim))
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.init_cpb(heads, height, width, height, width, *pretrain)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.query_embedding.device.type == "meta":
            return
        trunc_normal_(self.query_embedding, std=0.02)
        with torch.no_grad():
            self.temperature.fill_(math.log(math.expm1(TEMPERATURE_INIT)))

    def forward(self, x):
        b, height, width, c = x.shape
        self.check_size(height, width)
        n, h, d = height * width, self.heads, self.head_dim
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        q = (F.normalize(q, dim=-1) + self.query_embedding) * F.softplus(self.temperature) * self.seq_length_scale
        attn = q @ F.normalize(k, dim=-1).transpose(-2, -1) + self.position_bias()
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, height, width, c)
        return self.proj_drop(self.proj(out))
