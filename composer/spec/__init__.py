"""The spec language: loading YAML (with file:line for every field), validation, dumping."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..channel import CHANNEL_MIXERS
from ..mixers import MIXERS, resolve_symbol
from ..parts import HeadConfig, NormConfig
from ..perstage import StageValues, per_stage_model
from .errors import Problem, SpecError, format_path
from .model import EnsembleSpec, Spec, check_ensemble, check_spec, unknown_symbol_message
from .source import (
    Locations,
    display_path,
    find_preset,
    is_file,
    looks_like_path,
    parse_yaml,
    read_spec_file,
    resolve_extends,
)
from .units import format_count, parse_count

SpecLike = Spec | EnsembleSpec | str | os.PathLike | Mapping
AnySpec = Spec | EnsembleSpec


def _model_at(path: tuple, data: Any) -> type | None:
    """The pydantic model that validates the mapping at ``path`` (for listing its allowed fields)."""
    if path == ():
        return EnsembleSpec if isinstance(data, Mapping) and "ensemble" in data else Spec
    if len(path) == 2 and path[0] == "mixers":
        entry = data.get("mixers", {}).get(path[1]) if isinstance(data, Mapping) else None
        type_name = entry.get("type") if isinstance(entry, Mapping) else None
        if type_name is None:
            known = resolve_symbol(str(path[1]), str(data.get("macro", "metaformer")))
            type_name = known.type if known else None
        cls = MIXERS.get(type_name)
        return per_stage_model(cls) if cls else None
    if path == ("channel_mixer",):
        entry = data.get("channel_mixer") if isinstance(data, Mapping) else None
        return CHANNEL_MIXERS.get(entry.get("type")) if isinstance(entry, Mapping) else None
    if path == ("head",):
        return HeadConfig
    if path and path[-1] in ("norm", "stem_norm", "downsample_norm", "hidden_norm"):
        return NormConfig
    return None


def _near(word: str, options) -> str:
    import difflib

    near = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else ""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_ABSENT = object()  # a place the spec data does not have (unlike an explicit null)


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Drop the discriminator tags pydantic inserts into error locations of tagged unions."""
    path, node = [], data
    for part in loc:
        if isinstance(node, Mapping) and part not in node and (part in MIXERS or part in CHANNEL_MIXERS):
            continue
        if isinstance(part, str) and node is not _ABSENT and not isinstance(node, Mapping):
            continue  # a union member's label (``str``, ``list[str]``), not a place in the spec
        path.append(part)
        if isinstance(node, Mapping):
            node = node.get(part, _ABSENT)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = _ABSENT
    return tuple(path)


def _problems(exc: ValidationError, data: Any) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        path = _clean_loc(err["loc"], data)
        kind, given = err["type"], err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            model = _model_at(path[:-1], data)
            allowed = sorted(model.model_fields) if model else []
            msg = f"unknown field {path[-1]!r}{_near(path[-1], allowed)}"
            if allowed:
                msg += f" allowed: {', '.join(allowed)}"
        elif kind == "missing":
            msg = f"required field {path[-1]!r} is missing"
        elif kind in ("union_tag_not_found", "union_tag_invalid") and path[:1] == ("mixers",):
            if kind == "union_tag_not_found":
                macro = data.get("macro", "metaformer") if isinstance(data, Mapping) else "metaformer"
                msg = unknown_symbol_message(str(path[-1]), str(macro), [])
            else:
                tag = err.get("ctx", {}).get("tag")
                msg = f"unknown mixer type {tag!r}{_near(tag, MIXERS)} allowed types: {', '.join(sorted(MIXERS))}"
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "").replace(" or ", ", ")
            options = [e.strip().strip("'") for e in expected.split(",")]
            near = _near(given, options)
            msg = f"got {_short(given)}{near or ';'} allowed: {expected}"
        elif kind in ("int_type", "float_type") and isinstance(given, bool):
            msg = (f"{msg[:1].lower() + msg[1:]}, got the boolean {given!r} (YAML reads yes / no / on / off / "
                   "true / false as booleans); write the number")
        elif kind not in ("per_stage", "value_error") and not isinstance(given, (Mapping, list)):
            msg = f"{msg[:1].lower() + msg[1:]}, got {_short(given)}"
        else:
            msg = msg[:1].lower() + msg[1:]
        problems.append(Problem(msg, path))
    return _merge_alternatives(problems)


