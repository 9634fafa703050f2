"""Property-based tests of the spec language (hypothesis).

1. Generated *valid* specs (any macro, 2-4 stages, layouts drawn from the mixer registry, per-block lists,
   per-stage overrides of mixer parameters, input sizes 32-96) load; when the Plan accepts one, it builds a
   model that runs forward, whose parameters equal the estimate and whose counted MACs (FlopCounterMode on
   meta) equal the estimate within 1%. When the Plan rejects one, it is a position check (a mixer that cannot
   work at a stage's width / map size) reported as a SpecError, never another exception.
2. Broken specs (mutations of valid ones, random YAML, binary garbage, deep nesting, extends cycles) fed to
   ``composer validate FILE`` end in exit code 2 with an ``error:`` message, no traceback, no hang.
3. Round trip: ``load_spec(dump_spec(spec)) == spec`` for generated specs and every spec in specs/.

The strategies read the registries (macros, symbols per macro, each mixer config's fields and their
constraints), so mixers registered later are generated without editing this file. CI runs a bounded,
derandomized number of examples; ``pytest -m slow tests/test_properties.py`` runs 600 valid specs, and
``COMPOSER_PROPERTY_EXAMPLES=2000 COMPOSER_PROPERTY_SEED=random pytest tests/test_properties.py`` hunts with new
random examples in every test. The bugs found so far are pinned at the end (REGRESSIONS).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import tempfile
import types
import typing
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from pydantic import PlainValidator

import composer
from composer.channel import CHANNEL_MIXERS
from composer.cli import main as cli_main
from composer.composed import build
from composer.cost import count_macs
from composer.macro import MACROS
from composer.mixers import MIXERS, resolve_symbol, symbol_names
from composer.perstage import _is_list_type
from composer.plan import plan
from composer.spec import SpecError, dump_spec, load_spec, spec_to_data

from conftest import SPECS, TINY_SPACE

# CI: bounded and reproducible (derandomized); the environment variables above widen the hunt.
_HUNT = int(os.environ.get("COMPOSER_PROPERTY_EXAMPLES", "0"))
FAST = settings(max_examples=_HUNT or 40, deadline=None, print_blob=True,
                derandomize=os.environ.get("COMPOSER_PROPERTY_SEED") != "random",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
VALID = settings(FAST, max_examples=_HUNT or 150)  # each builds, runs and counts a model: ~0.15 s
# broken input must be answered at once: a validate that takes 10 s on a tiny file is a hang in the making
BROKEN = settings(FAST, deadline=timedelta(seconds=10))
SLOW = settings(FAST, max_examples=_HUNT or 600)

NORM_SHORTHANDS = ["layernorm", "layernorm_nobias", "groupnorm1", "groupnorm1_nobias", "batchnorm"]

# ----------------------------------------------------------------------------------------------------------
# Values of one config field, from its annotation and constraints

# Sensible ranges by field name (a tiny network at 32-96 px), intersected with the field's own bounds;
# fields not named here get small generic values. Both valid and invalid-at-position values (even kernels,
# head dims that do not divide a width) are drawn on purpose: the Plan must reject those with a SpecError.
INT_HINTS: dict[str, list[int]] = {
    "kernel_size": [1, 3, 5, 7, 2], "long_kernel_size": [3, 5, 7, 9, 4], "filter_size": [3, 7, 15, 31, 8],
    "pool_size": [1, 2, 3, 5], "window_size": [1, 3, 5, 2], "head_dim": [8, 16, 24, 32],
    "num_heads": [1, 2, 4, 3], "order": [1, 2, 3, 4, 5], "emb_dim": [3, 5, 7, 4], "filter_emb_dim": [4, 8, 16, 6],
    "filter_order": [4, 8, 16], "sr_ratio": [1, 2, 4], "pretrain_size": [32, 64, 96], "halo_size": [1, 2, 3],
    "block_size": [2, 4, 8, 3], "focal_level": [1, 2, 3], "focal_window": [1, 3, 5], "groups": [1, 2, 4],
    "window": [2, 4, 7], "shift_size": [0, 1, 2], "mlp_ratio": [1, 2, 4], "dilation": [1, 2],
}
FLOAT_RANGES: dict[str, tuple[float, float]] = {"drop": (0.0, 0.3), "ratio": (0.5, 4.0), "scale": (0.1, 2.0)}


def _bounds(metadata: list) -> tuple[float | None, float | None, bool, bool]:
    lo = hi = None
    lo_open = hi_open = False
    for m in metadata:
        if isinstance(m, annotated_types.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, annotated_types.Ge):
            lo, lo_open = m.ge, False
        elif isinstance(m, annotated_types.Lt):
            hi, hi_open = m.lt, True
        elif isinstance(m, annotated_types.Le):
            hi, hi_open = m.le, False
        elif isinstance(m, annotated_types.Interval):
            return _bounds([c for c in (annotated_types.Gt(m.gt) if m.gt is not None else None,
                                        annotated_types.Ge(m.ge) if m.ge is not None else None,
                                        annotated_types.Lt(m.lt) if m.lt is not None else None,
                                        annotated_types.Le(m.le) if m.le is not None else None) if c])
    return lo, hi, lo_open, hi_open


def _int_values(name: str, metadata: list) -> st.SearchStrategy | None:
    lo, hi, lo_open, hi_open = _bounds(metadata)
    lo = None if lo is None else math.floor(lo) + 1 if lo_open else math.ceil(lo)
    hi = None if hi is None else math.ceil(hi) - 1 if hi_open else math.floor(hi)
    candidates = INT_HINTS.get(name, list(range(1, 9)))
    allowed = [v for v in candidates if (lo is None or v >= lo) and (hi is None or v <= hi)]
    if not allowed:
        allowed = [v for v in (lo, hi) if v is not None][:1] or [1]
    return st.sampled_from(allowed)


def _float_values(name: str, metadata: list) -> st.SearchStrategy:
    """Multiples of 0.001 inside the field's bounds and the sensible range for its name (YAML-exact values)."""
    lo, hi, lo_open, hi_open = _bounds(metadata)
    default = (0.0, 2.0) if lo is not None else (-1.0, 2.0)
    low, high = next((r for key, r in FLOAT_RANGES.items() if key in name), default)
    low, high = max(low, lo) if lo is not None else low, min(high, hi) if hi is not None else high
    first, last = math.ceil(low * 1000), math.floor(high * 1000)
    if lo is not None and (first / 1000 < lo or (lo_open and first / 1000 == lo)):
        first += 1
    if hi is not None and (last / 1000 > hi or (hi_open and last / 1000 == hi)):
        last -= 1
    return st.integers(first, max(first, last)).map(lambda k: k / 1000)


