"""Plan -> nn.Module. ``compose(spec) = build(plan(load(spec)))``.

A composed model owes its users timm's model interface (timm's ``metaformer.py`` / ``convnext.py`` are the
reference): ``forward_features``, ``forward_head(pre_logits=...)``, ``forward_intermediates``,
``prune_intermediate_layers``, ``get_classifier`` / ``reset_classifier``, ``num_features`` /
``head_hidden_size``, ``feature_info``, ``set_grad_checkpointing``, ``no_weight_decay`` and ``group_matcher``.
"""

import torch
from torch import nn

from .plan import EnsemblePlan, Plan, plan
from .spec import SpecLike

_POOLS = ("avg", "")  # what global_pool may be: composer heads average (or, with '', pass the map)


def take_indices(num_stages: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """The stage indices ``forward_intermediates`` returns, as timm's ``feature_take_indices``: None is every
    stage, an int n the last n, a sequence those stages (negative counts from the end); also the largest."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"indices={indices}: take the last 1 to {num_stages} stages")
        taken = list(range(num_stages - indices, num_stages))
    else:
        taken = [i + num_stages if i < 0 else i for i in indices]
        bad = [i for i in indices if not -num_stages <= i < num_stages]
        if bad:
            raise ValueError(f"indices {bad} out of range for {num_stages} stages")
    return taken, max(taken)


def _general(plan: Plan, name: str) -> nn.Module:
    return plan.node(name)["part"].build()


def _specialized(plan: Plan, name: str) -> nn.Module:
    """The part's module with its convolutions specialized for the map the Plan says it takes (nn/specialize.py):
    kernel taps that can never meet that map are skipped; same parameters, same outputs."""
    from .nn.specialize import build_for_its_map

    return build_for_its_map(plan.node(name)["part"])


class ComposedModel(nn.Module):
    """A backbone built from a spec: ``stem``, ``stages`` and ``head`` as in timm's MetaFormer.

    ``specialize`` (default True): convolutions whose kernels are larger than what can meet the map the Plan
    gives them compute with the live taps only (docs/small-images.md); the state dict and the outputs are those
    of the general model (float tolerance), and an input of another size than ``input_size`` takes the general
    path. ``False`` builds plain ``nn.Conv2d``s throughout (for debugging, or to time the general model).

    * ``forward(x)``: logits (or pooled features when ``num_classes`` is 0).
    * ``forward_features(x)``: the last stage's map, (B, ``num_features``, H, W).
    * ``forward_head(x, pre_logits=False)``; ``pre_logits=True`` gives (B, ``head_hidden_size``).
    * ``forward_intermediates(x, indices=None, ...)`` / ``forward_stages(x)``: the stage maps, for dense tasks.
    """

    def __init__(self, plan: Plan, specialize: bool = True):
        super().__init__()
        spec = plan.spec
        self.name = spec.name
        self.num_classes = spec.num_classes
        self.in_chans = spec.in_chans
        self.num_features = spec.widths[-1]  # channels of forward_features
        self.head_hidden_size = spec.head.pooled_dim(spec.widths[-1])  # what forward_head(pre_logits=True) gives
        self.drop_rate = spec.head.drop
        self.grad_checkpointing = False
        self.global_pool = "avg"
        self._head_config = spec.head
        self._macro = plan.macro
        build = _specialized if specialize else _general
        self.stem = build(plan, "stem")
        stages = []
        for i in range(spec.num_stages):
            down = f"stages.{i}.downsample"
            downsample = build(plan, down) if down in plan.graph else nn.Identity()
            blocks = [build(plan, f"stages.{i}.blocks.{j}") for j in range(spec.depths[i])]
            norm = f"stages.{i}.norm"
            stages.append(plan.macro.stage(downsample, blocks,
                                           plan.node(norm)["part"].build() if norm in plan.graph else None))
        self.stages = nn.Sequential(*stages)
        self.head = plan.node("head")["part"].build()
        self.feature_info = [
            {"num_chs": spec.widths[i], "reduction": spec.input_size // plan.node(f"stages.{i}")["out_shape"][1],
             "module": f"stages.{i}"} for i in range(spec.num_stages)]
        plan.macro.init_weights(self)

    # -- timm's model interface ----------------------------------------------------------------------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in the backward pass instead of keeping its activations (training only)."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: str | None = None, device=None, dtype=None) -> None:
        """A new classifier for ``num_classes`` (0: none, ``forward`` gives the pooled features) built and
        initialised as the spec's head is, on the model's device and dtype; ``global_pool`` ``'avg'`` or ``''``
        (no pooling: ``forward_head`` returns the map)."""
        if global_pool is not None:
            if global_pool not in _POOLS:
                raise ValueError(f"global_pool={global_pool!r} is not supported; composer heads average-pool "
                                 "('avg') or pass the map ('')")
            self.global_pool = global_pool
            self.head.global_pool.pool = global_pool == "avg"
            self.head.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.num_classes = num_classes
        fc = self._head_config.build_classifier(self.head_hidden_size, num_classes)
        for module in fc.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                self._macro.init_layer(module)
        like = next(self.parameters(), None)  # the new classifier lives where the model does, in its dtype
        if like is not None or device is not None or dtype is not None:
            fc = fc.to(device=device or like.device, dtype=dtype or like.dtype)
        self.head.fc = fc
        self.head.fc.train(self.head.training)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters that timm's optimizer factory should not decay besides 1-d ones (it skips those anyway):
        learnable position embeddings, relative-position tables and tokens, by name."""
        keys = ("pos_embed", "relative_position_bias_table", "rel_pos", "query_embedding", "learnable_tokens",
                "learnable_bias", "temperature", "cpb")
        return {name for name, _ in self.named_parameters() if any(k in name.split(".")[-1] for k in keys)}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise learning-rate decay (timm's ``param_groups_layer_decay``)."""
        return {"stem": r"^stem",
                "blocks": r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.downsample", (0,)),
                                                            (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                                                            (r"^stages\.(\d+)\.norm", (99999,))]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | tuple[int, ...] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """The maps of the stages in ``indices`` (see :func:`take_indices`), and unless ``intermediates_only``
        also the final map, as timm's MetaFormer. Every stage output is already what the macro normalises
        (``stages.i.norm`` where it has one), so ``norm`` changes nothing; ``output_fmt`` is NCHW only."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: composer models give NCHW maps")
        taken, last = take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if stop_early and i > last:
                break
            x = stage(x)
            if i in taken:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last one ``indices`` needs (and the classifier), as timm does."""
        taken, last = take_indices(len(self.stages), indices)
        pruned_end = last < len(self.stages) - 1
        self.stages = self.stages[:last + 1]
        self.feature_info = self.feature_info[:last + 1]
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or pruned_end:  # no classifier, no pooling and nothing with parameters left in the head
            from .nn.macro.base import GlobalAvgPool

            self.head.global_pool = GlobalAvgPool(pool=False)
            self.head.norm = nn.Identity()
            self.head.flatten = nn.Identity()
            self.head.fc = nn.Identity()
            self.global_pool, self.num_classes = "", 0
        return taken

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output map (``forward_intermediates(x, intermediates_only=True)``)."""
        return self.forward_intermediates(x, intermediates_only=True)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        head = self.head
        x = head.drop(head.flatten(head.norm(head.global_pool(x))))
        return x if pre_logits else head.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ComposedEnsemble(nn.Module):
    """Separately trained members evaluated together: ``forward(x)`` is the mean of the members' logits
    (no softmax, no weights), as the HyenaPixel paper's ensembles. Member ``i`` is ``members.i`` (load
    each member's checkpoint into it).

    Its feature map is the members' maps side by side: ``forward_features(x)`` concatenates their final maps
    along channels (``num_features`` = the sum of theirs), ``forward_intermediates`` the stage maps likewise,
    ``forward_head`` splits the channels back and averages the members' logits (``pre_logits=True``, and
    ``num_classes=0``, concatenate their pooled features: ``head_hidden_size`` is the sum). That needs members
    whose stages have one count and one reduction each (the shipped ensembles do); for others the feature
    methods raise and ``feature_info`` is empty, while ``forward`` still averages logits. Besides:
    ``get_classifier`` (the members' classifiers), ``reset_classifier`` (every member's),
    ``set_grad_checkpointing``, ``no_weight_decay``, ``group_matcher`` and ``prune_intermediate_layers``
    (member by member)."""

    def __init__(self, plan: EnsemblePlan, specialize: bool = True):
        super().__init__()
        self.name = plan.spec.name
        self.num_classes = plan.spec.num_classes
        self.in_chans = plan.spec.members[0].in_chans
        self.members = nn.ModuleList(ComposedModel(p, specialize) for p in plan.members)
        self.global_pool = "avg"
        self.feature_info = self._shared_feature_info()
        self.num_features = sum(m.num_features for m in self.members)
        self.head_hidden_size = sum(m.head_hidden_size for m in self.members)

    def _shared_feature_info(self) -> list[dict]:
        infos = [m.feature_info for m in self.members]
        if len({len(i) for i in infos}) > 1 or any(len({i[s]["reduction"] for i in infos}) > 1
                                                   for s in range(len(infos[0]))):
            return []   # no shared feature map: stage counts or reductions differ
        return [{"num_chs": sum(i[s]["num_chs"] for i in infos), "reduction": infos[0][s]["reduction"],
                 "module": f"stages.{s}"} for s in range(len(infos[0]))]

    def _require_shared_features(self) -> None:
        if not self.feature_info:
            raise NotImplementedError(
                f"{self.name}: the members' stages differ in count or reduction, so their maps cannot be put "
                "side by side; use a member's features (model.members[i])")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for member in self.members:
            member.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return nn.ModuleList(member.get_classifier() for member in self.members)

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: str | None = None, device=None, dtype=None) -> None:
        for member in self.members:
            member.reset_classifier(num_classes, global_pool, device, dtype)
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {f"members.{i}.{name}" for i, m in enumerate(self.members) for name in m.no_weight_decay()}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^members\.(\d+)\.stem",
                "blocks": [(r"^members\.(\d+)\.stages\.(\d+)" + ("" if coarse else r"\.blocks\.(\d+)"), None)]}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._require_shared_features()
        return torch.cat([member.forward_features(x) for member in self.members], dim=1)

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | tuple[int, ...] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Every member's ``forward_intermediates``, stage by stage concatenated along channels."""
        self._require_shared_features()
        outs = [m.forward_intermediates(x, indices, norm, stop_early, output_fmt, intermediates_only=False)
                for m in self.members]
        intermediates = [torch.cat(maps, dim=1) for maps in zip(*(o[1] for o in outs))]
        if intermediates_only:
            return intermediates
        return torch.cat([o[0] for o in outs], dim=1), intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        self._require_shared_features()
        taken = [m.prune_intermediate_layers(indices, prune_norm, prune_head) for m in self.members][0]
        self.feature_info = self._shared_feature_info()
        self.num_features = sum(m.num_features for m in self.members)
        self.head_hidden_size = sum(m.head_hidden_size for m in self.members)
        self.num_classes = self.members[0].num_classes
        self.global_pool = self.members[0].global_pool
        return taken

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        parts = torch.split(x, [m.num_features for m in self.members], dim=1)
        outs = [m.forward_head(part, pre_logits) for m, part in zip(self.members, parts)]
        if pre_logits or self.num_classes == 0:   # features side by side, as forward_features
            return torch.cat(outs, dim=1)
        return torch.stack(outs).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [member(x) for member in self.members]   # also for members without a shared feature map
        if self.num_classes == 0:   # headless: the members' pooled features (or maps) side by side
            return torch.cat(outs, dim=1)
        return torch.stack(outs).mean(0)


def refuse_oversized(p: Plan | EnsemblePlan) -> None:
    """Refuse, before anything is allocated, a model whose parameters and batch-1 activations exceed this
    machine's available memory (SpecError at ``widths``). ``COMPOSER_IGNORE_MEMORY=1`` or ``check_memory=False``
    skips this for those who know better."""
    import os

    from .plan import memory_problem
    from .spec import Problem, SpecError, locate

    if os.environ.get("COMPOSER_IGNORE_MEMORY", "") not in ("", "0"):
        return
    est = p.estimate()
    problem = memory_problem(est)
    if problem is not None:  # point at what makes it large: the resolution (maps, tables) or the widths
        field = "input_size" if 4 * est.activations + est.buffer_bytes > 4 * est.params else "widths"
        raise SpecError(locate([Problem(f"{p.spec.name or 'this spec'} {problem}; make it smaller (widths, depths, "
                                        "input_size, num_classes), or build anyway with --ignore-memory "
                                        "(COMPOSER_IGNORE_MEMORY=1)", (field,))],
                               getattr(p.spec, "_locations", None)))


def build(p: Plan | EnsemblePlan, check_memory: bool = True, specialize: bool = True
          ) -> ComposedModel | ComposedEnsemble:
    if check_memory:
        refuse_oversized(p)
    return ComposedEnsemble(p, specialize) if isinstance(p, EnsemblePlan) else ComposedModel(p, specialize)


def compose(source: SpecLike, check_memory: bool = True, weights=None,
            specialize: bool = True) -> ComposedModel | ComposedEnsemble:
    """Build the PyTorch model of a spec (a path, preset name, YAML string, dict or Spec), or of a ``composer
    train`` bundle (its folder: the model with its trained weights). A model that cannot fit in this machine's
    memory is refused before anything is allocated (``check_memory=False`` skips that). ``weights``: a checkpoint
    (``.safetensors`` or a torch file of composer's keys) loaded strictly; a mismatch lists the missing,
    unexpected and mis-shaped keys. ``specialize=False`` keeps every convolution general (see
    :class:`ComposedModel`)."""
    from .train.bundle import WEIGHTS, is_bundle, load_strict, read_bundle, read_weights

    if is_bundle(source):
        bundle = read_bundle(source)
        source, weights = bundle.spec, weights or bundle.folder / WEIGHTS
    model = build(plan(source), check_memory=check_memory, specialize=specialize)
    if weights is not None:
        load_strict(model, read_weights(weights), str(weights))
        model.eval()
    return model
