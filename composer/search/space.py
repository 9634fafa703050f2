"""Search spaces: a base spec plus choices, read from YAML with file:line for every problem.

```yaml
name: metaformer_s18            # defaults to the file name
base: caformer_s18              # a preset, a spec path (relative to this file) or an inline spec mapping
choices:                        # dotted spec paths -> options
  layout: [[Conv, Hpx, Hb, gnConv], [Conv, Hpx, Hb, gnConv], [Conv, Hpx, A, M], [Conv, Hpx, A, M]]
  depths: [[2, 3], [2, 3], [6, 9, 12], [2, 3]]
  mixers.Conv.kernel_size: [3, 5, 7, 9]     # sampled only in stages whose chosen mixer is Conv
  mixers.gnConv.order: [[1, 2, 3], [2, 3, 4], [3, 4, 5], [3, 4, 5]]
budget: {macs: 5G, params: 40M, latency: 25ms}  # optional; --budget / --max-params / --max-latency override it
                                             # (min_macs: 4G, a MAC floor: --min-macs)
objective: proxy                             # optional default objective
warm_start: [caformer_s18]                   # optional: published designs tried first (must lie in the space)
```

Per-stage fields (``layout``, ``depths``, ``widths``, ``res_scale``, ``layer_scale`` and every
``mixers.SYMBOL.param``) take either one option list for every stage or one option list per stage (a scalar
entry fixes that stage). Other fields (``drop_path_rate``, ``channel_mixer.ratio``, ...) take one option list.
An option list may also be a range ``{low: 2, high: 12, step: 1}`` (``log: true`` allowed). ``{whole: [...]}``
lists whole values instead, each the field's complete value for all stages at once, as a paper's ablation lists
them: ``mixers.gnConv.order: {whole: [[2, 2, 2, 2], [2, 3, 4, 5]]}`` gives two networks, not 2^4 (Optuna sees
the labels ``2-2-2-2`` and ``2-3-4-5``). ``layout: [A-A-A-M, A-A-M-M]`` (whole layouts) is the same for layouts.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..latency import parse_latency
from ..mixers import MIXERS, resolve_symbol
from ..paths import At, check_name, shown
from ..perstage import first_message, pick
from ..plan import Estimate, estimate, walk
from ..spec import Spec, SpecError, load_spec, spec_to_data, validate_data
from ..spec.errors import Problem
from ..spec.model import parse_layout
from ..spec.source import (
    Locations,
    display_path,
    exists,
    find_space,
    is_file,
    looks_like_path,
    named_instead,
    not_found_hint,
    parse_yaml,
    read_spec_file,
    resolve_extends,
    short_name,
    space_names,
    space_search_path,
    spec_file,
)
from ..spec.units import format_count, parse_count
from ..train.recipe import problems as train_problems

PER_STAGE_FIELDS = ("layout", "depths", "widths", "res_scale", "layer_scale")
SPACE_FIELDS = ("name", "description", "base", "choices", "budget", "objective", "warm_start", "train")
Suggest = Callable[[str, "Domain"], Any]


@dataclass
class Domain:
    """The options of one sampled value: categorical ``options`` or a numeric range."""

    options: list | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def is_int(self) -> bool:
        return self.options is None and all(isinstance(v, int) for v in (self.low, self.high))

    @property
    def first(self) -> Any:
        return self.options[0] if self.options is not None else self.low

    def values(self) -> list:
        """Every option (a range is listed at its bounds), for validating them."""
        return list(self.options) if self.options is not None else [self.low, self.high]


@dataclass
class Choice:
    key: str                      # as written: "mixers.Conv.kernel_size"
    path: tuple                   # ("mixers", "Conv", "kernel_size")
    per_stage: bool
    domains: list[Domain]         # one per stage (per_stage) or a single one
    whole_layouts: bool = False   # layout: [A-A-A-M, A-A-M-M, ...]: one categorical over whole layouts
    whole: dict | None = None     # {whole: [...]}: label (what Optuna draws) -> the field's whole value

    @property
    def mixer(self) -> tuple[str, str] | None:
        return (self.path[1], self.path[2]) if self.path[0] == "mixers" else None


@dataclass
class Check:
    """The outcome of checking one sample before anything is built."""

    data: dict
    spec: Spec | None = None
    estimate: Estimate | None = None
    error: str | None = None


@dataclass
class SearchSpace:
    name: str
    base: Spec
    base_data: dict
    choices: list[Choice]
    budget_macs: int | None = None
    budget_params: int | None = None
    budget_latency_ms: float | None = None
    budget_min_macs: int | None = None
    """``budget: {min_macs: ...}``: a MAC floor; samples below it are infeasible, as those over budget_macs are."""
    objective: str | None = None
    file: str | None = None
    locations: Locations = field(default_factory=Locations)
    warm_start: list[tuple[str, dict]] = field(default_factory=list)
    """``warm_start:``: (preset or path, the drawn parameters that give it), enqueued as a search's first trials."""
    train: dict = field(default_factory=dict)
    """``train:``: the training settings and recipe (composer.train.TrainSettings / Recipe keys side by side);
    the command line's flags override them."""

    @property
    def num_stages(self) -> int:
        return self.base.num_stages

    # -- sampling -------------------------------------------------------------------------------------------
    def sample(self, suggest: Suggest) -> tuple[dict, dict]:
        """A spec's data with every choice drawn through ``suggest(name, domain)``; also the drawn values.

        The data shares the base's unchanged values (a deep copy per sample cost as much as validating it):
        every change replaces a value or copies the mapping it changes, so the base is never altered. Treat
        the result as read-only below its top level."""
        data = dict(self.base_data)
        drawn: dict[str, Any] = {}

        def draw(name: str, domain: Domain) -> Any:
            if domain.options is not None and len(domain.options) == 1:
                return domain.options[0]
            drawn[name] = value = suggest(name, domain)
            return value

        n = self.num_stages
        stage_symbols = [set(s) for s in self.base.stage_symbols()]
        for choice in self.choices:
            if choice.mixer is not None:
                continue
            if choice.whole is not None:
                value = choice.whole[draw(choice.key, choice.domains[0])]
                if choice.per_stage:
                    data[choice.path[0]] = value
                else:
                    _set(data, choice.path, value)
            elif choice.whole_layouts:
                value = draw("layout", choice.domains[0])
                data["layout"] = value
                stage_symbols = [{s} if isinstance(s, str) else set(s) for s in parse_layout(value)]
            elif choice.path == ("layout",):
                layout = parse_layout(self.base.layout)
                for i in range(n):
                    symbol = draw(f"layout[{i}]", choice.domains[i])
                    layout[i], stage_symbols[i] = symbol, {symbol}
                data["layout"] = "-".join(layout) if all(isinstance(s, str) for s in layout) else layout
            elif choice.per_stage:
                current = getattr(self.base, choice.path[0])
                values = [pick(current, i) if not isinstance(current, list) or len(current) == n else None
                          for i in range(n)]
                for i in range(n):
                    values[i] = draw(f"{choice.key}[{i}]", choice.domains[i])
                data[choice.path[0]] = values
            else:
                _set(data, choice.path, draw(choice.key, choice.domains[0]))
        for choice in self.choices:
            if choice.mixer is None:
                continue
            symbol, param = choice.mixer
            used = [i for i in range(n) if symbol in stage_symbols[i]]
            if not used:
                continue
            override = self.base.mixers.get(symbol)
            base_value = getattr(override, param) if override is not None and param in override.model_fields_set \
                else None
            mixers = data["mixers"] = dict(data.get("mixers") or {})
            entry = mixers[symbol] = dict(mixers.get(symbol) or {})
            if choice.whole is not None:   # one value for the whole network
                entry[param] = choice.whole[draw(choice.key, choice.domains[0])]
                continue
            values = [pick(base_value, i) if base_value is not None else choice.domains[i].first for i in range(n)]
            for i in used:
                values[i] = draw(f"{choice.key}[{i}]", choice.domains[i])
            entry[param] = values[0] if all(v == values[0] for v in values) else values
        return data, drawn

    def sample_random(self, rng) -> tuple[dict, dict]:
        """A uniform sample with a ``random.Random`` (benchmarks, smoke tests)."""
        def suggest(name: str, domain: Domain) -> Any:
            if domain.options is not None:
                return domain.options[rng.randrange(len(domain.options))]
            if domain.is_int:
                step = int(domain.step or 1)
                return rng.randrange(int(domain.low), int(domain.high) + 1, step)
            return rng.uniform(domain.low, domain.high)

        return self.sample(suggest)

    # -- feasibility ----------------------------------------------------------------------------------------
    def check(self, data: dict) -> Check:
        """Validate and plan ``data`` (no tensors allocated); ``error`` says why it cannot be built.

        The estimate is the one ``composer.estimate`` gives for the spec that would be built, computed once:
        ``validate_data`` has run the spec's checks, so the walk over its parts follows directly (``estimate``
        would load, and so check, the spec a second time)."""
        try:
            spec = validate_data(data, None)
            return Check(data, spec, walk(spec, costs_only=True).estimate(spec) if isinstance(spec, Spec)
                         else estimate(spec))
        except SpecError as exc:
            return Check(data, error=str(exc.problems[0]) if exc.problems else str(exc))


    def at_size(self, data: dict, size: int) -> tuple[dict, int]:
        """``data`` compiled at ``size`` px (a training or scoring resolution below the spec's, at which budgets
        are not checked); an architecture that does not fit that size (a map too small for its mixers)
        doubles it until it does, up to the spec's own input size. Returns the data and the size used."""
        top = data.get("input_size", self.base.input_size)
        while size < top:
            small = self.check(dict(data, input_size=size))
            if small.error is None:
                return small.data, size
            size *= 2
        return data, top