def value_strategy(name: str, tp: Any, metadata: list | None = None) -> st.SearchStrategy | None:
    """Values of a config field typed ``tp``; None when the type is not one this generator knows."""
    metadata = list(metadata or [])
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *extra = typing.get_args(tp)
        validators = [m for m in extra if isinstance(m, PlainValidator)]
        if inner is Any and validators:  # a per-stage field: its element type is in the schema input type
            scalar = typing.get_args(validators[0].json_schema_input_type)[0]
            return value_strategy(name, scalar, metadata)
        return value_strategy(name, inner, metadata + extra)
    if origin in (Union, types.UnionType):
        options = [st.none() if a is type(None) else value_strategy(name, a, metadata) for a in typing.get_args(tp)]
        options = [o for o in options if o is not None]
        return st.one_of(options) if options else None
    if origin is Literal:
        return st.sampled_from(typing.get_args(tp))
    if tp is bool:
        return st.booleans()
    if tp is int:
        return _int_values(name, metadata)
    if tp is float:
        return _float_values(name, metadata)
    return None  # strings, lists, nested models: left at their defaults


def field_strategies(cls) -> dict[str, st.SearchStrategy]:
    out = {}
    for name, info in cls.model_fields.items():
        if name == "type" or _is_list_type(info.annotation):
            continue
        strategy = value_strategy(name, info.annotation, info.metadata)
        if strategy is not None:
            out[name] = strategy
    return out


