"""Spec -> Plan: every module of the network with its shapes and analytic cost, no tensors allocated.

The Plan is a ``networkx.DiGraph``. Nodes are named by the module path they will have in the built model
(``stem``, ``stages.0``, ``stages.0.downsample``, ``stages.0.blocks.1``, ``head``), so a Plan node, a
state-dict prefix and a FLOP-counter entry all share one name. Edges with ``relation="flow"`` follow the
data from stem to head; edges with ``relation="contains"`` go from a stage to its downsampling and blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .cost_types import Cost
from .macro import MACROS, Part
from .mixers import MIXERS, MixerCheckError, MixerConfig, MixerContext, resolve_symbol
from .perstage import first_message, pick
from .spec import EnsembleSpec, Problem, Spec, SpecError, SpecLike, load_spec, locate
from .spec.units import format_count

if TYPE_CHECKING:
    import networkx as nx


@dataclass
class StageCost:
    index: int
    mixers: list[str]
    depth: int
    width: int
    feature_map: tuple[int, int]
    cost: Cost

    @property
    def mixer_summary(self) -> str:
        names = list(dict.fromkeys(self.mixers))
        return names[0] if len(names) == 1 else "/".join(names)


@dataclass
class Estimate:
    """Exact params and MACs of a spec, computed from closed forms (no model is built)."""

    name: str | None
    input_size: int
    params: int
    macs: int
    fft_macs: float
    stem: Cost = field(default_factory=Cost)
    stages: list[StageCost] = field(default_factory=list)
    head: Cost = field(default_factory=Cost)
    members: list[Estimate] = field(default_factory=list)
    """An ensemble's member estimates (their sum is this estimate); empty for a single network."""
    activations: int = 0
    """Elements of every module's output at batch 1 (what a forward keeps for its backward, at least)."""
    buffer_bytes: int = 0
    """Bytes of the mixers' non-parameter tables (index tables, masks; MixerConfig.buffer_bytes)."""

    @property
    def memory_bytes(self) -> int:
        """float32 bytes of the parameters and of ``activations``, plus ``buffer_bytes``: a lower bound of what
        running the model at batch 1 needs (the check before a model is built)."""
        return 4 * (self.params + self.activations) + self.buffer_bytes

    def __str__(self) -> str:
        fft = f" + {format_count(self.fft_macs)} FFT" if self.fft_macs else ""
        of = f" (ensemble of {' + '.join(m.name or 'spec' for m in self.members)})" if self.members else ""
        return (f"{self.name or 'spec'} @{self.input_size}: {self.params:,} params, "
                f"{format_count(self.macs)} MACs{fft}{of}")


class Plan:
    """The analytic network: ``graph`` nodes carry ``part`` (shapes, cost, build) and ``cost``."""

    def __init__(self, spec: Spec, graph: nx.DiGraph, walk: Walk):
        self.spec = spec
        self.graph = graph
        self._walk = walk

    @property
    def macro(self):
        return MACROS[self.spec.macro]

    def node(self, name: str) -> dict[str, Any]:
        return self.graph.nodes[name]

    def parts(self) -> list[tuple[str, Part]]:
        """Every module in data-flow order."""
        order = ["stem"]
        while True:
            nxt = [v for _, v, r in self.graph.out_edges(order[-1], data="relation") if r == "flow"]
            if not nxt:
                return [(n, self.graph.nodes[n]["part"]) for n in order]
            order.append(nxt[0])

    def stage_members(self, stage: int) -> list[str]:
        name = f"stages.{stage}"
        return [v for _, v, r in self.graph.out_edges(name, data="relation") if r == "contains"]

    def estimate(self) -> Estimate:
        return self._walk.estimate(self.spec)


class EnsemblePlan:
    """The Plan of an ensemble: one member Plan per member spec; costs are the sums of the members'."""

    def __init__(self, spec: EnsembleSpec, members: list[Plan]):
        self.spec = spec
        self.members = members

    def estimate(self) -> Estimate:
        return _ensemble_estimate(self.spec, [m.estimate() for m in self.members])


def _ensemble_estimate(spec: EnsembleSpec, members: list[Estimate]) -> Estimate:
    return Estimate(spec.name, spec.input_size, sum(m.params for m in members), sum(m.macs for m in members),
                    sum(m.fft_macs for m in members), members=members,
                    activations=sum(m.activations for m in members), buffer_bytes=sum(m.buffer_bytes for m in members))


def _drop_path_rates(rate: float, depths: list[int]) -> list[list[float]]:
    """Linear ramp from 0 to ``rate`` over all blocks, split by stage (timm's linspace, to 1e-8)."""
    total, rates, start = sum(depths), [], 0
    step = rate / (total - 1) if total > 1 else 0.0
    for depth in depths:  # plain Python: a torch.linspace here costs as much as a whole stage's closed forms
        rates.append([(start + j) * step for j in range(depth)])
        start += depth
    return rates