def optuna_suggest(trial) -> Suggest:
    def suggest(name: str, domain: Domain) -> Any:
        if domain.options is not None:
            return trial.suggest_categorical(name, domain.options)
        if domain.is_int:
            return trial.suggest_int(name, int(domain.low), int(domain.high), step=int(domain.step or 1),
                                     log=domain.log)
        return trial.suggest_float(name, float(domain.low), float(domain.high), step=domain.step, log=domain.log)

    return suggest


def _set(data: dict, path: tuple, value: Any) -> None:
    """``data[path] = value``, copying every mapping on the way (``data`` shares them with the base)."""
    node = data
    for key in path[:-1]:
        current = node.get(key)
        node[key] = {} if current is None else {"type": current} if isinstance(current, str) else dict(current)
        node = node[key]
    node[path[-1]] = value


# -- loading and validation -----------------------------------------------------------------------------------

def _near(word: str, options) -> str:
    near = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else ""


class _Problems:
    def __init__(self, locs: Locations):
        self.locs, self.items = locs, []

    def add(self, path: tuple, message: str) -> None:
        file, line = self.locs.find(path)
        self.items.append(Problem(message, path, file, line))

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.items)


def _domain(value: Any, path: tuple, problems: _Problems) -> Domain | None:
    if isinstance(value, Mapping):
        unknown = set(value) - {"low", "high", "step", "log"}
        if unknown or "low" not in value or "high" not in value:
            problems.add(path, f"a range needs low and high (and optionally step, log), got {dict(value)!r}")
            return None
        low, high, step, log = value["low"], value["high"], value.get("step"), value.get("log", False)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      for v in (low, high))
        if not numbers or low > high:
            problems.add(path, f"a range needs finite numbers low <= high, got low={low!r} high={high!r}")
            return None
        if not isinstance(log, bool):
            problems.add(path + ("log",), f"log must be true or false, got {log!r}")
            return None
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                                 or not math.isfinite(step) or step <= 0):
            problems.add(path + ("step",), f"step must be a positive number, got {step!r}")
            return None
        if log and low <= 0:
            problems.add(path, f"a log range needs low > 0 (log of {low!r} is undefined), got low={low!r}")
            return None
        if log and step is not None:
            problems.add(path, "a range is either log or stepped, not both (Optuna's rule)")
            return None
        return Domain(low=low, high=high, step=step, log=log)
    options = value if isinstance(value, list) else [value]
    if not options:
        problems.add(path, "an empty option list; give at least one option")
        return None
    for j, option in enumerate(options):
        if not (option is None or isinstance(option, (bool, int, float, str))):
            problems.add(path + (j,) if isinstance(value, list) else path,
                         f"options must be numbers, strings, booleans or null, got {option!r}")
            return None
    if len({repr(o) for o in options}) != len(options):
        problems.add(path, f"repeated options in {options!r}; list each option once")
        return None
    return Domain(options=list(options))


