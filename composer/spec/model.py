"""The spec language as pydantic v2 models (the schema), plus the cross-field checks pydantic cannot
place on a YAML line."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    model_validator,
)

from ..channel import CHANNEL_MIXERS
from ..macro import MACROS
from ..mixers import MIXERS, resolve_symbol, symbol_names
from ..parts import HeadConfig, NormConfig
from ..perstage import StageValues, per_stage, per_stage_model, stage_count_problem
from ..registry import load_plugins
from .errors import Problem


def _union(models: list[type[BaseModel]]) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]


# Bounds that keep every spec cheap to plan: beyond them a value is a typo, not an architecture (walking
# 10^9 blocks, or tabulating position offsets of a 10^6 x 10^6 map, would hang `composer validate`).
MAX_INPUT_SIZE = 8192
MAX_STAGES = 16
MAX_STAGE_DEPTH = 1000
StageDepth = Annotated[int, Field(ge=0, le=MAX_STAGE_DEPTH)]  # 0 only in macros with empty_stages (check_spec)

def _from_registry(make: Callable[[], Any], name: str) -> type:
    """A pydantic type whose schema is made from the registries when the model is built, so a model rebuilt
    after a registration (:func:`_rebuild`) knows the new mixer types, channel mixers and macros."""

    def schema(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return handler.generate_schema(make())

    return type(name, (), {"__get_pydantic_core_schema__": classmethod(schema)})


load_plugins()  # after composer's own registrations, before the schema is made from them

MixerOverride = _from_registry(lambda: _union([per_stage_model(cls) for cls in MIXERS.values()]), "MixerOverride")
ChannelMixer = _from_registry(lambda: _union(list(CHANNEL_MIXERS.values())), "ChannelMixer")
MacroName = _from_registry(lambda: Literal[tuple(MACROS)], "MacroName")
Layout = Union[str, list[Union[str, list[str]]]]


class Spec(BaseModel):
    """A backbone: macro conventions, per-stage widths/depths, and a token-mixer layout."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: a YAML yes / no / true is no integer

    name: str | None = Field(default=None, max_length=200, description="model name (defaults to the file name)")
    macro: MacroName = Field(default="metaformer", description="stem / downsampling / block / head conventions")
    input_size: PositiveInt = Field(default=224, le=MAX_INPUT_SIZE,
                                    description="square input resolution the spec is compiled at")
    in_chans: PositiveInt = 3
    num_classes: NonNegativeInt = Field(default=1000, description="0 gives a headless backbone")
    widths: list[PositiveInt] = Field(min_length=1, max_length=MAX_STAGES, description="channels per stage")
    depths: list[StageDepth] = Field(min_length=1, max_length=MAX_STAGES, description="blocks per stage")
    layout: Layout = Field(description="mixer symbols: 'Conv-Conv-A-A', or a list with one entry per stage; "
                                       "an entry may be a list with one symbol per block")
    mixers: dict[str, MixerOverride] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="per-symbol parameter overrides (scalar or one value per stage), "
                                          "or new symbols with an explicit type")
    channel_mixer: ChannelMixer = Field(default=None, description="the block's channel mixer")  # type: ignore
    norm: NormConfig = Field(default=None, description="block norm")  # type: ignore[assignment]
    stem_norm: NormConfig | None = None
    downsample_norm: NormConfig | None = None
    downsample_ratio: per_stage(PositiveFloat | None) = Field(
        default=None, description="expansion of the downsampling block where it is an inverted residual (macro "
                                  "lowformer's stride-2 fused MBConv); other macros downsample with a plain conv")
    res_scale: per_stage(float | None) = Field(default=None, description="res-scale init per stage (None: off)")
    layer_scale: per_stage(float | None) = Field(default=None, description="layer-scale init per stage (None: off)")
    drop_path_rate: float = Field(default=0.0, ge=0.0, lt=1.0, description="stochastic depth, ramped per block")
    head: HeadConfig = Field(default_factory=HeadConfig)

    _locations: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        """Fill what the user left out from the macro's conventions, and mixer types from symbols."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = data.get("macro", "metaformer")
        macro = MACROS.get(name) if isinstance(name, str) else None  # anything else: pydantic reports it
        if macro is not None:
            for key, value in macro.spec_defaults(data).items():
                given = data.get(key)
                if isinstance(given, dict) and isinstance(value, dict) and given.get("type", value.get("type")) == \
                        value.get("type"):
                    data[key] = {**value, **given}  # a partial override keeps the macro's other values
                else:
                    data.setdefault(key, value)
        mixers = data.get("mixers")
        if isinstance(mixers, dict):
            filled = {}
            for symbol, entry in mixers.items():
                if entry is None:
                    entry = {}
                if isinstance(entry, dict) and "type" not in entry:
                    known = resolve_symbol(str(symbol), str(data.get("macro", "metaformer")))
                    if known is not None:
                        entry = {"type": known.type, **entry}
                filled[symbol] = entry
            data["mixers"] = filled
        return data

    def __eq__(self, other: object) -> bool:
        # where a spec was read from (its locations) is not part of what it says
        return isinstance(other, Spec) and self.model_dump() == other.model_dump()

    __hash__ = None  # mutable model

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    def stage_symbols(self) -> list[list[str]]:
        """The mixer symbol of every block, stage by stage (assumes :func:`check_spec` passed)."""
        stages = parse_layout(self.layout)
        return [entry if isinstance(entry, list) else [entry] * depth for entry, depth in zip(stages, self.depths)]

    def symbol_type(self, symbol: str) -> str | None:
        if symbol in self.mixers:
            return self.mixers[symbol].type
        known = resolve_symbol(symbol, self.macro)
        return known.type if known else None


def _rebuild() -> None:
    """A registration after the schema was made (a notebook, a script): make it again from the registries."""
    Spec.model_rebuild(force=True)


for _registry in (MIXERS, CHANNEL_MIXERS, MACROS):  # what the model's fields are made from (symbols, objectives,
    _registry.on_change(_rebuild)                    # weight sources and folders are read when used)


def parse_layout(layout: Layout) -> list[str | list[str]]:
    if isinstance(layout, str):
        return [part.strip() for part in layout.split("-")]
    return list(layout)


def _nearest(name: str, options: list[str]) -> str:
    lowered = {o.lower(): o for o in options}
    if name.lower() in lowered:
        return f"; did you mean {lowered[name.lower()]!r}?"
    near = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else ""


def unknown_symbol_message(symbol: str, macro: str, user_symbols: list[str]) -> str:
    options = sorted(set(symbol_names(macro)) | set(user_symbols))
    return (f"unknown mixer symbol {symbol!r}{_nearest(symbol, options)} known symbols: {', '.join(options)} "
            f"(or define it under mixers: with a type)")


def stage_count_disagreement(counts: dict[str, int]) -> list[Problem]:
    """One problem per field when ``widths``, ``depths`` and ``layout`` give different numbers of stages: the
    spec does not say which one is right (the one just edited, usually), so each is named at its own line."""
    if len(set(counts.values())) <= 1:
        return []
    def others(field: str) -> str:
        return " and ".join(f"{other} has {count}" for other, count in counts.items() if other != field)

    return [Problem(f"has {count} stages but {others(field)}; widths, depths and layout need one entry per stage",
                    (field,)) for field, count in counts.items()]


def check_spec(spec: Spec) -> list[Problem]:
    """Cross-field checks: stage counts agree, every symbol is known, per-stage lists fit."""
    problems: list[Problem] = []
    n = len(spec.widths)
    stages = parse_layout(spec.layout)
    problems += stage_count_disagreement({"widths": n, "depths": len(spec.depths), "layout": len(stages)})
    counts_agree = not problems
    macro = MACROS[spec.macro]
    if not macro.empty_stages:
        for i, depth in enumerate(spec.depths):
            if depth == 0:
                problems.append(Problem(f"input should be greater than 0, got 0: every stage of macro {spec.macro} "
                                        "has blocks (only macro lowformer has stages that only downsample)",
                                        ("depths", i)))
    if spec.downsample_ratio is not None and not macro.downsample_expands:
        problems.append(Problem(f"macro {spec.macro} downsamples with a plain conv, which has no expansion ratio; "
                                "remove downsample_ratio (macro lowformer has one)", ("downsample_ratio",)))
    layout_text = spec.layout if isinstance(spec.layout, str) else None
    user_symbols = list(spec.mixers)
    for i, entry in enumerate(stages):
        symbols = entry if isinstance(entry, list) else [entry]
        if isinstance(entry, list) and i < len(spec.depths) and len(entry) != spec.depths[i]:
            problems.append(Problem(
                f"stage {i} lists {len(entry)} mixers but depths[{i}] is {spec.depths[i]}; give one symbol per "
                "block or a single symbol for the whole stage", ("layout", i)))
        for j, symbol in enumerate(symbols):
            if not isinstance(symbol, str) or not symbol:
                where, path = (f"stage {i}: ", ("layout",)) if layout_text is not None else ("", ("layout", i))
                problems.append(Problem(f"{where}expected a mixer symbol, got {symbol!r}", path))
                continue
            if spec.symbol_type(symbol) is None:
                path = ("layout",) if layout_text is not None else (("layout", i, j) if isinstance(entry, list)
                                                                     else ("layout", i))
                where = f"stage {i}: " if layout_text is not None else ""
                problems.append(Problem(where + unknown_symbol_message(symbol, spec.macro, user_symbols), path))
    if not counts_agree:  # the number of stages is unknown: per-stage lists cannot be judged against it
        return problems
    for field in ("res_scale", "layer_scale", "downsample_ratio"):
        msg = stage_count_problem(getattr(spec, field), n)
        if msg:
            problems.append(Problem(msg, (field,)))
    for field, value in (spec.channel_mixer if spec.channel_mixer is not None else ()):
        msg = stage_count_problem(value, n)
        if msg:
            problems.append(Problem(msg, ("channel_mixer", field)))
    for symbol, override in spec.mixers.items():
        for field in override.model_fields_set:
            msg = stage_count_problem(getattr(override, field), n)
            if msg:
                problems.append(Problem(msg, ("mixers", symbol, field)))
    return problems





# ----------------------------------------------------------------------------------------------------------
# Ensembles: separately trained members evaluated together (mean of their logits)

ENSEMBLE_FAMILIES = {
    "Hpx": "hpxformer", "CHpx": "chpxformer", "HpxA": "hpxaformer", "Hb": "hbformer", "HbA": "hbaformer",
    "Conv": "convformer", "CA": "caformer",
}
"""Shorthand member names of the HyenaPixel paper's Table 1 (``Hpx/Hb/Conv/CA``) -> preset family."""

