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

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveInt

from ..cost_types import Cost, linear_cost
from ..facts import CPB_HIDDEN, axis_offsets
from ..fields import Probability
from .base import AttentionHeads, MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


def cpb_table_size(height: int, width: int, pool_h: int, pool_w: int) -> int:
    """U: the number of distinct (dh, dw) offsets between an H x W query grid and its Hp x Wp pooled grid."""
    return len(axis_offsets(height, pool_h)[0]) * len(axis_offsets(width, pool_w)[0])


class _TransNeXtCommon(AttentionHeads, MixerConfig):
    fixed_input_size = "its relative-position tables and padding masks are built for the compiled map"
    head_dim: PositiveInt = Field(default=24, description="channels per head (24 in every TransNeXt)")
    num_heads: PositiveInt | None = Field(default=None, description="heads (default: width / head_dim)")
    qkv_bias: bool = True
    pretrain_size: PositiveInt | None = Field(
        default=None, description="input size the CPB offsets are normalised at (default: input_size)")
    attn_drop: Probability = 0.0
    proj_drop: Probability = 0.0
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

    def buffer_bytes(self, ctx: MixerContext) -> int:
        # the (N, P) int64 CPB index and the (heads, N, P) float32 bias each forward builds from it
        ph, pw = self.pool(ctx)
        n, p = ctx.tokens, ph * pw
        return (8 + 4 * self.heads(ctx.dim)) * n * p

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
        from ..nn.mixers.transnext import AggregatedAttention
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

    def buffer_bytes(self, ctx: MixerContext) -> int:
        return (8 + 4 * self.heads(ctx.dim)) * ctx.tokens * ctx.tokens  # as aggregated attention, P = N

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, h = ctx.dim, ctx.tokens, self.heads(ctx.dim)
        return (linear_cost(c, 3 * c, n, self.qkv_bias) + linear_cost(c, c, n) + Cost(h + c, 2 * n * n * c)
                + self.cpb_cost(h, cpb_table_size(ctx.height, ctx.width, ctx.height, ctx.width)))

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.transnext import CosineAttention
        return CosineAttention(ctx.dim, self.heads(ctx.dim), ctx.height, ctx.width, self.pretrain_map(ctx),
                               self.qkv_bias, self.attn_drop, self.proj_drop)

    def init_weights(self, module: nn.Module) -> None:
        module.reset_parameters()


register_symbol("A", "aggregated_attention", macro="pvt",
                doc="TransNeXt aggregated attention (window + pooled paths, one softmax)")
register_symbol("M", "cosine_attention", macro="pvt",
                doc="TransNeXt full attention (length-scaled cosine attention + CPB)")