def _load_base(raw: Any, locs: Locations, space_dir: Path) -> tuple[Spec, dict]:
    if isinstance(raw, str):
        if looks_like_path(raw):
            path = spec_file(raw, space_dir, At("base", ("base",), locs))
            data, base_locs = read_spec_file(path, os.path.relpath(path))
            data, base_locs = resolve_extends(data, base_locs, path.parent, (str(path.resolve()),))
            spec = validate_data(data, base_locs, default_name=path.stem)
        else:
            try:
                spec = load_spec(raw)
            except SpecError as exc:
                if exc.problems and exc.problems[0].line is None:
                    raise SpecError.at(("base",), exc.problems[0].message, locs) from None
                raise
    elif isinstance(raw, Mapping):
        sub = Locations({k[1:]: v for k, v in locs.entries.items() if k[:1] == ("base",) and len(k) > 1},
                        locs.default_file)
        # locations of base fields keep the space file's lines
        data, sub = resolve_extends(dict(raw), sub, space_dir)
        spec = validate_data(data, sub)
    else:
        raise SpecError.at(("base",), f"expected a preset name, a spec path or a spec mapping, got {raw!r}", locs)
    if not isinstance(spec, Spec):  # an ensemble: its members are separate networks, with no one set of fields
        raise SpecError.at(("base",), f"the base {raw!r} is an ensemble; a search space varies one network: use "
                                      "one of its members as the base", locs)
    walk(spec, costs_only=True)  # position checks: a base that cannot be planned is reported here, not per trial
    return spec, spec_to_data(spec)