def config_overrides(cls, num_stages: int, per_stage: bool) -> st.SearchStrategy[dict]:
    """A few fields of config ``cls``, each one value or (``per_stage``) sometimes one value per stage."""
    fields = field_strategies(cls)
    return _overrides(fields, num_stages, per_stage) if fields else st.just({})


@st.composite
def _overrides(draw, fields: dict, num_stages: int, per_stage: bool) -> dict:
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True))
    out = {}
    for name in chosen:
        if per_stage and draw(st.booleans()):
            out[name] = draw(st.lists(fields[name], min_size=num_stages, max_size=num_stages))
        else:
            out[name] = draw(fields[name])
    return out


# ----------------------------------------------------------------------------------------------------------
# Valid specs

WIDTHS = [8, 16, 24, 32, 32, 48, 64, 64, 96, 96]  # mostly multiples of 32: attention's head_dim


@st.composite
def valid_specs(draw, max_stages: int = 4) -> dict:
    macro = draw(st.sampled_from(sorted(MACROS)))
    n = draw(st.integers(2, max_stages))
    widths = draw(st.lists(st.sampled_from(WIDTHS), min_size=n, max_size=n))
    depths = draw(st.lists(st.integers(1, 2), min_size=n, max_size=n))
    symbols = symbol_names(macro)
    # a user-defined symbol: any registered mixer type under a new name
    user: dict[str, dict] = {}
    if draw(st.booleans()):
        type_name = draw(st.sampled_from(sorted(MIXERS)))
        user["U0"] = {"type": type_name, **draw(config_overrides(MIXERS[type_name], n, per_stage=True))}
    pool = symbols + list(user)
    stages = []
    for depth in depths:
        if depth > 1 and draw(st.integers(0, 3)) == 0:
            stages.append(draw(st.lists(st.sampled_from(pool), min_size=depth, max_size=depth)))
        else:
            stages.append(draw(st.sampled_from(pool)))
    if all(isinstance(s, str) for s in stages) and draw(st.booleans()):
        layout: Any = "-".join(stages)
    else:
        layout = stages
    spec: dict[str, Any] = {"name": "prop", "macro": macro, "input_size": draw(st.integers(32, 96)),
                            "num_classes": draw(st.sampled_from([0, 3, 10])), "widths": widths, "depths": depths,
                            "layout": layout}
    if draw(st.integers(0, 4)) == 0:
        spec["in_chans"] = draw(st.integers(1, 4))
    used = sorted({s for stage in stages for s in ([stage] if isinstance(stage, str) else stage)})
    mixers = dict(user)
    for symbol in used:
        if symbol in user or draw(st.integers(0, 2)) == 0:
            continue
        overrides = draw(config_overrides(MIXERS[resolve_symbol(symbol, macro).type], n, per_stage=True))
        if overrides:
            mixers[symbol] = overrides
    if mixers:
        spec["mixers"] = mixers
    if draw(st.integers(0, 3)) == 0:
        type_name = draw(st.sampled_from(sorted(CHANNEL_MIXERS)))
        spec["channel_mixer"] = {"type": type_name, **draw(config_overrides(CHANNEL_MIXERS[type_name], n, False))}
    if draw(st.integers(0, 3)) == 0:
        spec["norm"] = draw(st.sampled_from(NORM_SHORTHANDS))
    if draw(st.integers(0, 4)) == 0:
        spec["head"] = draw(st.sampled_from([{"type": "linear"}, {"type": "mlp", "ratio": 2},
                                             {"type": "mlp", "norm": None}]))
    for field in ("layer_scale", "res_scale"):
        if draw(st.integers(0, 4)) == 0:
            spec[field] = draw(st.one_of(st.none(), st.just(1e-5),
                                         st.lists(st.sampled_from([None, 1.0]), min_size=n, max_size=n)))
    if draw(st.booleans()):
        spec["drop_path_rate"] = 0.1
    return spec


def _is_position_rejection(exc: SpecError) -> bool:
    """A legitimate Plan rejection of a schema-valid spec: a mixer that cannot work at the stage's width or
    map size (``stage i (Sym, width C, HxW map): ...``), or an input too small for the stages."""
    return all(re.match(r"stage \d+ \([^,)]+, .*map.*\): \S", p.message) or "leaves no feature map" in p.message
               for p in exc.problems)