def _merge_alternatives(problems: list[Problem]) -> list[Problem]:
    """One problem per field: a value failing every member of a union reads 'a valid string or a valid list'."""
    merged: dict[tuple, Problem] = {}
    for problem in problems:
        if problem.path in merged:
            first = merged[problem.path]
            alt = problem.message.removeprefix("input should be ").split(", got ")[0]
            head, _, given = first.message.partition(", got ")
            first.message = f"{head} or {alt}" + (f", got {given}" if given else "")
        else:
            merged[problem.path] = problem
    # a union branch that failed on the value's type is noise when another branch got deeper into it
    return [p for p in merged.values()
            if not (p.message.startswith("input should be a valid")
                    and any(q.path[: len(p.path)] == p.path and len(q.path) > len(p.path) for q in merged.values()))]


MAX_NUMBER = 2**31
"""No number in a spec reaches this: a width, size or count beyond it is a typo, and bounding every number keeps
the closed forms of the Plan (products of several of them, some in floating point) from overflowing."""


def _number_problems(value: Any, path: tuple = ()) -> list[Problem]:
    """Non-finite or absurdly large numbers anywhere in the spec data (before pydantic sees them)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, float) and not math.isfinite(value):
        return [Problem(f"must be a finite number, got {value!r}", path)]
    if isinstance(value, (int, float)) and abs(value) >= MAX_NUMBER:
        return [Problem(f"{_short(value)} is too large: numbers in a spec must be below 2^31 "
                        f"({MAX_NUMBER:,})", path)]
    if isinstance(value, Mapping):
        return [p for key, sub in value.items() for p in _number_problems(sub, path + (key,))]
    if isinstance(value, (list, tuple)):
        return [p for i, sub in enumerate(value) for p in _number_problems(sub, path + (i,))]
    return []


def _numbers_ok(value: Any) -> bool:
    """True when :func:`_number_problems` would find nothing, without building paths or lists: the common case,
    and a search validates thousands of samples (a NaN fails ``-MAX < v < MAX`` too; other types get the full
    check)."""
    kind = type(value)
    if kind is dict:
        return all(_numbers_ok(sub) for sub in value.values())
    if kind is list:
        return all(_numbers_ok(sub) for sub in value)
    if kind is int or kind is float:
        return -MAX_NUMBER < value < MAX_NUMBER
    if kind is str or kind is bool or value is None:
        return True
    return not _number_problems(value)


def locate(problems: list[Problem], locs: Locations | None) -> list[Problem]:
    for problem in problems:
        if locs is not None and problem.file is None:
            problem.file, problem.line = locs.find(problem.path)
    return problems


def validate_data(data: Any, locs: Locations | None = None, default_name: str | None = None,
                  base_dir: Path | None = None) -> AnySpec:
    """Validate plain data (after ``extends`` is resolved) into a checked :class:`Spec` (or, for a mapping
    with ``ensemble:``, an :class:`EnsembleSpec` whose members are resolved relative to ``base_dir``)."""
    if not isinstance(data, Mapping):
        what = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(locate([Problem(f"a spec must be a mapping of fields (name:, widths:, depths:, "
                                         f"layout:, ...), got {what}")], locs))
    problems = [] if _numbers_ok(data) else _number_problems(data)
    if problems:
        raise SpecError(locate(problems, locs))
    data = dict(data)
    if default_name and "name" not in data:
        data["name"] = default_name
    if "ensemble" in data:
        try:
            ensemble = EnsembleSpec.model_validate(data)
        except ValidationError as exc:
            raise SpecError(locate(_problems(exc, data), locs)) from None
        ensemble._locations = locs
        ensemble._base_dir = base_dir
        return resolve_ensemble(ensemble)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(locate(_problems(exc, data), locs)) from None
    problems = check_spec(spec)
    if problems:
        raise SpecError(locate(problems, locs))
    spec._locations = locs
    return spec


def _sub_locations(locs: Locations | None, prefix: tuple) -> Locations:
    """The locations below ``prefix``, re-rooted (an inline member spec keeps the lines of its file)."""
    if locs is None:
        return Locations(default_file="<dict>")
    file, _ = locs.find(prefix)
    entries = {p[len(prefix):]: v for p, v in locs.entries.items() if p[: len(prefix)] == prefix and p != prefix}
    if prefix in locs.entries:
        entries[()] = locs.entries[prefix]
    return Locations(entries, default_file=file)


def resolve_ensemble(ensemble: EnsembleSpec) -> EnsembleSpec:
    """Check an ensemble and load its members (``ensemble._members``); problems keep their file:line."""
    locs = ensemble._locations
    problems = check_ensemble(ensemble)
    if problems:
        raise SpecError(locate(problems, locs))
    base_dir = getattr(ensemble, "_base_dir", None) or Path.cwd()
    overrides = {k: getattr(ensemble, k) for k in ("input_size", "num_classes") if getattr(ensemble, k) is not None}
    members: list[Spec] = []
    for i, (entry, path) in enumerate(ensemble.member_refs()):
        if isinstance(entry, str):
            data: dict = {"extends": entry}
            member_locs = Locations({("extends",): locs.find(path) if locs else ("<dict>", None)},
                                    default_file=locs.find(path)[0] if locs else "<dict>")
            default_name = Path(entry).stem
        else:
            data, member_locs, default_name = dict(entry), _sub_locations(locs, path), None
            data.setdefault("name", f"{ensemble.name or 'ensemble'}.{i}")
        for key, value in overrides.items():
            data[key] = value
            if locs is not None:
                member_locs.entries[(key,)] = locs.find((key,))
        # a member path is relative to the file it is written in (an ensemble reached through extends from
        # another folder keeps its own folder), else to the ensemble's
        written_in = locs.find(path)[0] if locs is not None else None
        member_dir = Path(written_in).parent if written_in and is_file(Path(written_in)) else base_dir
        try:
            data, member_locs = resolve_extends(data, member_locs, member_dir)
        except SpecError as exc:  # an unknown preset / missing file: point at the member, not at `extends`
            for problem in exc.problems:
                if isinstance(entry, str) and problem.path == ("extends",):
                    problem.path = path
            raise
        if isinstance(data, Mapping) and "ensemble" in data:
            raise SpecError(locate([Problem("an ensemble member cannot itself be an ensemble; list its members "
                                            "here instead", path)], locs))
        member = validate_data(data, member_locs, default_name=default_name)
        members.append(member)
    first = members[0]
    for i, (member, (_, path)) in enumerate(zip(members, ensemble.member_refs())):
        for key in ("input_size", "num_classes", "in_chans"):
            if getattr(member, key) != getattr(first, key):
                hint = f"; set {key}: in the ensemble spec" if key != "in_chans" else ""
                raise SpecError(locate([Problem(
                    f"member {i} ({member.name}) has {key} {getattr(member, key)} but member 0 ({first.name}) "
                    f"has {getattr(first, key)}; the members must agree{hint}", path)], locs))
    ensemble._members = members
    written = set(ensemble.model_fields_set)
    ensemble.input_size = first.input_size  # the ensemble's own values (what its input / output are) ...
    ensemble.num_classes = first.num_classes
    ensemble.__pydantic_fields_set__.intersection_update(written)  # ... not overrides the user wrote
    return ensemble


def _lists(value: Any) -> Any:
    """Python callers may give tuples (``depths=(2, 2, 6, 2)``) where YAML gives lists: the strict models take
    lists."""
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def load_spec(source: SpecLike) -> AnySpec:
    """A :class:`Spec` (or :class:`EnsembleSpec`) from a spec object, a mapping, a path, a preset name or
    YAML text."""
    if isinstance(source, EnsembleSpec):
        return resolve_ensemble(source)
    if isinstance(source, Spec):
        problems = check_spec(source)
        if problems:
            raise SpecError(locate(problems, source._locations))
        return source
    if isinstance(source, Mapping):
        locs = Locations(default_file="<dict>")
        data, locs = resolve_extends(_lists(source), locs, Path.cwd())
        return validate_data(data, locs)
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                           and (":" not in source or is_file(Path(source)))):
        text = os.fspath(source)
        path = Path(text)
        if not is_file(path) and not looks_like_path(text):
            preset = find_preset(text)
            if preset is None:
                from .source import not_found_hint, preset_names, short_name, spec_search_path

                hint = not_found_hint(text, preset_names(), spec_search_path(), "presets")
                raise SpecError(Problem(f"no spec file or preset named {short_name(text)!r}{hint}", (),
                                        short_name(text)))
            path = preset
            text = display_path(preset)
        data, locs = read_spec_file(path, text)
        data, locs = resolve_extends(data, locs, path.parent, (str(path.resolve()),))
        return validate_data(data, locs, default_name=path.stem, base_dir=path.parent)
    if isinstance(source, str):
        data, locs = parse_yaml(source, "<string>")
        data, locs = resolve_extends(data, locs, Path.cwd())
        return validate_data(data, locs)
    raise TypeError(f"cannot read a spec from {type(source).__name__}")


def spec_to_data(spec: AnySpec) -> dict:
    """Plain data that :func:`load_spec` turns back into an equal Spec."""
    return spec.model_dump(mode="json", exclude_unset=True)


def dump_spec(spec: AnySpec) -> str:
    return yaml.safe_dump(spec_to_data(spec), sort_keys=False, default_flow_style=None)


__all__ = ["AnySpec", "EnsembleSpec", "Locations", "Problem", "locate", "Spec", "SpecError", "StageValues",
           "dump_spec", "format_count", "format_path", "load_spec", "parse_count", "resolve_ensemble", "spec_to_data",
           "validate_data"]