def _mixer_type(base: Spec, symbol: str) -> str | None:
    if symbol in base.mixers:
        return base.mixers[symbol].type
    known = resolve_symbol(symbol, base.macro)
    return known.type if known else None


def _check_options(space_base: Spec, base_data: dict, choice: Choice, problems: _Problems) -> None:
    """Every option of every choice must be a valid value where it is used (schema and cross-field checks)."""
    n = space_base.num_stages
    key_path = ("choices", choice.key)
    if choice.mixer is not None:
        symbol, param = choice.mixer
        type_name = _mixer_type(space_base, symbol)
        cls = MIXERS[type_name]
        if param not in cls.model_fields or param == "type":
            allowed = [f for f in cls.model_fields if f != "type"]
            problems.add(key_path, f"mixer {symbol} ({type_name}) has no parameter {param!r}{_near(param, allowed)}"
                                   f" allowed: {', '.join(allowed)}")
            return
        for i, domain in enumerate(choice.domains):
            for j, value in enumerate(domain.values()):
                try:
                    cls.model_validate({"type": type_name, param: value})
                except ValidationError as exc:
                    per = _is_per_stage_form(choice)
                    problems.add(key_path + ((i, j) if per else (j,)),
                                 f"{f'stage {i}: ' if per else ''}{first_message(exc)}, got {value!r}")
                    return
        return
    for i, domain in enumerate(choice.domains):
        for j, value in enumerate(domain.values()):
            data = copy.deepcopy(base_data)
            if choice.path == ("layout",):
                layout = parse_layout(space_base.layout)
                layout[i] = value
                data["layout"] = layout
                if not isinstance(value, str) or _mixer_type(space_base, value) is None:
                    from ..mixers import symbol_names

                    names = sorted(set(symbol_names(space_base.macro)) | set(space_base.mixers))
                    problems.add(key_path + ((i, j) if _is_per_stage_form(choice) else (j,)),
                                 f"stage {i}: unknown mixer symbol {value!r}{_near(value, names)} known symbols: "
                                 f"{', '.join(names)}")
                    return
                continue
            if choice.per_stage:
                current = data.get(choice.path[0])
                values = list(current) if isinstance(current, list) and len(current) == n else [current] * n
                values[i] = value
                data[choice.path[0]] = values
            else:
                _set(data, choice.path, value)
            try:
                validate_data(data, Locations())
            except SpecError as exc:
                msg = _message_about(exc, choice.path[:1])
                where = key_path + ((i, j) if _is_per_stage_form(choice) else (j,))
                problems.add(where, f"option {value!r}{f' (stage {i})' if choice.per_stage else ''}: {msg}")
                return


def _message_about(exc: SpecError, field: tuple) -> str:
    """The message of the problem an option caused: the one at the option's own field (a layout of three stages
    in a four-stage base also makes widths and depths disagree with it), else the first."""
    here = [p for p in exc.problems if tuple(p.path[:len(field)]) == tuple(field)]
    return (here or exc.problems)[0].message if exc.problems else str(exc)


def whole_label(value: Any) -> Any:
    """What Optuna draws for a whole value: ``[2, 3, 4, 5]`` -> ``"2-3-4-5"``; a scalar is itself."""
    return "-".join(str(v) for v in value) if isinstance(value, list) else value