def check_valid_spec(spec: dict) -> None:
    note(yaml.safe_dump(spec, sort_keys=False, default_flow_style=None))
    loaded = load_spec(spec)  # the generator only writes schema-valid specs: the loader must accept them all
    try:
        p = plan(loaded)
    except SpecError as exc:
        assert _is_position_rejection(exc), f"unexpected rejection of a schema-valid spec: {exc}"
        event(f"rejected: {exc.problems[0].message.split(': ', 1)[-1][:40]}")
        return
    event("accepted")
    est = p.estimate()
    model = build(p).eval()
    assert sum(t.numel() for t in model.parameters()) == est.params
    x = torch.randn(2, loaded.in_chans, loaded.input_size, loaded.input_size)
    with torch.no_grad():
        y = model(x)
    # logits, or (num_classes 0) the pooled features the Plan's head part says (some heads widen them)
    assert y.shape == (2, p.node("head")["out_shape"][0])
    if loaded.num_classes:
        assert y.shape == (2, loaded.num_classes)
    assert torch.isfinite(y).all()
    counted = count_macs(loaded)
    assert abs(counted.macs - est.macs) <= 0.01 * est.macs, (counted.macs, est.macs)
    assert abs(counted.fft_macs - est.fft_macs) <= 0.01 * est.fft_macs + 1, (counted.fft_macs, est.fft_macs)


@VALID
@given(valid_specs())
def test_valid_specs_plan_build_run_and_count_as_estimated(spec):
    check_valid_spec(spec)


@pytest.mark.slow
@SLOW
@given(valid_specs())
def test_valid_specs_many(spec):
    check_valid_spec(spec)


# ----------------------------------------------------------------------------------------------------------
# Broken specs and random YAML through `composer validate FILE`: exit code 2, a message, no traceback


def run_validate(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["validate", str(path)])
    return code, out.getvalue(), err.getvalue()


def assert_clean_outcome(path: Path, must_fail: bool = True) -> None:
    code, out, err = run_validate(path)
    note(f"exit {code}\nstdout: {out}\nstderr: {err}")
    assert "Traceback" not in out + err and "internal error" not in err
    if code == 0 and not must_fail:  # a mutation may happen to leave a valid spec
        assert out.startswith("ok ")
        return
    assert code == 2, (code, err)
    assert err.startswith("error: ") and len(err.strip()) > len("error: ")


def write_file(folder: str, name: str, content: str | bytes) -> Path:
    path = Path(folder) / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


JUNK_STRINGS = ["5G", "30M", "4.1GFLOPs", "800K params", "-1", "auto", "Conv-Conv", "1e400", "", " ", "~", "null",
                "yes", "[1, 2", "{a: 1", "Conv--A", "A-", "- Conv", "NaN", "0x10", "1_000", "\t"]
