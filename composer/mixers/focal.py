"""FocalNet's focal modulation (Yang et al., "Focal Modulation Networks", NeurIPS 2022), symbol ``Focal``.

For C channels and L focal levels: ``f`` projects to q (C), a context (C) and L + 1 gates (one channel each).
Level l (l = 0..L-1) refines the context with a k_l x k_l depthwise conv (no bias, k_l = focal_window +
focal_factor·l) and GELU; the levels' outputs, each times its gate (a scalar per position broadcast over C),
are summed, plus a global level: GELU of the spatial mean of the LAST level's output times the last gate.
Optionally the sum is divided by L + 1 (``normalize_modulator``). The modulator ``h`` (1x1 conv) of the sum
multiplies q element-wise, then an optional LayerNorm (``use_post_norm``, eps 1e-5 as in FocalNet's models) and
``proj`` (1x1 conv, always with bias).

Layout: channels-first with 1x1 convs for ``f``, ``h`` and ``proj``, as timm's ``focalnet.FocalModulation``,
so timm's weights copy 1:1 (same keys and shapes). The official code applies ``f`` and ``proj`` as
``nn.Linear`` on NHWC tensors: the same parameters, stored as (out, in) instead of (out, in, 1, 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from ..cost_types import Cost, conv_cost, linear_cost
from .base import MixerCheckError, MixerConfig, MixerContext, register_mixer, register_symbol

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    from torch import nn


MAX_FOCAL_LEVEL = 32   # FocalNet uses 2-4 levels


def focal_kernel_sizes(focal_level: int, focal_window: int, focal_factor: int) -> list[int]:
    """The depthwise kernel of every focal level: focal_window, focal_window + factor, ..."""
    return [focal_window + focal_factor * level for level in range(focal_level)]


@register_mixer
class FocalModulationConfig(MixerConfig):
    type: Literal["focal_modulation"] = "focal_modulation"
    # bounded: the levels are a Python list (a huge L would exhaust memory before any check ran)
    focal_level: NonNegativeInt = Field(default=2, le=MAX_FOCAL_LEVEL,
                                        description="number of depthwise levels L (FocalNet srf 2, lrf 3)")
    focal_window: PositiveInt = Field(default=3, description="kernel of the first level (odd)")
    focal_factor: NonNegativeInt = Field(default=2, description="kernel growth per level: k_l = window + factor·l")
    bias: bool = Field(default=True, description="biases of f and h (proj always has one)")
    normalize_modulator: bool = Field(default=False, description="divide the gated context by L + 1")
    use_post_norm: bool = Field(default=False, description="LayerNorm (eps 1e-5) before proj")
    summary = ("focal modulation: 1x1 to q / context / L+1 gates, L gated depthwise levels + global level, "
               "q * h(context), 1x1 out (FocalNet)")
    paper = "Focal Modulation Networks (Yang et al., NeurIPS 2022)"
    cost_formula = ("params C(2C+L+1) + (2C+L+1)·b + C·Σk_l² + C² + C·b + C² + C (+ 2C with post-norm), "
                    "b = bias, k_l = window + factor·l; MACs N·[C(2C+L+1) + C·Σk_l² + 2C²] "
                    "(gating, mean and normalisation are element-wise, not counted)")

    def kernel_sizes(self) -> list[int]:
        return focal_kernel_sizes(self.focal_level, self.focal_window, self.focal_factor)

    def check(self, ctx: MixerContext) -> None:
        kernels = self.kernel_sizes()
        even = [k for k in kernels if k % 2 == 0]
        if even:
            field = "focal_window" if self.focal_window % 2 == 0 else "focal_factor"
            raise MixerCheckError(f"focal kernels {kernels} (focal_window {self.focal_window} + focal_factor "
                                  f"{self.focal_factor} per level) include even sizes {even}; 'same' padding "
                                  f"needs odd kernels: use an odd focal_window and an even focal_factor", field)

    def cost(self, ctx: MixerContext) -> Cost:
        c, n, hw = ctx.dim, ctx.tokens, (ctx.height, ctx.width)
        cost = linear_cost(c, 2 * c + self.focal_level + 1, n, self.bias)
        cost += sum((conv_cost(c, c, k, hw, groups=c, bias=False) for k in self.kernel_sizes()), Cost())
        cost += linear_cost(c, c, n, self.bias) + linear_cost(c, c, n)  # h, proj
        return cost + Cost(2 * c if self.use_post_norm else 0)

    def build(self, ctx: MixerContext) -> nn.Module:
        from ..nn.mixers.focal import FocalModulation
        return FocalModulation(ctx.dim, self.kernel_sizes(), self.bias, self.normalize_modulator,
                               self.use_post_norm)


register_symbol("Focal", "focal_modulation", doc="focal modulation (FocalNet)")