def _whole_choice(key: str, path: tuple, value: Mapping, base: Spec, base_data: dict, where: tuple,
                  problems: _Problems) -> Choice | None:
    """``{whole: [v1, v2, ...]}``: one categorical over whole values of the field, each validated in the base."""
    if set(value) != {"whole"} or not isinstance(value["whole"], list) or not value["whole"]:
        problems.add(where, "write whole values as {whole: [value, value, ...]}, each the field's complete value "
                            f"(a list of one value per stage for a per-stage field), got {dict(value)!r}")
        return None
    options = value["whole"]
    n = base.num_stages
    per_stage = path[0] in PER_STAGE_FIELDS or path[0] == "mixers"
    labels: dict = {}
    for j, option in enumerate(options):
        here = where + ("whole", j)
        items = option if isinstance(option, list) else [option]
        if not items or not all(v is None or isinstance(v, (bool, int, float, str)) for v in items):
            problems.add(here, f"a whole value is a number, string, boolean or null, or a list of them (one per "
                               f"stage), got {option!r}")
            return None
        if isinstance(option, list) and not per_stage:
            problems.add(here, f"{key} is not a per-stage field: its whole values are single values, got {option!r}")
            return None
        if isinstance(option, list) and len(option) != n:
            problems.add(here, f"{len(option)} values but the base has {n} stages; give one per stage")
            return None
        label = whole_label(option)
        if label in labels:
            problems.add(here, f"whole value {option!r} repeats {labels[label]!r}; list each once")
            return None
        labels[label] = option
        data = copy.deepcopy(base_data)
        if path == ("layout",):
            data["layout"] = option
        elif path[0] == "mixers":
            symbol, param = path[1], path[2]
            type_name = _mixer_type(base, symbol)
            if param not in MIXERS[type_name].model_fields or param == "type":
                allowed = [f for f in MIXERS[type_name].model_fields if f != "type"]
                problems.add(where, f"mixer {symbol} ({type_name}) has no parameter {param!r}"
                                    f"{_near(param, allowed)} allowed: {', '.join(allowed)}")
                return None
            mixers = data.setdefault("mixers", {}) or {}
            data["mixers"] = mixers
            entry = mixers.get(symbol) or {}
            mixers[symbol] = {"type": entry} if isinstance(entry, str) else dict(entry)
            mixers[symbol][param] = option
        elif per_stage:
            data[path[0]] = option
        else:
            _set(data, path, option)
        try:
            validate_data(data, Locations())
        except SpecError as exc:
            msg = _message_about(exc, path[:1])
            problems.add(here, f"whole value {option!r}: {msg}")
            return None
    if path == ("layout",):   # whole layouts, as the layout: [A-A-A-M, ...] form gives them
        return Choice(key, path, False, [Domain(options=[str(label) for label in labels])], whole_layouts=True)
    return Choice(key, path, per_stage, [Domain(options=list(labels))], whole=labels)


def _is_per_stage_form(choice: Choice) -> bool:
    return getattr(choice, "_per_stage_form", False)