EnsembleMember = Union[str, dict[str, Any]]


class EnsembleSpec(BaseModel):
    """Several member specs compiled into one module that averages their logits; costs add up.

    ``ensemble`` is a list of members (a preset name, a path relative to this file, or an inline spec
    mapping) or the paper's shorthand ``Hpx/Hb/Conv/CA`` together with ``size: s18`` (each name maps to a
    preset family, see :data:`ENSEMBLE_FAMILIES`). ``input_size`` / ``num_classes``, when given, override
    every member's value."""

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: a YAML yes / no / true is no integer

    name: str | None = Field(default=None, max_length=200, description="model name (defaults to the file name)")
    ensemble: Union[str, list[EnsembleMember]] = Field(
        description="members: a list of preset names, paths or inline specs, or the shorthand 'Hpx/Conv' "
                    "with size")
    size: str | None = Field(default=None, description="size suffix for the shorthand, e.g. s18 -> hpxformer_s18")
    input_size: PositiveInt | None = Field(default=None, le=MAX_INPUT_SIZE,
                                           description="compile every member at this resolution")
    num_classes: NonNegativeInt | None = Field(default=None, description="override every member's classes")

    _locations: Any = PrivateAttr(default=None)
    _members: list[Spec] = PrivateAttr(default_factory=list)
    _base_dir: Any = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnsembleSpec) and self.model_dump() == other.model_dump()

    __hash__ = None  # mutable model

    @property
    def members(self) -> list[Spec]:
        """The resolved member specs (set by the loader)."""
        return self._members

    @property
    def in_chans(self) -> int:
        return self._members[0].in_chans

    def member_refs(self) -> list[tuple[str | dict, tuple]]:
        """Each member as written (a reference or an inline mapping) with its path in the spec data."""
        if isinstance(self.ensemble, str):
            names = [part.strip() for part in self.ensemble.split("/")]
            return [(f"{ENSEMBLE_FAMILIES.get(n, n)}_{self.size}" if self.size else n, ("ensemble",))
                    for n in names]
        return [(entry, ("ensemble", i)) for i, entry in enumerate(self.ensemble)]


