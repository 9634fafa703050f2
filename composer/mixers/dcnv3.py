"""DCNv3, the deformable-convolution token mixer of InternImage (``DCNv3``; U-InternImage of "Demystify
Transformers & Convolutions", Hu et al.), in pure PyTorch (``F.grid_sample``), on (B, H, W, C) maps.

For an input X with G groups of C / G channels and a k x k grid of P = k² sampling points (k = 3):

1. offset/mask features: x' = GELU(LN(k_dw x k_dw depthwise conv(X)))  (``dw_conv``; LN eps 1e-5 as STM-Evaluation);
2. offsets Δp = Linear(C, G·P·2)(x') (``sampling_offsets``) and mask logits m = Linear(C, G·P)(x')
   (``attention_weights``), the mask softmax-normalised over the P points of each group (not DCNv2's sigmoid);
3. values V = Linear(C, C)(X) (``value_proj``), zero-padded by k // 2 on every side;
4. point j of group g at pixel (y, x) samples V at (x, y) + s·(g_j + Δp_gj), g_j the j-th offset of the k x k
   grid (x outer, y inner, as both references order them), s the offset scale (1.0): bilinear, zeros outside
   the padded map, pixel centres at i + 0.5 (``grid_sample`` with ``align_corners=False``);
5. out = Linear(C, C)(Σ_j softmax(m)_gj · sample_gj) (``output_proj``).

This is InternImage's ``dcnv3_core_pytorch`` and STM-Evaluation's ``MSDeformAttnGrid_softmax`` (one level),
whose keys this module keeps, so STM-Evaluation's U-InternImage checkpoints load without renaming.

Cost: the convention counts ``grid_sample`` at 4 MACs per output element (bilinear: four taps), as fvcore's
``grid_sampler`` handle and composer's counter do, i.e. 4·N·C·P; the mask softmax and the weighted sum over the
points are element-wise (not counted), as in fvcore's count of the reference.

Initialisation (``init``):

* ``internimage`` (default): what the DCNv3 paper and official InternImage do -- ``sampling_offsets`` and
  ``attention_weights`` start at zero (a regular k x k grid with uniform weights: an average filter), xavier-
  uniform ``value_proj`` / ``output_proj`` with zero bias; applied after the macro's generic init, as
  InternImage's ``_init_deform_weights`` runs after its trunc-normal pass.
* ``stm``: what STM-Evaluation actually trains U-InternImage with: its MetaArch applies trunc-normal(0.02) and
  zero bias to every conv / linear AFTER the blocks are built, overwriting the module's own init (the offsets
  start random, std 0.02). composer's generic init is that same pass, so this choice adds nothing after it;
  the u_internimage specs use it to reproduce the paper's numbers.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveFloat, PositiveInt
from timm.layers import trunc_normal_
from torch import nn

from ..cost_types import Cost, conv_cost, linear_cost
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

Init = Literal["internimage", "stm"]


class _ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map; the inner ``norm`` keeps STM-Evaluation's keys."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def sampling_grid(kernel_size: int) -> torch.Tensor:
    """The (P, 2) base offsets (dx, dy) of a k x k grid, x the outer loop: (-1,-1), (-1,0), (-1,1), (0,-1), ..."""
    r = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
    dx, dy = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx, dy], dim=-1).reshape(-1, 2)


class DCNv3(nn.Module):
    """Deformable convolution v3 on a (B, H, W, C) map (see the module docstring)."""

    def __init__(self, dim: int, groups: int, kernel_size: int = 3, dw_kernel_size: int = 3,
                 offset_scale: float = 1.0, norm_eps: float = 1e-5, init: Init = "internimage"):
        super().__init__()
        self.groups, self.kernel_size, self.offset_scale, self.init = groups, kernel_size, offset_scale, init
        self.points = kernel_size * kernel_size
        self.pad = kernel_size // 2
        self.dw_conv = nn.Sequential(
            nn.Conv2d(dim, dim, dw_kernel_size, padding=dw_kernel_size // 2, groups=dim),
            _ChannelsFirstLayerNorm(dim, norm_eps),
            nn.GELU())
        self.sampling_offsets = nn.Linear(dim, groups * self.points * 2)
        self.attention_weights = nn.Linear(dim, groups * self.points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        # base offsets, (1, 1, 1, P, 2): a buffer so that the forward creates no tensors of its own
        self.register_buffer("grid", sampling_grid(kernel_size).view(1, 1, 1, -1, 2), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.value_proj.weight.device.type == "meta":
            return
        if self.init == "stm":  # what a trunc-normal pass over the whole model leaves
            for layer in (self.dw_conv[0], self.sampling_offsets, self.attention_weights, self.value_proj,
                          self.output_proj):
                trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
            return
        for layer in (self.sampling_offsets, self.attention_weights):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def sampling_locations(self, offsets: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``grid_sample`` coordinates in [-1, 1] of the padded map, (B, N, G, P, 2), from offsets (B, N, G, P, 2)."""
        padded = torch.tensor([width + 2 * self.pad, height + 2 * self.pad], dtype=offsets.dtype,
                              device=offsets.device)
        ys = torch.arange(height, dtype=offsets.dtype, device=offsets.device) + self.pad + 0.5
        xs = torch.arange(width, dtype=offsets.dtype, device=offsets.device) + self.pad + 0.5
        centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, -1, 1, 1, 2)  # (x, y)
        pixels = centres + (self.grid + offsets) * self.offset_scale
        return 2 * pixels / padded - 1

    def forward(self, x):
        b, h, w, c = x.shape
        g, p, n = self.groups, self.points, h * w
        features = self.dw_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        offsets = self.sampling_offsets(features).reshape(b, n, g, p, 2)
        mask = self.attention_weights(features).reshape(b, n, g, p).softmax(-1)
        value = F.pad(self.value_proj(x), (0, 0, self.pad, self.pad, self.pad, self.pad))  # zero pad H and W
        value = value.reshape(b, h + 2 * self.pad, w + 2 * self.pad, g, c // g).permute(0, 3, 4, 1, 2)
        value = value.reshape(b * g, c // g, h + 2 * self.pad, w + 2 * self.pad)
        grid = self.sampling_locations(offsets, h, w).transpose(1, 2).reshape(b * g, n, p, 2)
        sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        mask = mask.transpose(1, 2).reshape(b * g, 1, n, p)
        out = (sampled * mask).sum(-1)  # (B·G, C/G, N): element-wise, as the reference count has it
        out = out.reshape(b, c, h, w).permute(0, 2, 3, 1)
        return self.output_proj(out)


@register_mixer
class DCNv3Config(MixerConfig):
    type: Literal["dcn_v3"] = "dcn_v3"
    groups: PositiveInt | None = Field(default=None, description="offset groups (default: width / group_channels)")
    group_channels: PositiveInt = Field(default=16, description="channels per group when groups is unset")
    kernel_size: PositiveInt = Field(default=3, description="k: a k x k grid of sampling points, padding k // 2")
    dw_kernel_size: PositiveInt = Field(default=3, description="depthwise kernel of the offset/mask branch")
    offset_scale: PositiveFloat = Field(default=1.0, description="s: offsets and the base grid are scaled by s")
    norm_eps: PositiveFloat = Field(default=1e-5, description="LN of the offset branch (InternImage: 1e-6)")
    init: Init = Field(default="internimage", description="internimage: zero offsets/masks, xavier projections; "
                       "stm: the macro's trunc-normal(0.02) pass left as is (STM-Evaluation)")
    layout = "channels_last"
    summary = ("DCNv3 deformable conv: 3x3 grid of points per group with learned offsets and a softmax mask, "
               "bilinear grid_sample, value/output projections (U-InternImage)")
    paper = ("InternImage (Wang et al., CVPR 2023); U-InternImage of Demystify Transformers & Convolutions in "
             "Modern Image Deep Networks (Hu et al. 2025)")
    cost_formula = ("params 2C² + 3GPC + 3GP + (k_dw² + 5)C (value/output proj, offsets+mask, dw conv, LN); "
                    "MACs N(2C² + 3GPC + k_dw²C) + 4NCP (grid_sample, 4 per sampled element); P = k² points, "
                    "G groups, N = H·W")

    def num_groups(self, dim: int) -> int:
        return self.groups or dim // self.group_channels

    def check(self, ctx: MixerContext) -> None:
        if self.groups is None and ctx.dim % self.group_channels:
            raise MixerCheckError(f"width {ctx.dim} is not divisible by group_channels {self.group_channels}; "
                                  f"choose a width that is a multiple of {self.group_channels}, or set "
                                  "group_channels / groups")
        if self.groups is not None and ctx.dim % self.groups:
            raise MixerCheckError(f"width {ctx.dim} is not divisible by groups {self.groups}; choose a groups "
                                  f"value that divides {ctx.dim}", "groups")
        for field in ("kernel_size", "dw_kernel_size"):
            if getattr(self, field) % 2 == 0:
                raise MixerCheckError(f"{field} must be odd (a grid centred on each pixel), got "
                                      f"{getattr(self, field)}", field)

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, g, p = ctx.dim, ctx.tokens, self.num_groups(ctx.dim), self.kernel_size ** 2
        return (conv_cost(c, c, self.dw_kernel_size, (ctx.height, ctx.width), groups=c) + Cost(2 * c)  # dw, LN
                + linear_cost(c, 2 * g * p, n) + linear_cost(c, g * p, n)  # offsets, mask logits
                + linear_cost(c, c, n) + linear_cost(c, c, n)  # value, output projections
                + Cost(macs=4 * n * c * p))  # grid_sample: 4 taps per sampled element

    def build(self, ctx: MixerContext) -> nn.Module:
        return DCNv3(ctx.dim, self.num_groups(ctx.dim), self.kernel_size, self.dw_kernel_size, self.offset_scale,
                     self.norm_eps, self.init)

    def init_weights(self, module: nn.Module) -> None:
        if self.init == "internimage":  # "stm": the macro's generic pass already is STM-Evaluation's init
            module.reset_parameters()


register_symbol("DCNv3", "dcn_v3", doc="InternImage's deformable conv v3 (U-InternImage)")
