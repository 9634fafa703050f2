"""TransNeXt's token mixers (Shi, "TransNeXt: Robust Foveal Visual Perception for Vision Transformers",
CVPR 2024): aggregated attention (``A`` in ``macro: pvt``) and its full-attention counterpart (``M`` in
``macro: pvt``, the stage-4 mixer), both on (B, H, W, C) maps.

Aggregated attention (AA), per head (d = head_dim, k x k window, P = Hp x Wp pooled tokens):

* one ``kv`` projection (Linear C -> 2C) serves both paths; queries and keys are L2-normalised per head;
* queries are scaled as (q̂ + query_embedding) · softplus(temperature) · λ_i, with the fixed length scale
  λ_i = ln(valid window positions of pixel i + P) (length-scaled cosine attention);
* window path: the k x k neighbourhood of each pixel (zero padding; padded positions get a -inf logit),
  plus a static bias per head and window offset (``relative_pos_bias_local``);
* pooled path, "activate and pool": ``sr`` (1x1 conv) -> GELU -> adaptive average pool to Hp x Wp -> ``norm``
  (LN) -> the same ``kv``; its logits get a log-spaced continuous position bias (CPB, an MLP 2 -> 512 -> heads
  over log-scaled relative coordinates);
* ONE softmax over the k² window logits and the P pooled logits together;
* after the softmax the window weights get q̂ · ``learnable_tokens`` + ``learnable_bias`` (QLV);
* output = window weights · window values + pooled weights · pooled values, then ``proj``.

Pool size: normal mode (``pool_size`` unset) pools each map by ``sr_ratio`` (pool = H // sr_ratio, so the pool
follows the input size); linear mode (``pool_size: p``) uses a fixed p x p pool at every input size. With
``sr_ratio`` unset, ``macro: pvt`` uses the paper's rule: the pool is the last stage's map (input / 32) in every
stage, halved when the last stage itself uses aggregated attention (sr 8, 4, 2 for A-A-A-M; 16, 8, 4, 2 for
A-A-A-A); elsewhere sr = 2^(stages - 1 - stage).

The full attention: ``qkv`` -> L2-normalised q and k, the same query scaling with λ = ln N, CPB over the
query grid, softmax, V, ``proj``. Both build every position table (padding mask, λ, CPB index) when the module
is built, for the stage's map at the spec's ``input_size``, as the reference does; the forward pass creates
no tensors of its own, so the module runs on the meta device.

State-dict keys equal the official ones (``q``, ``kv``, ``proj``, ``sr``, ``norm``, ``temperature``,
``query_embedding``, ``relative_pos_bias_local``, ``learnable_tokens``, ``learnable_bias``, ``cpb_fc1``,
``cpb_fc2``; ``qkv`` for the full attention).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveInt
from timm.layers import trunc_normal_
from torch import nn

from ..cost_types import Cost, linear_cost
from .base import AttentionHeads, MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

CPB_HIDDEN = 512
TEMPERATURE_INIT = 1 / 0.24  # softplus(temperature) at init


def _default_device() -> torch.device:
    return torch.empty(0).device  # follows `with torch.device(...)`, e.g. meta


def _pool_centres(n: int, p: int) -> np.ndarray:
    """Twice the centre of each cell of a 1-D adaptive average pool of 0..n-1 to p cells (integers)."""
    starts = np.array([(i * n) // p for i in range(p)])
    ends = np.array([-((-(i + 1) * n) // p) for i in range(p)])
    return starts + ends - 1


def _axis_offsets(n: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique doubled offsets (query - pooled key) along one axis, and each (query, key) pair's index."""
    doubled = 2 * np.arange(n)[:, None] - _pool_centres(n, p)[None, :]
    unique, inverse = np.unique(doubled, return_inverse=True)
    return unique, inverse.reshape(n, p)


def cpb_table_size(height: int, width: int, pool_h: int, pool_w: int) -> int:
    """U: the number of distinct (dh, dw) offsets between an H x W query grid and its Hp x Wp pooled grid."""
    return len(_axis_offsets(height, pool_h)[0]) * len(_axis_offsets(width, pool_w)[0])