def _spec_error(spec: Spec, problems: list[Problem]) -> SpecError:
    return SpecError(locate(problems, spec._locations))


def resolve_mixer(spec: Spec, symbol: str, stage: int) -> MixerConfig:
    """The concrete mixer config of ``symbol`` in ``stage``: symbol defaults + that stage's overrides."""
    override = spec.mixers.get(symbol)
    known = resolve_symbol(symbol, spec.macro)
    type_name = override.type if override is not None else known.type
    values = dict(known.defaults) if known is not None and known.type == type_name else {}
    if override is not None:
        values.update({k: pick(getattr(override, k), stage) for k in override.model_fields_set if k != "type"})
    try:
        return _mixer_config(type_name, values)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        raise _spec_error(spec, [Problem(f"stage {stage}: {first_message(exc)}",
                                         ("mixers", symbol, *err["loc"]))]) from None


_MIXER_CONFIGS: dict = {}


def _mixer_config(type_name: str, values: dict) -> MixerConfig:
    """``MIXERS[type_name]`` validated from ``values``, memoized: pydantic validation is the dearest step of a
    walk and a search resolves the same few configs thousands of times (configs are frozen, so sharing one is
    safe). The key holds each value's type, so ``True`` and ``1`` stay apart; a list value is not memoized."""
    try:
        key = (type_name, *sorted((k, type(v), v) for k, v in values.items()))
        config = _MIXER_CONFIGS.get(key)
    except TypeError:
        return MIXERS[type_name].model_validate({"type": type_name, **values})
    if config is None:
        config = MIXERS[type_name].model_validate({"type": type_name, **values})
        if len(_MIXER_CONFIGS) > 4096:
            _MIXER_CONFIGS.clear()
        _MIXER_CONFIGS[key] = config
    return config


@dataclass
class StageWalk:
    index: int
    symbols: list[str]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int] = (0, 0, 0)
    members: list[tuple[str, Part, dict]] = field(default_factory=list)  # (module path, part, node extras)

    @property
    def cost(self) -> Cost:
        return sum((part.cost for _, part, _ in self.members), Cost())


@dataclass
class Walk:
    """Every part of a spec in data-flow order: what both the Plan graph and ``estimate`` are made from."""

    stem: Part
    stages: list[StageWalk]
    head: Part

    def estimate(self, spec: Spec) -> Estimate:
        stages = [StageCost(s.index, s.symbols, spec.depths[s.index], spec.widths[s.index], s.out_shape[1:],
                            s.cost) for s in self.stages]
        total = self.stem.cost + sum((s.cost for s in stages), Cost()) + self.head.cost
        outputs = _elements(self.stem.out_shape) + _elements(self.head.out_shape) + sum(
            _elements(part.out_shape) for s in self.stages for _, part, _ in s.members)
        tables = sum(part.info.get("buffer_bytes", 0) for s in self.stages for _, part, _ in s.members)
        return Estimate(spec.name, spec.input_size, total.params, total.macs, total.fft_macs, self.stem.cost,
                        stages, self.head.cost, activations=outputs, buffer_bytes=tables)


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for side in shape:
        n *= side
    return n


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), or None when the OS does not say."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def memory_problem(est: Estimate) -> str | None:
    """Why a model of ``est`` cannot be built on this machine (its memory exceeds what is available), or None."""
    free = available_memory()
    if free is None or est.memory_bytes <= free:
        return None
    tables = (f" and {format_count(est.buffer_bytes)}B of tables its mixers hold (position tables, attention "
              "weights)") if est.buffer_bytes else ""
    return (f"needs at least {format_count(est.memory_bytes)}B ({format_count(est.params)} parameters and "
            f"{format_count(est.activations)} activations at batch 1, float32{tables}) but this machine has "
            f"{format_count(free)}B available")


def _channel_problem(spec: Spec, stage: int, dim: int) -> Problem | None:
    """Why the channel mixer cannot work in ``stage`` at width ``dim`` (its ``check``), or None."""
    channel = spec.channel_mixer.at_stage(stage)
    check = getattr(channel, "check", None)
    try:
        if check is not None:
            check(dim)
    except MixerCheckError as exc:
        path = ("channel_mixer", exc.field) if exc.field else ("widths", stage)
        return Problem(f"stage {stage} (width {dim}): {exc}", path)
    return None


