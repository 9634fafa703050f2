"""JSON Schemas of the spec language and of search-space files, for editors and other tools.

``spec_schema()`` describes spec files *as users write them*, which is more than the validated
:class:`~composer.spec.Spec` model: ``extends:`` (then ``widths`` / ``depths`` / ``layout`` come from the
parent), shorthand strings (``norm: layernorm_nobias``, ``head: linear``), partial ``channel_mixer`` /
``head`` mappings merged over the macro's defaults, ``mixers:`` entries without ``type`` for known symbols,
and ensembles. Mixer configs come from the registry (:data:`composer.mixers.MIXERS`) when the schema is
made, so mixers added later are covered without touching this module.

The schema is JSON Schema draft-07 (``definitions``, ``if``/``then``): the YAML language server of VS Code
(and most editors) implements draft-07 fully and later drafts only in part.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic.json_schema import models_json_schema
from pydantic_core import PydanticUndefined

DRAFT = "http://json-schema.org/draft-07/schema#"
SPEC_SCHEMA_ID = "https://composer.invalid/schemas/spec.json"
SPACE_SCHEMA_ID = "https://composer.invalid/schemas/search-space.json"
_REF = "#/definitions/{model}"

# ``parse_count``'s grammar (composer/spec/units.py) as a JSON Schema pattern: JSON Schema regexes have no
# case-insensitive flag, so every letter is a class
_UNIT_WORD = "(?:[fF][lL][oO][pP][sS]?|[mM][aA][cC][sS]?|[pP][aA][rR][aA][mM](?:[sS]|[eE][tT][eE][rR][sS])?)"
COUNT_PATTERN = r"^\s*[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?\s*[kKmMgGtT]?\s*" + _UNIT_WORD + r"?\s*$"


def _ref(name: str) -> dict:
    return {"$ref": _REF.format(model=name)}


def _json_default(value: Any) -> tuple[bool, Any]:
    """(True, value as JSON) when ``value`` is a plain JSON default an editor can insert."""
    if value is PydanticUndefined or value is None:
        return False, None
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    try:
        json.dumps(value)
    except TypeError:
        return False, None
    return True, value


def _describe_mixer(cls, override_schema: dict, symbols: list[str]) -> dict:
    """The per-stage override schema of mixer ``cls`` with its real defaults and a description for editors."""
    schema = copy.deepcopy(override_schema)
    for name, prop in schema.get("properties", {}).items():
        info = cls.model_fields.get(name)
        if info is None:
            continue
        prop.pop("default", None)  # the override's None means "not given", not the mixer's default
        ok, default = _json_default(info.default)
        if ok:
            prop["default"] = default
        if name != "type" and "description" not in prop:
            prop["description"] = "one value for all stages or a list with one value per stage"
        elif name != "type":
            prop["description"] += " (one value, or one per stage)"
    doc_lines = (cls.__doc__ or "").strip().splitlines()
    lines = [cls.summary or (doc_lines[0] if doc_lines else "")]
    if cls.paper:
        lines.append(f"Paper: {cls.paper}.")
    if symbols:
        lines.append(f"Layout symbols: {', '.join(symbols)}.")
    if cls.cost_formula:
        lines.append(f"Cost: {cls.cost_formula}.")
    schema["description"] = " ".join(line for line in lines if line)
    schema["title"] = f"mixer type {cls.model_fields['type'].default}"
    return schema


def _shorthand_or_object(definition: dict, shorthands: list[str], what: str) -> dict:
    return {"description": definition.get("description", ""),
            "anyOf": [{"type": "string", "enum": shorthands, "description": f"{what} shorthand"}, definition]}


def _symbol_table() -> dict[str, list]:
    from .mixers import SYMBOLS

    return {name: sorted(entries.values(), key=lambda s: s.macro or "") for name, entries in SYMBOLS.items()}


def _definitions() -> tuple[dict, dict]:
    """Definitions for every model the schema refers to, keyed by model name, plus mixer type -> def name."""
    from .channel import CHANNEL_MIXERS
    from .mixers import MIXERS
    from .perstage import per_stage_model
    from .spec import EnsembleSpec, Spec

    overrides = {type_name: per_stage_model(cls) for type_name, cls in sorted(MIXERS.items())}
    models = [Spec, EnsembleSpec, *overrides.values(), *CHANNEL_MIXERS.values()]
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    defs = top["$defs"]
    by_type = {type_name: model.__name__ for type_name, model in overrides.items()}
    symbols: dict[str, list[str]] = {}
    for name, entries in _symbol_table().items():
        for sym in entries:
            label = name if sym.macro is None else f"{name} (macro {sym.macro})"
            symbols.setdefault(sym.type, []).append(label)
    for type_name, def_name in by_type.items():
        defs[def_name] = _describe_mixer(MIXERS[type_name], defs[def_name], symbols.get(type_name, []))
    return defs, by_type


def _typed_mixer(by_type: dict[str, str]) -> dict:
    """A mixer entry with an explicit ``type`` (a new symbol, or a known one re-typed): ``type`` picks the
    parameters through if/then, so an editor completes the right ones and errors name the right type."""
    from .mixers import MIXERS

    return {
        "type": "object",
        "description": "a mixer config: type plus parameters (each one value, or one value per stage)",
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": sorted(by_type),
                                "description": "; ".join(f"{t}: {MIXERS[t].summary}" for t in sorted(by_type))}},
        "allOf": [{"if": {"properties": {"type": {"const": t}}, "required": ["type"]}, "then": _ref(d)}
                  for t, d in sorted(by_type.items())],
    }


def _known_symbol_entry(name: str, entries: list, by_type: dict[str, str]) -> dict:
    """``mixers.SYMBOL`` for a registered symbol: its own type's parameters without ``type`` (an override),
    or any typed config; empty (``Conv:``) means no override."""
    docs = "; ".join(f"{s.type}" + (f" in macro {s.macro}" if s.macro else "") + (f": {s.doc}" if s.doc else "")
                     for s in entries)
    own = [_ref(by_type[t]) for t in dict.fromkeys(s.type for s in entries) if t in by_type]
    return {"description": f"{name}: {docs}",
            "anyOf": [*own, _ref("TypedMixer"), {"type": "null"}]}


def spec_schema() -> dict:
    """The JSON Schema (draft-07) of spec files as written: single specs, ``extends:`` variants, ensembles."""
    from .channel import CHANNEL_MIXERS
    from .parts import _NORM_SHORTHANDS
    from .spec.model import ENSEMBLE_FAMILIES

    defs, by_type = _definitions()
    defs["TypedMixer"] = _typed_mixer(by_type)

    extends = {"type": "string", "minLength": 1,
               "description": "a preset name (a file in specs/ or $COMPOSER_SPECS_PATH) or a path relative to "
                              "this file; this file's fields are merged over the parent's (mappings key by key)"}

    spec = defs.pop("Spec")
    spec["description"] = (spec.get("description", "") + " Fields left out take the macro's defaults; with "
                           "extends: they come from the parent.").strip()
    props = spec["properties"]
    props["extends"] = extends
    symbols = _symbol_table()
    props["mixers"] = {
        "type": "object",
        "description": props["mixers"].get("description", ""),
        "properties": {name: _known_symbol_entry(name, entries, by_type) for name, entries in sorted(symbols.items())},
        "additionalProperties": _ref("TypedMixer"),
    }
    known = ", ".join(f"{n} ({'/'.join(dict.fromkeys(s.type for s in e))})" for n, e in sorted(symbols.items()))
    props["layout"]["description"] += f". Registered symbols: {known}; more under mixers: with a type"
    props["layout"]["examples"] = ["Conv-Conv-A-A", ["Conv", "Conv", "A", "A"]]
    channel = [_ref(cls.__name__) for cls in CHANNEL_MIXERS.values()]
    props["channel_mixer"] = {"description": "the block's channel mixer; a mapping without type is merged over "
                                             "the macro's default", "anyOf": [*channel, {"type": "null"}]}
    # ``required`` only where nothing is inherited
    required = spec.pop("required", [])
    spec["if"] = {"required": ["extends"]}
    spec["else"] = {"required": required}
    defs["RawSpec"] = spec

    norm = defs.pop("NormConfig")
    defs["Norm"] = _shorthand_or_object(norm, list(_NORM_SHORTHANDS), "norm")
    head = defs.pop("HeadConfig")
    head["description"] = (head.get("description", "") + " A partial mapping is merged over the macro's head.")
    head_types = head["properties"]["type"].get("enum") or [head["properties"]["type"].get("const")]
    defs["Head"] = _shorthand_or_object(head, head_types, "head")

    ensemble = defs.pop("EnsembleSpec")
    ensemble["properties"]["extends"] = extends
    ensemble["properties"]["ensemble"] = {
        "description": ensemble["properties"]["ensemble"].get("description", ""),
        "anyOf": [{"type": "string", "pattern": r"^[^/]+(/[^/]+)+$",
                   "description": f"shorthand with size: (s18 ...): {', '.join(ENSEMBLE_FAMILIES)}"},
                  {"type": "array", "minItems": 2,
                   "items": {"anyOf": [{"type": "string", "description": "a preset name or a path"},
                                       _ref("RawSpec")]}}]}
    defs["Ensemble"] = ensemble

    text = json.dumps(defs)
    for old, new in (("NormConfig", "Norm"), ("HeadConfig", "Head")):
        text = text.replace(json.dumps(_REF.format(model=old)), json.dumps(_REF.format(model=new)))
    defs = json.loads(text)
    _drop_openapi_keys(defs)
    return {
        "$schema": DRAFT,
        "$id": SPEC_SCHEMA_ID,
        "title": "composer spec",
        "description": "A composer backbone spec (YAML): macro, per-stage widths/depths, a token-mixer layout; "
                       "or an ensemble: of specs. Generated by `composer schema`.",
        "if": {"type": "object", "required": ["ensemble"]},
        "then": _ref("Ensemble"),
        "else": _ref("RawSpec"),
        "definitions": dict(sorted(defs.items())),
    }


def _drop_openapi_keys(node: Any) -> None:
    """pydantic adds OpenAPI's ``discriminator`` next to ``oneOf``; draft-07 validators ignore it, but it would
    point at ``$defs``, so drop it."""
    if isinstance(node, dict):
        node.pop("discriminator", None)
        for value in node.values():
            _drop_openapi_keys(value)
    elif isinstance(node, list):
        for value in node:
            _drop_openapi_keys(value)


def count_schema(description: str) -> dict:
    return {"description": description, "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": COUNT_PATTERN,
         "examples": ["5GFLOPs", "4.1G", "30M", "800K params", "1.5e9"]}]}


def _train_schema() -> dict:
    """``train:``: composer.train's settings and recipe keys side by side (each with its description)."""
    from .train.recipe import Recipe, TrainSettings

    properties = {}
    for model in (TrainSettings, Recipe):
        schema = model.model_json_schema()
        for name, prop in schema["properties"].items():
            if name == "recipe":
                continue
            prop = {k: v for k, v in prop.items() if k != "title"}
            if "anyOf" in prop:
                prop["anyOf"] = [{k: v for k, v in p.items() if k != "title"} for p in prop["anyOf"]]
            properties[name] = prop
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "description": "--objective train: data, split, device and the training recipe (timm's optimizer, "
                           "scheduler, Mixup, EMA); the command line's flags override these"}