@lru_cache(maxsize=32)
def _cpb_tables(height: int, width: int, pool_h: int, pool_w: int, pre_h: int, pre_w: int):
    """(index (N, P) int64, coordinates (U, 2) float32) of the log-CPB, ordered as ``torch.unique(dim=0)``."""
    uh, ih = _axis_offsets(height, pool_h)
    uw, iw = _axis_offsets(width, pool_w)
    index = (ih[:, None, :, None] * len(uw) + iw[None, :, None, :]).reshape(height * width, pool_h * pool_w)
    dh = torch.tensor(uh / 2, dtype=torch.float32, device="cpu") / (pre_h - 1) * 8
    dw = torch.tensor(uw / 2, dtype=torch.float32, device="cpu") / (pre_w - 1) * 8
    coords = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), dim=-1).reshape(-1, 2)
    coords = torch.sign(coords) * torch.log2(coords.abs() + 1.0) / math.log2(8)
    return torch.from_numpy(index.astype(np.int64)), coords


def _window_tables(height: int, width: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(padding mask (N, k²) bool: True where the window position falls in the padding, valid counts (N,))."""
    r = window // 2
    offsets = np.arange(window) - r
    rows = np.arange(height)[:, None] + offsets[None, :]  # (H, k)
    cols = np.arange(width)[:, None] + offsets[None, :]  # (W, k)
    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]  # (H, W, k, k), row-major offsets as unfold
    valid = valid.reshape(height * width, window * window)
    return ~valid, valid.sum(-1)


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
        mask, valid = _window_tables(height, width, window)
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
        n, h, d = height * width, self.heads, self.head_dim
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        q = (F.normalize(q, dim=-1) + self.query_embedding) * F.softplus(self.temperature) * self.seq_length_scale
        attn = q @ F.normalize(k, dim=-1).transpose(-2, -1) + self.position_bias()
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, height, width, c)
        return self.proj_drop(self.proj(out))


class _TransNeXtCommon(AttentionHeads, MixerConfig):
    head_dim: PositiveInt = Field(default=24, description="channels per head (24 in every TransNeXt)")
    num_heads: PositiveInt | None = Field(default=None, description="heads (default: width / head_dim)")
    qkv_bias: bool = True
    pretrain_size: PositiveInt | None = Field(
        default=None, description="input size the CPB offsets are normalised at (default: input_size)")
    attn_drop: NonNegativeFloat = 0.0
    proj_drop: NonNegativeFloat = 0.0
    layout = "channels_last"

    def pretrain_map(self, ctx: MixerContext) -> tuple[int, int]:
        if self.pretrain_size is None:
            return ctx.height, ctx.width
        return (self.pretrain_size * ctx.height // ctx.input_size, self.pretrain_size * ctx.width // ctx.input_size)

    def check(self, ctx: MixerContext) -> None:
        self.check_heads(ctx)
        if min(self.pretrain_map(ctx)) < 2:
            raise MixerCheckError(f"the position bias normalises offsets by the map size - 1, which needs a map of "
                                  f"at least 2x2 at the pretraining size (here {self.pretrain_map(ctx)}); use a "
                                  "larger input_size / pretrain_size", "pretrain_size")

    @staticmethod
    def cpb_cost(heads: int, table: int) -> Cost:
        return linear_cost(2, CPB_HIDDEN, table) + linear_cost(CPB_HIDDEN, heads, table)


@register_mixer
class AggregatedAttentionConfig(_TransNeXtCommon):
    type: Literal["aggregated_attention"] = "aggregated_attention"
    window_size: PositiveInt = Field(default=3, description="sliding window side (odd)")
    sr_ratio: PositiveInt | None = Field(
        default=None, description="normal mode: pool = map // sr_ratio (unset: the paper's rule, see docs)")
    pool_size: PositiveInt | None = Field(
        default=None, description="linear mode: a fixed pool_size x pool_size pool at every input size")
    summary = ("TransNeXt aggregated attention: 3x3 sliding window + activate-and-pool path in one softmax, "
               "length-scaled cosine attention, query embedding, learnable tokens, log-CPB")
    paper = "TransNeXt: Robust Foveal Visual Perception for Vision Transformers (Shi, CVPR 2024)"
    cost_formula = ("h heads, w = window_size², P = pooled cells, U = distinct query-pool offsets (the CPB "
                    "table); params 5C² + 3C (q, kv, sr 1x1, proj) + 3C (qkv_bias) + 2C (pool LayerNorm) + h + C "
                    "+ C·w + 2h·w (temperature, query embedding, learnable tokens, local biases) + 1536 + 513h "
                    "(CPB MLP 2 -> 512 -> h); MACs 5·N·C² (q, kv, sr, proj) + 2·P·C² (kv of the pooled tokens) + "
                    "3·N·C·w (window q·k, q·tokens, a·v) + 2·N·C·P (pooled q·k, a·v) + U·(1024 + 512h) (CPB MLP, "
                    "every forward)")

    def default_sr_ratio(self, ctx: MixerContext) -> int:
        return 2 ** max(ctx.num_stages - 1 - ctx.stage, 0)

    def pool(self, ctx: MixerContext) -> tuple[int, int]:
        if self.pool_size is not None:
            return self.pool_size, self.pool_size
        sr = self.sr_ratio or self.default_sr_ratio(ctx)
        return ctx.height // sr, ctx.width // sr

    def check(self, ctx: MixerContext) -> None:
        super().check(ctx)
        if self.window_size % 2 == 0:
            raise MixerCheckError(f"window_size must be odd (a window centred on each pixel), got "
                                  f"{self.window_size}", "window_size")
        ph, pw = self.pool(ctx)
        if self.pool_size is not None and self.pool_size >= min(ctx.height, ctx.width):
            raise MixerCheckError(f"linear mode pools to {ph}x{pw}, which must be smaller than the "
                                  f"{ctx.height}x{ctx.width} map; use a smaller pool_size or a larger input_size",
                                  "pool_size")
        if min(ph, pw) < 1:
            sr = self.sr_ratio or self.default_sr_ratio(ctx)
            raise MixerCheckError(f"the pooled path is degenerate: the {ctx.height}x{ctx.width} map pooled by "
                                  f"sr_ratio {sr} leaves a {ph}x{pw} pool; use a larger input_size, a smaller "
                                  "sr_ratio, or full attention (M) in this stage", "sr_ratio")

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, h = ctx.dim, ctx.tokens, self.heads(ctx.dim)
        ph, pw = self.pool(ctx)
        p, k2 = ph * pw, self.window_size ** 2
        cost = (linear_cost(c, c, n, self.qkv_bias) + linear_cost(c, 2 * c, n, self.qkv_bias)  # q, kv
                + linear_cost(c, c, n) + linear_cost(c, c, n)  # sr (1x1 conv), proj
                + Cost(2 * c, 2 * p * c * c)  # pooled-path LN; kv on the pooled tokens
                + Cost(0, 3 * n * c * k2 + 2 * n * c * p)  # window q·k, QLV q·T, window a·v; pooled q·k, a·v
                + Cost(h + c + c * k2 + 2 * h * k2)  # temperature, query emb., learnable tokens, 2 local biases
                + self.cpb_cost(h, cpb_table_size(ctx.height, ctx.width, ph, pw)))
        return cost

    def build(self, ctx: MixerContext) -> nn.Module:
        return AggregatedAttention(ctx.dim, self.heads(ctx.dim), ctx.height, ctx.width, self.window_size,
                                   self.pool(ctx), self.pretrain_map(ctx), self.qkv_bias, self.attn_drop,
                                   self.proj_drop)

    def init_weights(self, module: nn.Module) -> None:
        module.reset_parameters()  # the generic init leaves AA's own tensors alone; restore the reference init


@register_mixer
class CosineAttentionConfig(_TransNeXtCommon):
    type: Literal["cosine_attention"] = "cosine_attention"
    summary = ("TransNeXt full attention: length-scaled cosine attention (scale ln N), query embedding, "
               "log-CPB over all tokens")
    paper = "TransNeXt: Robust Foveal Visual Perception for Vision Transformers (Shi, CVPR 2024)"
    cost_formula = ("h heads, U = distinct token offsets (the CPB table); params 4C² + C (qkv, proj) + 3C "
                    "(qkv_bias) + h + C (temperature, query embedding) + 1536 + 513h (CPB MLP); MACs 4·N·C² + "
                    "2·N²·C (QKᵀ, AV) + U·(1024 + 512h)")

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, h = ctx.dim, ctx.tokens, self.heads(ctx.dim)
        return (linear_cost(c, 3 * c, n, self.qkv_bias) + linear_cost(c, c, n) + Cost(h + c, 2 * n * n * c)
                + self.cpb_cost(h, cpb_table_size(ctx.height, ctx.width, ctx.height, ctx.width)))

    def build(self, ctx: MixerContext) -> nn.Module:
        return CosineAttention(ctx.dim, self.heads(ctx.dim), ctx.height, ctx.width, self.pretrain_map(ctx),
                               self.qkv_bias, self.attn_drop, self.proj_drop)

    def init_weights(self, module: nn.Module) -> None:
        module.reset_parameters()


register_symbol("A", "aggregated_attention", macro="pvt",
                doc="TransNeXt aggregated attention (window + pooled paths, one softmax)")
register_symbol("M", "cosine_attention", macro="pvt",
                doc="TransNeXt full attention (length-scaled cosine attention + CPB)")