junk_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(-(10**40), 10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(JUNK_STRINGS), st.text(max_size=8))
junk = st.recursive(junk_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, sub in value.items():
            out += _paths(sub, prefix + (key,))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            out += _paths(sub, prefix + (i,))
    return out


def _set(data: Any, path: tuple, value: Any, delete: bool = False) -> None:
    for part in path[:-1]:
        data = data[part]
    if delete:
        del data[path[-1]]
    else:
        data[path[-1]] = value


@st.composite
def valid_ensembles(draw) -> dict:
    """Two or three members: small presets or inline generated specs, compiled at one input size."""
    members = draw(st.lists(st.one_of(st.sampled_from(["identityformer_s12", "poolformerv2_s12", "convformer_s18"]),
                                      valid_specs(max_stages=2)), min_size=2, max_size=3))
    return {"name": "ens", "ensemble": members, "input_size": draw(st.sampled_from([64, 96])), "num_classes": 10}


@st.composite
def mutated_specs(draw) -> tuple[dict, bool]:
    """A valid spec (or ensemble) with 1-3 mutations; returns (data, whether it is certainly invalid)."""
    import copy

    ensemble = draw(st.integers(0, 4)) == 0
    spec = copy.deepcopy(draw(valid_ensembles() if ensemble else valid_specs(max_stages=3)))
    certain = False
    options = ["replace", "replace", "delete", "unknown_field", "unknown_symbol", "negative", "huge", "wrong_length"]
    kinds = draw(st.lists(st.sampled_from(options[:4] if ensemble else options), min_size=1, max_size=3))
    # junk and deletions first, then the mutations that certainly break a spec (a later junk value could
    # otherwise replace the broken part with a valid one); those skip when the lists they need are gone
    for kind in sorted(kinds, key=lambda k: k not in ("replace", "delete")):
        paths = _paths(spec)
        if kind == "replace":
            _set(spec, draw(st.sampled_from(paths)), draw(junk))
        elif kind == "delete":
            path = draw(st.sampled_from(paths))
            _set(spec, path, None, delete=True)
            certain |= path in (("widths",), ("depths",), ("layout",), ("ensemble",))
        elif kind == "unknown_field":
            spec[draw(st.sampled_from(["widht", "depth", "mixer", "layouts", "drop_path"]))] = draw(junk)
            certain = True
        elif kind == "unknown_symbol" and isinstance(spec.get("layout"), (str, list)) and spec["layout"]:
            layout = spec["layout"].split("-") if isinstance(spec["layout"], str) else spec["layout"]
            layout[draw(st.integers(0, len(layout) - 1))] = draw(st.sampled_from(["Atn", "conv", "Hpxx", "ZZ", "A A"]))
            spec["layout"] = layout
            certain = certain or "mixers" not in spec
        elif kind == "negative":
            field = draw(st.sampled_from(["widths", "depths"]))
            if isinstance(spec.get(field), list) and spec[field]:
                spec[field][draw(st.integers(0, len(spec[field]) - 1))] = draw(st.integers(-5, 0))
                certain = True
        elif kind == "huge":
            field = draw(st.sampled_from(["widths", "depths", "input_size", "num_classes", "in_chans"]))
            value = draw(st.sampled_from([2**31, 10**12, 10**40]))
            spec[field] = [value, value] if field in ("widths", "depths") else value
            certain = True
        elif kind == "wrong_length":
            field = draw(st.sampled_from(["widths", "depths"]))
            if isinstance(spec.get(field), list):
                spec[field].append(8)
                certain = True
    return spec, certain


@BROKEN
@given(mutated_specs())
def test_mutated_specs_fail_cleanly_in_the_cli(case):
    spec, certainly_invalid = case
    with tempfile.TemporaryDirectory() as folder:
        text = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
        note(text)
        assert_clean_outcome(write_file(folder, "spec.yaml", text), must_fail=certainly_invalid)


@BROKEN
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(bytes),
                 junk.map(lambda v: yaml.safe_dump(v, allow_unicode=True))))
def test_random_text_and_bytes_fail_cleanly_in_the_cli(content):
    with tempfile.TemporaryDirectory() as folder:
        assert_clean_outcome(write_file(folder, "spec.yaml", content))


@BROKEN
@given(st.sampled_from(["[", "{a: ", "- ", "a:\n", "&x ["]), st.integers(1, 2000))
def test_deeply_nested_yaml_fails_cleanly(opener, depth):
    closer = {"[": "]", "{a: ": "}", "&x [": "]"}.get(opener, "")
    if opener in ("- ", "a:\n"):  # block style: indentation grows with depth (the text with its square)
        depth = min(depth, 300)
        text = "".join(" " * (2 * i) + opener.strip() + ("\n" if opener == "a:\n" else " \n")
                       for i in range(depth)) + " " * (2 * depth) + "1\n"
    else:
        text = "widths: " + opener * depth + "1" + closer * depth + "\n"
    with tempfile.TemporaryDirectory() as folder:
        assert_clean_outcome(write_file(folder, "spec.yaml", text))


@BROKEN
@given(st.integers(1, 4), st.integers(0, 3))
def test_extends_cycles_fail_cleanly(length, entry):
    with tempfile.TemporaryDirectory() as folder:
        names = [f"s{i}.yaml" for i in range(length)]
        for i, name in enumerate(names):
            write_file(folder, name, f"extends: {names[(i + 1) % length]}\nwidths: [8]\n")
        code, _, err = run_validate(Path(folder) / names[entry % length])
        assert code == 2 and "extends cycle" in err and "Traceback" not in err


