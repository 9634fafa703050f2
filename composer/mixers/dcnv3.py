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

from typing import TYPE_CHECKING, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from ..cost_types import Cost, conv_cost, linear_cost
from ..facts import Init
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


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
        from ..nn.mixers.dcnv3 import DCNv3
        return DCNv3(ctx.dim, self.num_groups(ctx.dim), self.kernel_size, self.dw_kernel_size, self.offset_scale,
                     self.norm_eps, self.init)

    def init_weights(self, module: nn.Module) -> None:
        if self.init == "internimage":  # "stm": the macro's generic pass already is STM-Evaluation's init
            module.reset_parameters()


register_symbol("DCNv3", "dcn_v3", doc="InternImage's deformable conv v3 (U-InternImage)")
