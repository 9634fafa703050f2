"""Plan -> nn.Module. ``compose(spec) = build(plan(load(spec)))``."""

from __future__ import annotations

import torch
from torch import nn

from .plan import EnsemblePlan, Plan, plan
from .spec import SpecLike


class ComposedModel(nn.Module):
    """A backbone built from a spec: ``stem``, ``stages`` and ``head`` as in timm's MetaFormer.

    * ``forward(x)``: logits (or pooled features when ``num_classes`` is 0).
    * ``forward_features(x)``: the last stage's map, (B, C, H, W).
    * ``forward_stages(x)``: every stage's output map, for dense tasks (FPN / UperNet necks).
    * ``forward_head(x, pre_logits=False)``.
    """

    def __init__(self, plan: Plan):
        super().__init__()
        spec = plan.spec
        self.name = spec.name
        self.num_classes = spec.num_classes
        self.num_features = spec.head.pooled_dim(spec.widths[-1])  # what forward_head(pre_logits=True) gives
        self.stem = plan.node("stem")["part"].build()
        stages = []
        for i in range(spec.num_stages):
            down = f"stages.{i}.downsample"
            downsample = plan.node(down)["part"].build() if down in plan.graph else nn.Identity()
            blocks = [plan.node(f"stages.{i}.blocks.{j}")["part"].build() for j in range(spec.depths[i])]
            norm = f"stages.{i}.norm"
            stages.append(plan.macro.stage(downsample, blocks,
                                           plan.node(norm)["part"].build() if norm in plan.graph else None))
        self.stages = nn.Sequential(*stages)
        self.head = plan.node("head")["part"].build()
        self.feature_info = [
            {"num_chs": spec.widths[i], "reduction": spec.input_size // plan.node(f"stages.{i}")["out_shape"][1],
             "module": f"stages.{i}"} for i in range(spec.num_stages)]
        plan.macro.init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return self.head.drop(self.head.flatten(self.head.norm(self.head.global_pool(x))))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ComposedEnsemble(nn.Module):
    """Separately trained members evaluated together: ``forward(x)`` is the mean of the members' logits
    (no softmax, no weights), as the HyenaPixel paper's ensembles. Member ``i`` is ``members.i`` (load
    each member's checkpoint into it)."""

    def __init__(self, plan: EnsemblePlan):
        super().__init__()
        self.name = plan.spec.name
        self.num_classes = plan.spec.num_classes
        self.members = nn.ModuleList(ComposedModel(p) for p in plan.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


def build(p: Plan | EnsemblePlan) -> ComposedModel | ComposedEnsemble:
    return ComposedEnsemble(p) if isinstance(p, EnsemblePlan) else ComposedModel(p)


def compose(source: SpecLike) -> ComposedModel | ComposedEnsemble:
    """Build the PyTorch model of a spec (a path, preset name, YAML string, dict or Spec)."""
    return build(plan(source))