def test_alias_bombs_and_recursive_aliases_fail_cleanly(tmp_path):
    laughs = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        laughs.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    cases = {"bomb.yaml": "\n".join(laughs) + "\n", "recursive.yaml": "widths: &w [8, *w]\n",
             "nul.yaml": "name: a\x00b\nwidths: [8]\n", "collection_key.yaml": "? [a, b]\n: 1\n",
             "bool_key.yaml": "yes: 1\nwidths: [8]\n"}
    expected = {"bomb.yaml": "more than 100,000 values", "recursive.yaml": "recursive structure",
                "nul.yaml": "unacceptable character", "collection_key.yaml": "keys must be names",
                "bool_key.yaml": "keys must be names, got True"}
    for name, text in cases.items():
        code, _, err = run_validate(write_file(str(tmp_path), name, text))
        assert code == 2 and expected[name] in err, (name, err)


# ----------------------------------------------------------------------------------------------------------
# Round trip: load(dump(spec)) == spec


def assert_round_trips(spec) -> None:
    text = dump_spec(spec)
    again = load_spec(text)
    assert again == spec, text
    assert spec_to_data(again) == spec_to_data(spec)
    assert dump_spec(again) == text


@FAST
@given(valid_specs(), st.one_of(st.none(), st.text(max_size=12)))
def test_generated_specs_round_trip(data, name):
    if name is not None:
        data = dict(data, name=name)
    assert_round_trips(load_spec(data))


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_round_trips(path):
    spec = load_spec(path)
    assert_round_trips(spec)


# ----------------------------------------------------------------------------------------------------------
# Regressions: the bugs this suite found, each pinned with its exact message

BASE = "name: t\nwidths: [32, 64]\ndepths: [1, 1]\nlayout: Conv-A\n"
REGRESSIONS = {
    # PyYAML composes nested collections recursively: a RecursionError escaped as an internal error
    "deep flow nesting": ("widths: " + "[" * 3000 + "]" * 3000 + "\n",
                          "spec.yaml: YAML nested too deeply (more than 32 levels); a spec needs a handful"),
    "nesting past the walker's limit": ("widths: " + "[" * 40 + "8" + "]" * 40 + "\n",
                                        "spec.yaml:1: widths" + "[0]" * 31 + ": nested more than 32 levels deep"),
    # a NUL character: the ReaderError was raised before the loader's try block
    "NUL character": ("name: a\x00b\n", "spec.yaml: YAML syntax error: unacceptable character #x0000"),
    # `&a [*a]` made the line-recording walk recurse forever
    "recursive alias": ("widths: &w [8, *w]\n", "spec.yaml:1: widths[1]: a YAML alias refers to a collection that "
                                                "contains it"),
    # `macro: []` reached a dict lookup while filling the macro's defaults: TypeError: unhashable type
    "unhashable macro": (BASE + "macro: []\n", "spec.yaml:5: macro: got [];"),
    # closed forms of Hpx / gnConv gf / Hb turned huge sizes into floats: OverflowError
    "huge input size": (BASE + "input_size: 100000000000000000000\n",
                        "spec.yaml:5: input_size: 100000000000000000000 is too large: numbers in a spec must be "
                        "below 2^31 (2,147,483,648)"),
    "huge width": (BASE.replace("[32, 64]", "[32, 1.0e+300]"), "spec.yaml:2: widths[1]: 1e+300 is too large"),
    "infinite expansion ratio": (BASE + "mixers:\n  Conv: {expansion_ratio: .inf}\n",
                                 "spec.yaml:6: mixers.Conv.expansion_ratio: must be a finite number, got inf"),
    "NaN layer scale": (BASE + "layer_scale: .nan\n", "spec.yaml:5: layer_scale: must be a finite number, got nan"),
    # walking 10^9 blocks (and building a 10^9-entry symbol list) hung `composer validate`
    "huge depth": (BASE.replace("[1, 1]", "[1000000000, 1]"),
                   "spec.yaml:3: depths[0]: input should be less than or equal to 1000, got 1000000000"),
    # TransNeXt's position-bias tables are tabulated over the map: a 10^6 px input ran for minutes
    "input size past the bound": (BASE + "input_size: 100000\n",
                                  "spec.yaml:5: input_size: input should be less than or equal to 8192, got 100000"),
    # a name longer than the OS allows made Path.is_file raise OSError (ENAMETOOLONG)
    "preset name too long": ("extends: " + "x" * 5000 + "\n", "spec.yaml:1: extends: unknown preset 'xxxx"),
    # an explicit null failing every member of a union kept pydantic's member labels (ensemble[0].str: ...)
    "null member": ("ensemble: [null, convformer_s18]\n",
                    "spec.yaml:1: ensemble[0]: input should be a valid string or a valid dictionary, got None"),
    "too many stages": ("widths: [" + ", ".join(["8"] * 17) + "]\ndepths: [1]\nlayout: Conv\n",
                        "spec.yaml:1: widths: list should have at most 16 items after validation, not 17"),
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS), ids=lambda c: c.replace(" ", "_"))
def test_regressions_fail_cleanly_with_their_message(case, tmp_path, monkeypatch):
    text, message = REGRESSIONS[case]
    write_file(str(tmp_path), "spec.yaml", text)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_validate(Path("spec.yaml"))
    assert code == 2 and err.startswith("error: " + message), err