def walk(spec: Spec, costs_only: bool = False) -> Walk:
    """Resolve every module of a (checked, non-ensemble) spec into a Part, raising SpecError for mixers that
    cannot work where they are placed.

    ``costs_only`` (``estimate``): a block equal to the one before it in its stage (same symbol, a mixer whose
    cost does not read the block index) reuses that block's Part: its cost is the same (the contract of
    ``cost_depends_on_block``), only its build closure and drop-path rate would differ, so such a Walk gives
    costs and must not be built from. Every block's ``check`` still runs at its own position."""
    macro = MACROS[spec.macro]
    problems = [Problem(message, tuple(path)) for message, path in macro.check(spec)]
    if problems:  # the macro's own conventions (a stem of widths[0] // 2 channels) cannot be costed
        raise _spec_error(spec, problems)
    stem = macro.stem(spec)
    shape = stem.out_shape
    rates = _drop_path_rates(spec.drop_path_rate, spec.depths)
    stages = []
    for i, symbols in enumerate(spec.stage_symbols()):
        stage = StageWalk(i, symbols, shape)
        stages.append(stage)
        down = macro.downsample(spec, i, shape)
        if down is not None:
            if min(down.out_shape[1:]) < 1:
                raise _spec_error(spec, [Problem(
                    f"input_size {spec.input_size} leaves no feature map at stage {i}; use a larger input_size",
                    ("input_size",))])
            stage.members.append((f"stages.{i}.downsample", down, {"stage": i}))
            shape = down.out_shape
        channel_problem = _channel_problem(spec, i, shape[0])
        if channel_problem is not None:  # the stage's blocks are not costed: a 0-channel layer divides by 0
            problems.append(channel_problem)
            stage.out_shape = shape
            continue
        mixers = {symbol: resolve_mixer(spec, symbol, i) for symbol in dict.fromkeys(symbols)}
        for j, symbol in enumerate(symbols):
            mixer = mixers[symbol]
            ctx = MixerContext.at(spec, i, j, shape)
            try:
                mixer.check(ctx)
            except MixerCheckError as exc:
                if exc.field is None:
                    path = ("widths", i)
                elif symbol in spec.mixers:
                    path = ("mixers", symbol, exc.field)
                else:
                    path = ("layout",)
                hint = f" (set mixers.{symbol}.{exc.field})" if exc.field and path == ("layout",) else ""
                problems.append(Problem(f"stage {i} ({symbol}, width {shape[0]}, {shape[1]}x{shape[2]} map): "
                                        f"{exc}{hint}", path))
                break
            if costs_only and j and symbol == symbols[j - 1] and not mixer.cost_depends_on_block:
                part = stage.members[-1][1]  # the previous block's: a whole stage of 9 costs one block's work
            else:
                part = macro.block(spec, i, j, shape, mixer, rates[i][j])
            stage.members.append((f"stages.{i}.blocks.{j}", part, {"stage": i, "symbol": symbol}))
        norm = macro.stage_norm(spec, i, shape)
        if norm is not None:
            stage.members.append((f"stages.{i}.norm", norm, {"stage": i}))
        stage.out_shape = shape
    head = spec.head
    if head.transform_ratio and head.pooled_dim(shape[0]) < 1:
        problems.append(Problem(f"head transform_ratio {head.transform_ratio} leaves no channels of the final "
                                f"width {shape[0]}", ("head", "transform_ratio")))
    elif spec.num_classes and head.type == "mlp" and int(head.ratio * head.pooled_dim(shape[0])) < 1:
        problems.append(Problem(f"head ratio {head.ratio} leaves no hidden channels of the final width "
                                f"{shape[0]}", ("head", "ratio")))
    if problems:
        raise _spec_error(spec, problems)
    return Walk(stem, stages, macro.head(spec, shape))


def plan(source: SpecLike) -> Plan | EnsemblePlan:
    """Resolve a spec into its Plan (shapes and analytic cost of every module); an ensemble spec gives an
    :class:`EnsemblePlan` holding one Plan per member."""
    spec = load_spec(source)
    if isinstance(spec, EnsembleSpec):
        return EnsemblePlan(spec, [plan(member) for member in spec.members])
    import networkx as nx  # only for the graph: estimate() and the search never need it

    w = walk(spec)
    g = nx.DiGraph(name=spec.name or "spec", input_size=spec.input_size)

    def add(name: str, part: Part, previous: str | None, **extra) -> str:
        g.add_node(name, part=part, kind=part.kind, cost=part.cost, in_shape=part.in_shape,
                   out_shape=part.out_shape, **part.info, **extra)
        if previous is not None:
            g.add_edge(previous, name, relation="flow")
        return name

    last = add("stem", w.stem, None)
    for stage in w.stages:
        name = f"stages.{stage.index}"
        g.add_node(name, kind="stage", in_shape=stage.in_shape, out_shape=stage.out_shape, mixers=stage.symbols,
                   cost=stage.cost)
        for member, part, extra in stage.members:
            last = add(member, part, last, **extra)
            g.add_edge(name, member, relation="contains")
    add("head", w.head, last)
    return Plan(spec, g, w)


def estimate(source: SpecLike) -> Estimate:
    """Exact params, MACs (paper convention) and FFT MACs of a spec, without building it (an ensemble: the
    sum over its members, each in ``members``)."""
    spec = load_spec(source)
    if isinstance(spec, EnsembleSpec):
        return _ensemble_estimate(spec, [estimate(member) for member in spec.members])
    return walk(spec, costs_only=True).estimate(spec)  # no graph: the search calls this thousands of times