def search_space_schema() -> dict:
    """The JSON Schema (draft-07) of search-space files (``search/*.yaml``): base spec, choices, budget."""
    spec = spec_schema()
    option = {"type": ["number", "string", "boolean", "null"]}
    domain = {"anyOf": [
        {"type": "array", "minItems": 1, "items": option, "description": "options"},
        {"type": "object", "required": ["low", "high"], "additionalProperties": False,
         "description": "a range",
         "properties": {"low": {"type": "number"}, "high": {"type": "number"}, "step": {"type": "number"},
                        "log": {"type": "boolean", "default": False}}},
        option]}
    per_stage = {"type": "array", "items": domain, "description": "one option list per stage"}
    whole = {"type": "object", "required": ["whole"], "additionalProperties": False,
             "description": "whole values: each option is the field's complete value (all stages at once), as a "
                            "paper's ablation lists them",
             "properties": {"whole": {"type": "array", "minItems": 1, "items": {"anyOf": [
                 option, {"type": "array", "minItems": 1, "items": option}]}}}}
    return {
        "$schema": DRAFT,
        "$id": SPACE_SCHEMA_ID,
        "title": "composer search space",
        "description": "A base spec plus choices and a budget for `composer search`. Generated by `composer schema "
                       "--search-space`.",
        "type": "object",
        "additionalProperties": False,
        "required": ["base", "choices"],
        "properties": {
            "name": {"type": "string", "description": "defaults to the file name"},
            "description": {"type": "string"},
            "base": {"description": "a preset, a spec path (relative to this file) or an inline spec",
                     "anyOf": [{"type": "string", "minLength": 1}, _ref("RawSpec")]},
            "choices": {
                "type": "object", "minProperties": 1,
                "description": "dotted spec paths (layout, depths, mixers.SYMBOL.param, ...) -> options",
                "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[^.]+)*$"},
                "additionalProperties": {"anyOf": [domain, per_stage, whole]}},
            "warm_start": {"type": "array", "items": {"type": "string", "minLength": 1},
                           "description": "presets or spec paths (relative to this file) tried first; each must "
                                          "lie inside the space"},
            "budget": {"type": "object", "additionalProperties": False,
                       "description": "hard budget, checked from the Plan before anything is built",
                       "properties": {"macs": count_schema("MACs (a FLOP is a MAC here): 5G, 5GFLOPs, 4.1e9"),
                                      "params": count_schema("parameters: 30M, 800K params"),
                                      "latency": {"description": "predicted ms of one forward on --device at "
                                                                 "--batch-size (composer latency): 25ms, 0.5s",
                                                  "anyOf": [{"type": "number", "exclusiveMinimum": 0},
                                                            {"type": "string",
                                                             "pattern": r"^\s*[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"
                                                                        r"\s*(?:ms|us|µs|s)?\s*$"}]}}},
            "train": _train_schema(),
            "objective": {"type": "string", "examples": ["proxy", "train", "proxy,macs"],
                          "description": "proxy | naswot | gradnorm | zico | train | a plugin's objective, or several "
                                         "joined by commas with macs | params | latency for a Pareto search"},
        },
        "definitions": spec["definitions"],
    }


__all__ = ["COUNT_PATTERN", "count_schema", "search_space_schema", "spec_schema"]