def test_bounds_leave_the_largest_real_values_valid():
    spec = load_spec({"widths": [8] * 16, "depths": [1000] + [1] * 15, "layout": ["Id"] * 16, "input_size": 8192,
                      "num_classes": 2**31 - 1})
    assert spec.input_size == 8192 and spec.depths[0] == 1000


# ----------------------------------------------------------------------------------------------------------
# Issue 13's generators: numeric extremes, YAML 1.1 scalars, merge keys, file kinds, storage URLs

EXTREME_SCALARS = ["0", "-0", "0.0", "-1", "0.01", "1e-9", "2e9", "9" * 5000, "1" + "0" * 30, ".nan", ".inf", "-.inf",
                   "yes", "no", "on", "off", "y", "n", "true", "false", "~", "0x1f", "0o17", "1_000", "12:30"]
SMALL_BASE = "extends: identityformer_s12\ninput_size: 64\ndepths: [1, 1, 1, 1]\nnum_classes: 10\n"
EXTREME_PLACES = ["input_size: {v}", "num_classes: {v}", "in_chans: {v}", "drop_path_rate: {v}",
                  "widths: [{v}, 64, 128, 256]", "depths: [{v}, 1, 1, 1]", "layer_scale: {v}",
                  "channel_mixer: {{type: mlp, ratio: {v}}}", "head: {{type: mlp, ratio: {v}}}",
                  "head: {{drop: {v}}}", "layout: Conv-Conv-Conv-Conv\nmixers: {{Conv: {{expansion_ratio: {v}}}}}",
                  "layout: Conv-Conv-Conv-Conv\nmixers: {{Conv: {{kernel_size: {v}}}}}",
                  "layout: A-A-A-A\nmixers: {{A: {{head_dim: {v}}}}}"]