def parse_space(data: Any, locs: Locations, file: str, space_dir: Path, default_name: str) -> SearchSpace:
    problems = _Problems(locs)
    if not isinstance(data, Mapping):
        problems.add((), "a search space must be a mapping with base: and choices:")
        problems.raise_if_any()
    for key in data:
        if key not in SPACE_FIELDS:
            problems.add((key,), f"unknown field {key!r}{_near(key, SPACE_FIELDS)} allowed: {', '.join(SPACE_FIELDS)}")
    for key in ("base", "choices"):
        if key not in data:
            problems.add((), f"required field {key!r} is missing")
    problems.raise_if_any()
    base, base_data = _load_base(data["base"], locs, space_dir)
    n = base.num_stages
    raw_choices = data["choices"]
    if not isinstance(raw_choices, Mapping) or not raw_choices:
        problems.add(("choices",), "expected a mapping of spec paths to options, e.g. "
                                   "{layout: [Conv, A], mixers.Conv.kernel_size: [3, 5, 7]}")
        problems.raise_if_any()
    choices: list[Choice] = []
    for key, value in raw_choices.items():
        path = tuple(str(key).split("."))
        where = ("choices", key)
        if path[0] not in Spec.model_fields or path[0] in ("name", "macro"):
            allowed = [f for f in Spec.model_fields if f not in ("name", "macro")]
            problems.add(where, f"unknown spec field {path[0]!r}{_near(path[0], allowed)} allowed: "
                                f"{', '.join(allowed)}, mixers.SYMBOL.param")
            continue
        if path[0] == "mixers":
            if len(path) != 3:
                problems.add(where, f"write mixer parameters as mixers.SYMBOL.param, got {key!r}")
                continue
            if _mixer_type(base, path[1]) is None:
                problems.add(where, f"unknown mixer symbol {path[1]!r} for macro {base.macro}")
                continue
        elif path[0] in PER_STAGE_FIELDS and len(path) > 1:
            problems.add(where, f"{path[0]} is chosen per stage as a whole; write {path[0]}: [...]")
            continue
        if isinstance(value, Mapping) and "whole" in value:
            choice = _whole_choice(str(key), path, value, base, base_data, where, problems)
            if choice is not None:
                choices.append(choice)
            continue
        if path == ("layout",) and isinstance(value, list) and value and all(isinstance(v, str) and "-" in v
                                                                             for v in value):
            # whole layouts (as TransNeXt's Table 9 lists them): one option per network, not per stage
            for j, option in enumerate(value):
                try:
                    validate_data({**copy.deepcopy(base_data), "layout": option}, Locations())
                except SpecError as exc:
                    msg = _message_about(exc, ("layout",))
                    problems.add(where + (j,), f"layout {option!r}: {msg}")
            choices.append(Choice(str(key), path, False, [Domain(options=list(value))], whole_layouts=True))
            continue
        per_stage = path[0] in PER_STAGE_FIELDS or path[0] == "mixers"
        per_stage_form = isinstance(value, list) and any(isinstance(v, (list, Mapping)) for v in value) \
            and per_stage
        if per_stage_form:
            if len(value) != n:
                problems.add(where, f"has {len(value)} per-stage option lists but the base has {n} stages; give "
                                    "one option list per stage, or one list for every stage")
                continue
            domains = [_domain(v, where + (i,), problems) for i, v in enumerate(value)]
        else:
            domain = _domain(value, where, problems)
            domains = [domain] * (n if per_stage else 1)
        if any(d is None for d in domains):
            continue
        choice = Choice(str(key), path, per_stage, domains)
        choice._per_stage_form = per_stage_form  # type: ignore[attr-defined]
        _check_options(base, base_data, choice, problems)
        choices.append(choice)
    problems.raise_if_any()
    # a mixer parameter must be usable somewhere
    layout_choice = next((c for c in choices if c.path == ("layout",)), None)
    symbols = [set(s) for s in base.stage_symbols()]
    if layout_choice is not None:
        if layout_choice.whole_layouts:  # the symbols any of the layouts puts in each stage
            options = [parse_layout(v) for v in layout_choice.domains[0].options]
            symbols = [{o[i] for o in options if i < len(o)} for i in range(len(symbols))]
        else:
            symbols = [set(d.values()) for d in layout_choice.domains]
    for choice in choices:
        if choice.mixer and not any(choice.mixer[0] in s for s in symbols):
            problems.add(("choices", choice.key), f"mixer {choice.mixer[0]} is not used in any stage of the base "
                                                  f"and not among the layout choices; add it to choices.layout")
    budget = data.get("budget") or {}
    macs = params = latency = min_macs = None
    if not isinstance(budget, Mapping):
        problems.add(("budget",), f"expected {{macs: 5G, params: 30M, latency: 25ms}}, got {budget!r}")
    else:
        for key in budget:
            if key not in BUDGET_KEYS:
                problems.add(("budget", key), f"unknown budget {key!r}{_near(key, list(BUDGET_KEYS))} "
                                              f"allowed: {', '.join(BUDGET_KEYS)}")
        try:
            if budget.get("latency") is not None:
                latency = parse_latency(budget["latency"], "latency")
        except ValueError as exc:
            problems.add(("budget", "latency"), str(exc).removeprefix("latency: "))
        try:
            macs = positive_budget(budget["macs"], "MAC") if budget.get("macs") is not None else None
        except ValueError as exc:
            problems.add(("budget", "macs"), str(exc))
        try:
            params = positive_budget(budget["params"], "parameter") if budget.get("params") is not None else None
        except ValueError as exc:
            problems.add(("budget", "params"), str(exc))
        try:
            if budget.get("min_macs") is not None:
                min_macs = mac_floor(budget["min_macs"])
                check_floor(min_macs, macs)
        except ValueError as exc:
            problems.add(("budget", "min_macs"), str(exc))
    objective = data.get("objective")
    if objective is not None and not isinstance(objective, str):
        problems.add(("objective",), f"expected an objective name such as proxy or proxy,macs, got {objective!r}")
    name = data.get("name") or default_name
    if not isinstance(name, str):
        problems.add(("name",), f"expected a name, got {name!r}")
    train = data.get("train") or {}
    if not isinstance(train, Mapping):
        problems.add(("train",), f"expected a mapping of training settings (e.g. {{epochs: 3, lr: 0.002}}), got "
                                 f"{train!r}")
    else:
        for key, message in train_problems(dict(train)):
            problems.add(("train", key) if key else ("train",), message)
    problems.raise_if_any()
    order = sorted(choices, key=lambda c: (c.path != ("layout",), c.mixer is not None))
    space = SearchSpace(name, base, base_data, order, macs, params, latency, min_macs, objective, file, locs,
                        train=dict(train) if isinstance(train, Mapping) else {})
    starts = data.get("warm_start")
    if starts is not None:
        if not isinstance(starts, list) or not all(isinstance(v, str) and v for v in starts):
            problems.add(("warm_start",), f"expected a list of presets or spec paths, e.g. [caformer_s18], got "
                                          f"{starts!r}")
        else:
            for j, start in enumerate(starts):
                try:
                    space.warm_start.append((start, warm_start_params(space, start, space_dir)))
                except ValueError as exc:
                    problems.add(("warm_start", j), f"{shown(start)}: {exc}")
    problems.raise_if_any()
    return space