def check_ensemble(spec: EnsembleSpec) -> list[Problem]:
    problems = []
    if isinstance(spec.ensemble, str):
        names = [part.strip() for part in spec.ensemble.split("/")]
        if len(names) < 2 or not all(names):
            problems.append(Problem(f"the shorthand needs two or more member names separated by '/', got "
                                    f"{spec.ensemble!r}", ("ensemble",)))
        if spec.size is None and any(n in ENSEMBLE_FAMILIES for n in names):
            problems.append(Problem(f"the shorthand {spec.ensemble!r} needs a size (size: s18 makes "
                                    f"{ENSEMBLE_FAMILIES.get(names[0], names[0])}_s18), or list preset names",
                                    ("ensemble",)))
        unknown = [n for n in names if n and spec.size is not None and n not in ENSEMBLE_FAMILIES]
        if unknown:
            near = _nearest(unknown[0], list(ENSEMBLE_FAMILIES))
            problems.append(Problem(f"unknown shorthand member {unknown[0]!r}{near}"
                                    f" known: {', '.join(ENSEMBLE_FAMILIES)} (or list preset names / paths)",
                                    ("ensemble",)))
    else:
        if len(spec.ensemble) < 2:
            problems.append(Problem(f"an ensemble needs two or more members, got {len(spec.ensemble)}",
                                    ("ensemble",)))
        if spec.size is not None:
            problems.append(Problem("size only applies to the shorthand ('Hpx/Conv'); list full preset names",
                                    ("size",)))
    return problems
__all__ = ["ENSEMBLE_FAMILIES", "EnsembleSpec", "Spec", "StageValues", "check_ensemble", "check_spec", "parse_layout",
           "unknown_symbol_message"]