def run_cli_quietly(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(list(args))
        except SystemExit as exc:  # argparse's own usage errors (a value starting with "-"): exit 2, a message
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@BROKEN
@given(st.sampled_from(EXTREME_PLACES), st.sampled_from(EXTREME_SCALARS))
def test_numeric_extremes_and_yaml_11_scalars_validate_or_fail_cleanly_and_what_validates_builds(place, scalar):
    with tempfile.TemporaryDirectory() as folder:
        key = place.split(":")[0]
        base = "".join(line + "\n" for line in SMALL_BASE.splitlines() if not line.startswith(key + ":"))
        path = write_file(folder, "spec.yaml", base + place.format(v=scalar) + "\n")
        code, out, err = run_validate(path)
        note(f"exit {code}\n{out}{err}")
        assert "Traceback" not in err and "internal error" not in err
        assert code in (0, 2)
        if code == 0 and composer.estimate(str(path)).params < 30_000_000:  # what validates builds (quickly)
            built, out, err = run_cli_quietly("build", str(path))
            note(f"build exit {built}\n{out}{err}")
            assert built in (0, 2) and "internal error" not in err and "Traceback" not in err
        if scalar.lower() in ("yes", "no", "on", "off", "true", "false") and place.split(":")[0] in (
                "input_size", "num_classes", "in_chans", "widths", "depths"):
            assert code == 2 and "boolean" in err   # never read as 1 / 0


@FAST
@given(valid_specs(max_stages=3))
def test_a_yaml_merge_key_reads_as_the_mapping_it_merges(spec):
    plain = yaml.safe_dump(spec, sort_keys=False)
    merged = "<<: " + yaml.safe_dump(spec, sort_keys=False, default_flow_style=True).strip() + "\n"
    assert yaml.safe_load(merged) == yaml.safe_load(plain)
    try:
        expected = load_spec(plain)
    except SpecError as exc:
        with pytest.raises(SpecError) as again:
            load_spec(merged)
        assert again.value.problems[0].message == exc.problems[0].message
        return
    assert load_spec(merged) == expected


FILE_KINDS = ["fifo", "folder", "/dev/null", "/dev/zero", "empty", "binary", "huge", "symlink_to_folder",
              "dangling_symlink", "no_permission"]


def _make(kind: str, folder: Path) -> Path:
    path = folder / "thing.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind.startswith("/dev/"):
        return Path(kind)
    elif kind == "empty":
        path.write_text("")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "huge":
        path.write_text("name: " + "x" * (2 << 20) + "\n")
    elif kind == "symlink_to_folder":
        (folder / "d").mkdir()
        path.symlink_to(folder / "d")
    elif kind == "dangling_symlink":
        path.symlink_to(folder / "missing.yaml")
    else:
        path.write_text("extends: caformer_s18\n")
        path.chmod(0)
    return path


@BROKEN
@given(st.sampled_from(FILE_KINDS), st.sampled_from(["validate", "build", "search", "graph"]))
def test_every_kind_of_file_fails_cleanly_and_at_once(kind, command):
    import time

    with tempfile.TemporaryDirectory() as folder:
        path = _make(kind, Path(folder))
        start = time.perf_counter()
        args = [command, str(path)] + (["--run-dir", str(Path(folder) / "run"), "--trials", "1"]
                                       if command == "search" else [])
        code, out, err = run_cli_quietly(*args)
        note(f"{kind} {command}: exit {code}\n{out}{err}")
        assert time.perf_counter() - start < 5   # a FIFO or /dev/zero is never read
        assert "Traceback" not in err and "internal error" not in err
        if kind == "no_permission" and os.geteuid() == 0:  # root reads it anyway
            return
        assert code == 2 and err.startswith("error: ")


STORAGE_URLS = ["foo", "sqlite:", "sqlite:////no/such/folder/s.db", "journal:", "journal:/no/such/folder/s.log",
                "postgresql://u:pw@127.0.0.1:1/db", "postgres://127.0.0.1:1/db", "mysql://u@127.0.0.1:1/db",
                "http://example.org/db", "sqlite:///{folder}", "sqlite:///{folder}/empty.db",
                "sqlite:///{folder}/junk.db", ":memory:", "", " ", "sqlite:///{folder}/x.db?mode=ro"]


@BROKEN
@given(st.one_of(st.sampled_from(STORAGE_URLS), st.text(max_size=30)))
def test_storage_urls_open_or_fail_cleanly(url):
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "empty.db").write_bytes(b"")
        Path(folder, "junk.db").write_bytes(b"not a database at all" * 10)
        space = write_file(folder, "tiny.yaml", TINY_SPACE)
        url = url.replace("{folder}", folder)
        code, out, err = run_cli_quietly("search", str(space), "--storage", url, "--run-dir", str(Path(folder) / "r"),
                                         "--trials", "1", "--no-progress")
        note(f"{url!r}: exit {code}\n{out}{err}")
        assert "Traceback" not in err and "internal error" not in err
        assert code in (0, 2)
        if "pw" in url:
            assert ":pw@" not in out + err
        for damaged in ("empty.db", "junk.db"):  # never taken over
            assert Path(folder, damaged).stat().st_size in (0, 210)