def _canonical(spec: Spec) -> dict:
    """What the built network depends on: the spec's fields with every stage's mixers resolved to their configs
    (so ``kernel_size: 7`` written out equals the default 7 left out), without its name, class count and
    drop-path rate."""
    from ..plan import resolve_mixer

    data = spec_to_data(spec)
    # the classes follow the search's data; the drop-path rate is training's, not the architecture's
    for key in ("name", "mixers", "layout", "num_classes", "drop_path_rate"):
        data.pop(key, None)
    data["stage_mixers"] = [[(symbol, resolve_mixer(spec, symbol, i).model_dump()) for symbol in symbols]
                            for i, symbols in enumerate(spec.stage_symbols())]
    data["depths"] = list(spec.depths)
    return data


def _in_domain(value: Any, domain: Domain) -> bool:
    if domain.options is not None:
        return any(value == o and isinstance(value, bool) == isinstance(o, bool) for o in domain.options)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not domain.low <= value <= domain.high:
        return False
    return not domain.step or abs((value - domain.low) / domain.step - round((value - domain.low) / domain.step)) \
        < 1e-9


def _shown(domain: Domain) -> str:
    if domain.options is not None:
        return ", ".join(str(o) for o in domain.options)
    return f"{domain.low}..{domain.high}" + (f" step {domain.step}" if domain.step else "")


def warm_start_params(space: SearchSpace, source: str, space_dir: Path | None = None) -> dict:
    """The parameters a trial must draw for ``space`` to give the network of ``source`` (a preset or a spec
    path, relative to ``space_dir``): what ``study.enqueue_trial`` needs to try a published design first. A
    ValueError says where the design leaves the space: a drawn value that is not among the choice's options, or
    a field the space does not vary that differs from its base."""
    path = (space_dir or Path.cwd()) / source
    try:
        target = load_spec(str(path) if looks_like_path(source) else source)
    except SpecError as exc:
        raise ValueError(str(exc.problems[0].message if exc.problems else exc)) from None
    if not isinstance(target, Spec):
        raise ValueError("an ensemble; a warm start is one network of the space")
    if target.num_stages != space.num_stages:
        raise ValueError(f"has {target.num_stages} stages, the space's base {space.num_stages}")
    stage_symbols = target.stage_symbols()
    target_data = spec_to_data(target)
    by_key = {c.key: c for c in space.choices}

    def wanted(name: str, domain: Domain) -> Any:
        from ..plan import resolve_mixer

        key, _, index = name.partition("[")
        i = int(index.rstrip("]")) if index else None
        choice = by_key.get(key) or by_key.get("layout")
        if choice.whole_layouts:
            layout = "-".join("+".join(s) if len(s) > 1 else s[0] for s in stage_symbols)
            match = [o for o in domain.options if parse_layout(o) == parse_layout(target.layout)]
            if not match:
                raise ValueError(f"layout {layout} is not among the space's layouts ({_shown(domain)})")
            return match[0]
        if choice.path == ("layout",):
            symbols = list(dict.fromkeys(stage_symbols[i]))
            value = symbols[0] if len(symbols) == 1 else None
            if value is None or not _in_domain(value, domain):
                raise ValueError(f"stage {i} uses {'+'.join(symbols)}, not among the space's layout options "
                                 f"({_shown(domain)})")
            return value
        if choice.mixer is not None:
            symbol, param = choice.mixer
            used = [j for j in range(space.num_stages) if symbol in stage_symbols[j]]
            values = [getattr(resolve_mixer(target, symbol, j), param) for j in range(space.num_stages)]
            if choice.whole is not None:
                for label, option in choice.whole.items():
                    if all(_stage(option, j) == values[j] for j in used):
                        return label
                raise ValueError(f"mixers.{symbol}.{param} is {[values[j] for j in used]} in the stages using "
                                 f"{symbol}, not among the space's whole values ({_shown(domain)})")
            value = values[i]
        elif choice.whole is not None:
            value = target_data.get(choice.path[0]) if choice.per_stage else _at(target_data, choice.path)
            for label, option in choice.whole.items():
                if option == value:
                    return label
            raise ValueError(f"{key} is {value!r}, not among the space's whole values ({_shown(domain)})")
        elif choice.per_stage:
            value = _stage(getattr(target, choice.path[0]), i)
        else:
            value = _at(target_data, choice.path)
        if not _in_domain(value, domain):
            where = f"{key}[{i}]" if i is not None else key
            raise ValueError(f"{where} is {value!r}, not among the space's options ({_shown(domain)})")
        return value

    data, drawn = space.sample(wanted)
    check = space.check(data)
    if check.error is not None:
        raise ValueError(f"the space's network with its choices does not validate: {check.error}")
    mine, theirs = _canonical(check.spec), _canonical(target)
    differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
    differ.sort(key=lambda k: k == "stage_mixers")
    if differ:
        k = differ[0]
        if k == "stage_mixers":
            stage = next(j for j, (a, b) in enumerate(zip(mine[k], theirs[k])) if a != b)
            raise ValueError(f"stage {stage}'s mixers differ from the space's ({theirs[k][stage]} here, "
                             f"{mine[k][stage]} in the space; the space does not vary what differs)")
        more = ", ".join("mixers" if d == "stage_mixers" else d for d in differ[1:])
        raise ValueError(f"{k} is {theirs.get(k)!r}, the space's base has {mine.get(k)!r} and does not vary it"
                         f"{f' (also differs: {more})' if more else ''}")
    return drawn


def _stage(value: Any, i: int) -> Any:
    return value[i] if isinstance(value, (list, tuple)) else value


def _at(data: Mapping, path: tuple) -> Any:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def positive_budget(value, what: str) -> int:
    """A budget as an exact count of at least 1: 0 (or a fraction rounding to 0) admits no model, and never
    means "no limit" (leave the budget out for that)."""
    count = parse_count(value)
    if count < 1:
        raise ValueError(f"a {what} budget must be at least 1, got {value!r} (a budget of 0 admits no model; "
                         f"leave it out for none)")
    return count


def mac_floor(value) -> int:
    """A MAC floor as an exact count of at least 1 (leave it out for none)."""
    count = parse_count(value)
    if count < 1:
        raise ValueError(f"a MAC floor must be at least 1, got {value!r} (leave it out for none)")
    return count


def check_floor(min_macs: int | None, macs: int | None) -> None:
    """A MAC floor must lie below the MAC budget: a floor at or above it admits no model (or exactly one MAC count)."""
    if min_macs is not None and macs is not None and min_macs >= macs:
        raise ValueError(f"the MAC floor {format_count(min_macs)} ({min_macs:,}) is not below the MAC budget "
                         f"{format_count(macs)} ({macs:,}): no model would fit; give a floor below the budget")


BUDGET_KEYS = ("macs", "min_macs", "params", "latency")
"""The keys of a space's ``budget:``."""

DEFAULT_SPACE = "metaformer_s18"
"""What ``composer search`` searches when no space is given: the S18 MetaFormer / HyenaPixel / HorNet / attention
space around CAFormer-S18 (search/metaformer_s18.yaml)."""


def space_path(name_or_path: str) -> Path:
    """The file of a search space given as a path or as the name of a shipped space (``metaformer_s18``) or of
    one in ``$COMPOSER_SEARCH_PATH``; a SpecError naming the spaces and folders searched when neither exists."""
    path = Path(name_or_path)
    if exists(path):  # a folder or a pipe is read (and refused) as the file it was given as
        return path
    if not looks_like_path(name_or_path):
        found = find_space(name_or_path)
        if found is not None:
            return found
        hint = not_found_hint(name_or_path, space_names(), space_search_path(), "search spaces")
        raise SpecError(Problem(f"no search-space file or search space named {short_name(name_or_path)!r}{hint}",
                                (), short_name(name_or_path)))
    hint = named_instead(name_or_path, space_names(), "search")
    shown = short_name(name_or_path)
    check_name(name_or_path, At("cannot read search-space file", file=shown))  # a name too long, a NUL: say so
    raise SpecError(Problem(f"no such search-space file: {shown}{hint}", (), shown))


def load_space(source: str | os.PathLike | Mapping | SearchSpace) -> SearchSpace:
    """A :class:`SearchSpace` from a YAML path, the name of a shipped space (``metaformer_s18``), YAML text or a
    mapping. Problems raise SpecError (file:line)."""
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, Mapping):
        locs = Locations(default_file="<dict>")
        return parse_space(dict(source), locs, "<dict>", Path.cwd(), "space")
    text = os.fspath(source)
    if "\n" in text or (":" in text and not is_file(Path(text))):  # YAML text; a file name may hold a colon
        data, locs = parse_yaml(text, "<string>")
        return parse_space(data, locs, "<string>", Path.cwd(), "space")
    path = space_path(text)
    if path != Path(text):
        text = display_path(path)
    data, locs = read_spec_file(path, text)  # unreadable or non-UTF-8 files end in a located SpecError
    return parse_space(data, locs, text, path.parent, path.stem)
