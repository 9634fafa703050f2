"""``composer check-mixer SYMBOL``: the conformance kit every token mixer passes, built-in or plugin.

What the project's own mixer tests check, for any registered mixer, so that a plugin author gets the same
verdict composer's own operators get:

* **compile**: the mixer in every stage of every macro of a small network (112 px, widths 96-384); a stage its
  ``check`` refuses must be refused with a located message naming the stage (``<string>:5: ...stage 3...``);
* **build / params**: what passed the check builds, and its parameters equal the Plan's estimate;
* **macs**: the analytic MACs equal the counted ones (FlopCounterMode on the meta device, FFTs apart), and no op
  ran that the counter has no formula for;
* **forward / backward**: finite outputs, a gradient for every trainable parameter of the mixer's block;
* **impossible contexts**: at hostile widths and maps (a prime width, a 1 x 1 map, odd maps) the mixer either
  works or its ``check`` refuses with a located message; nothing passes the check and then fails to build or run;
* **round trip**: the config with every field written out survives YAML (``dump_spec`` / ``load_spec``) and
  validates against the JSON Schema of spec files (``composer schema``);
* **state dict**: two builds have the same keys and shapes, and one loads strictly into the other with equal
  outputs;
* **torchscript / fx**: where the config claims them (``MixerConfig.torchscript`` / ``.fx``, default True, timm's
  conventions), the scripted and the FX-traced model equal the eager one.

``--quick`` checks one macro (``unified``, or ``--macro``) and skips TorchScript / FX.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .spec.units import gmacs_cell, params_cell

CELL = """\
name: check_{symbol}
macro: {macro}
input_size: {input_size}
num_classes: 10
widths: {widths}
depths: [1, 1, 2, 1]
layout: {layout}
{mixers}"""
"""The small network a mixer is placed in: stage maps 28, 14, 7, 4 at 112 px (in the 4-stride-2 macros)."""

WIDTHS = [96, 192, 288, 384]   # divisible by the default head dims (24, 32) and DCN groups (16)
INPUT_SIZE = 112

HOSTILE = (
    ("prime width", [97, 193, 293, 389], INPUT_SIZE),
    ("width 2", [2, 2, 2, 2], INPUT_SIZE),
    ("1 x 1 map", [96, 192, 288, 384], 32),
    ("odd map", [96, 192, 288, 384], 100),
)
"""(name, widths, input size) of the contexts many mixers cannot work at."""


@dataclass
class Result:
    check: str
    where: str
    status: str  # ok | FAIL | refused | skipped
    detail: str = ""


@dataclass
class Report:
    symbol: str
    mixer_type: str
    origin: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status == "FAIL"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def table(self, verbose: bool = False) -> str:
        """One line per check (how many places passed, were refused or failed, with the failures and refusals
        spelled out below it); ``verbose``: one line per place."""
        lines = [f"check-mixer {self.symbol} (type {self.mixer_type}, registered by {self.origin})"]
        if verbose:
            width = max([len(r.where) for r in self.results] + [5])
            lines.append(f"  {'check':<20} {'where':<{width}}  {'result':<8} detail")
            lines += [f"  {r.check:<20} {r.where:<{width}}  {r.status:<8} {r.detail}".rstrip() for r in self.results]
        else:
            lines.append(f"  {'check':<20} {'result':<8} places")
            for check in dict.fromkeys(r.check for r in self.results):
                rows = [r for r in self.results if r.check == check]
                counts = {s: sum(1 for r in rows if r.status == s) for s in ("ok", "FAIL", "refused", "skipped")}
                status = "FAIL" if counts["FAIL"] else "skipped" if counts["skipped"] == len(rows) else "ok"
                shown = ", ".join(f"{n} {s.lower() if s != 'ok' else 'ok'}" for s, n in counts.items() if n)
                lines.append(f"  {check:<20} {status:<8} {shown}")
                lines += [f"      {r.status.lower()}: {r.where}: {r.detail}" for r in rows
                          if r.status in ("FAIL", "refused", "skipped")]
        counts = {s: sum(1 for r in self.results if r.status == s) for s in ("ok", "FAIL", "refused", "skipped")}
        verdict = "FAILED" if counts["FAIL"] else "passed"
        lines.append(f"{verdict}: {counts['ok']} ok, {counts['FAIL']} failed, {counts['refused']} refused by the "
                     f"mixer's check (located), {counts['skipped']} skipped; {self.seconds:.1f} s")
        return "\n".join(lines)


class _Failed(Exception):
    pass


def _cell(symbol: str, mixer_type: str, macro: str, stage: int, widths=WIDTHS, input_size=INPUT_SIZE,
          entry: dict | None = None) -> str:
    """The spec text with ``symbol`` in ``stage``, identities elsewhere; ``entry`` (the mixer's fields) adds
    ``mixers: {symbol: {type: mixer_type, **entry}}``."""
    layout = "-".join(symbol if i == stage else "Id" for i in range(4))
    mixers = "" if entry is None else f"mixers:\n  {symbol}: {json.dumps({'type': mixer_type, **entry})}\n"
    return CELL.format(symbol=symbol, macro=macro, input_size=input_size, widths=json.dumps(widths), layout=layout,
                       mixers=mixers)


def _first_line(exc: BaseException) -> str:
    """What went wrong in one line: a failed check's own message, or an exception's type and first line."""
    if isinstance(exc, _Failed):
        return exc.args[0]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


class _Kit:
    def __init__(self, symbol: str, mixer_type: str, bound: set[str | None], log: Callable | None):
        self.symbol, self.mixer_type, self.bound, self.log = symbol, mixer_type, bound, log
        self.results: list[Result] = []

    def add(self, check: str, where: str, status: str, detail: str = "") -> None:
        self.results.append(Result(check, where, status, detail))
        if self.log is not None:
            self.log(f"  {check:<20} {where:<22} {status:<8} {detail}".rstrip())

    def text(self, macro: str, stage: int, overrides: dict | None = None, **kw) -> str:
        """A symbol bound for this macro (or for all) is written as users write it; a mixer type without a
        symbol, or a symbol of other macros, gets an explicit entry under ``mixers:``."""
        bound = macro in self.bound or None in self.bound
        return _cell(self.symbol, self.mixer_type, macro, stage,
                     entry=overrides if overrides is not None else (None if bound else {}), **kw)

    # -- one network --------------------------------------------------------------------------------------
    def compile(self, text: str, stage: int, where: str):
        """(estimate, plan) or None when the mixer's check refused (located, naming the stage)."""
        import composer
        from composer.plan import plan

        try:
            p = plan(text)
        except composer.SpecError as exc:
            message = str(exc)
            located = message.startswith("<string>:") and f"stage {stage}" in message
            if located:
                self.add("compile", where, "refused", message.splitlines()[0][:160])
            else:
                self.add("compile", where, "FAIL", f"refused without naming the stage / line: {message[:160]}")
            return None
        except Exception as exc:  # noqa: BLE001  (a crash in the mixer's check or cost is what we look for)
            self.add("compile", where, "FAIL", f"check / cost crashed: {_first_line(exc)}")
            return None
        return p

    def network(self, macro: str, stage: int, backward: bool = True) -> object | None:
        import torch

        from composer.composed import build
        from composer.cost import count_macs

        where = f"{macro} stage {stage}"
        text = self.text(macro, stage)
        p = self.compile(text, stage, where)
        if p is None:
            return None
        est = p.estimate()
        self.add("compile", where, "ok", f"{params_cell(est.params)} params, {gmacs_cell(est.macs)} GMACs")
        try:
            torch.manual_seed(0)
            model = build(p)
        except Exception as exc:  # noqa: BLE001
            self.add("build", where, "FAIL", f"passed the check, then failed to build: {_first_line(exc)}")
            return None
        built = sum(t.numel() for t in model.parameters())
        self.add("params", where, "ok" if built == est.params else "FAIL",
                 f"{built:,}" if built == est.params else f"built {built:,} != estimated {est.params:,}")
        try:
            counted = count_macs(text, strict=False)
        except Exception as exc:  # noqa: BLE001
            self.add("macs", where, "FAIL", f"counting failed: {_first_line(exc)}")
        else:
            problems = []
            if counted.unknown_ops:
                problems.append(f"ops without a FLOP formula: {counted.unknown_ops}")
            if counted.macs != est.macs:
                problems.append(f"counted {counted.macs:,} != analytic {est.macs:,} MACs "
                                f"({(est.macs - counted.macs) / max(counted.macs, 1):+.3%})")
            if abs(counted.fft_macs - est.fft_macs) > 1e-9 * max(est.fft_macs, 1.0):
                problems.append(f"FFT MACs counted {counted.fft_macs:,.0f} != analytic {est.fft_macs:,.0f}")
            self.add("macs", where, "FAIL" if problems else "ok", "; ".join(problems) or f"{est.macs:,}")
        if backward:
            self.forward_backward(model, where, stage)
        return model

    def forward_backward(self, model, where: str, stage: int) -> None:
        import torch

        try:
            model.train()
            x = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(1))
            out = model(x)
            if out.shape != (2, 10) or not torch.isfinite(out).all():
                raise _Failed(f"output {tuple(out.shape)}, finite: {bool(torch.isfinite(out).all())}")
            out.square().mean().backward()
            block = model.stages[stage].blocks[0]
            missing = [n for n, t in block.named_parameters() if t.requires_grad and
                       (t.grad is None or not torch.isfinite(t.grad).all())]
            if missing:
                raise _Failed(f"no finite gradient for {', '.join(missing[:4])}")
        except Exception as exc:  # noqa: BLE001
            self.add("forward/backward", where, "FAIL", _first_line(exc))
            return
        self.add("forward/backward", where, "ok", "finite output and gradients")

    # -- the mixer as a whole -------------------------------------------------------------------------------
    def hostile(self, macro: str) -> None:
        import torch

        import composer
        from composer.composed import build

        for name, widths, size in HOSTILE:
            for stage in (0, 3):
                where = f"{macro} stage {stage}, {name}"
                text = self.text(macro, stage, widths=widths, input_size=size)
                try:
                    p = composer.plan(text)
                except composer.SpecError as exc:
                    message = str(exc)
                    ok = message.startswith("<string>:")
                    self.add("impossible context", where, "refused" if ok else "FAIL",
                             message.splitlines()[0][:160] if ok else f"refused without a line: {message[:160]}")
                    continue
                except Exception as exc:  # noqa: BLE001
                    self.add("impossible context", where, "FAIL", f"check / cost crashed: {_first_line(exc)}")
                    continue
                try:
                    model = build(p).eval()
                    with torch.no_grad():
                        out = model(torch.randn(1, 3, size, size))
                    if out.shape != (1, 10):
                        raise _Failed(f"output {tuple(out.shape)}")
                    built = sum(t.numel() for t in model.parameters())
                    if built != p.estimate().params:
                        raise _Failed(f"built {built:,} != estimated {p.estimate().params:,} params")
                except Exception as exc:  # noqa: BLE001
                    detail = _first_line(exc)
                    self.add("impossible context", where, "FAIL", f"passed the check, then: {detail}")
                    continue
                self.add("impossible context", where, "ok", "works here")

    def hostile_values(self) -> None:
        """Every numeric field of the mixer's config fed 0, negatives, tiny ratios and huge values
        (:func:`hostile_cases`): refused with a located message, or built and run."""
        cases = hostile_cases("mixer", self.mixer_type)
        if not cases:   # GF, Id: nothing numeric to feed; said, so the kit's table shows the check ran
            self.add("hostile values", "no numeric field", "ok", "nothing to feed")
        for what, text in cases:
            status, detail = try_hostile(text)
            self.add("hostile values", what, status, detail)

    def round_trip(self, macro: str, stage: int) -> None:
        import jsonschema

        from composer.mixers import MIXERS, resolve_symbol
        from composer.schema import spec_schema
        from composer.spec import dump_spec, load_spec
        from composer.spec.source import parse_yaml

        where = f"{macro} stage {stage}"
        cls = MIXERS[self.mixer_type]
        known = resolve_symbol(self.symbol, macro)
        defaults = {**{k: f.default for k, f in cls.model_fields.items() if k != "type"},
                    **(known.defaults if known is not None and known.type == self.mixer_type else {})}
        written = json.loads(json.dumps(defaults, default=str))
        text = self.text(macro, stage, overrides=written)
        try:
            spec = load_spec(text)
            again = load_spec(dump_spec(spec))
            if again != spec:
                raise _Failed("dump_spec -> load_spec gives another spec")
            if again.mixers[self.symbol].model_dump(exclude_unset=True) != spec.mixers[self.symbol].model_dump(
                    exclude_unset=True):
                raise _Failed("the mixer's fields change through YAML")
        except Exception as exc:  # noqa: BLE001
            self.add("yaml round trip", where, "FAIL", _first_line(exc))
        else:
            self.add("yaml round trip", where, "ok", f"{len(written)} fields written out")
        try:
            validator = jsonschema.Draft7Validator(spec_schema())
            data, _ = parse_yaml(text, "<string>")
            errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
            if errors:
                raise _Failed(f"{'.'.join(map(str, errors[0].path))}: {errors[0].message[:140]}")
        except Exception as exc:  # noqa: BLE001
            self.add("json schema", where, "FAIL", _first_line(exc))
        else:
            self.add("json schema", where, "ok", "the written-out config validates")

    def state_dict(self, macro: str, stage: int) -> None:
        import torch

        import composer

        where = f"{macro} stage {stage}"
        text = self.text(macro, stage)
        try:
            torch.manual_seed(0)
            a = composer.compose(text).eval()
            torch.manual_seed(1)
            b = composer.compose(text).eval()
            sa, sb = a.state_dict(), b.state_dict()
            if list(sa) != list(sb) or any(sa[k].shape != sb[k].shape for k in sa):
                raise _Failed("two builds have other state-dict keys or shapes")
            b.load_state_dict(sa, strict=True)
            x = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)
            with torch.no_grad():
                torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)
        except Exception as exc:  # noqa: BLE001
            self.add("state dict", where, "FAIL", _first_line(exc))
            return
        keys = [k for k in sa if k.startswith(f"stages.{stage}.blocks.0.")]
        self.add("state dict", where, "ok", f"{len(sa)} keys ({len(keys)} in the block) load strictly, equal outputs")

    def jit_fx(self, macro: str, stage: int) -> None:
        import torch

        import composer
        from composer.mixers import MIXERS

        where = f"{macro} stage {stage}"
        cls = MIXERS[self.mixer_type]
        text = self.text(macro, stage)
        torch.manual_seed(0)
        model = composer.compose(text).eval()
        x = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)
        with torch.no_grad():
            expected = model(x)
        for check, claimed, run in (("torchscript", cls.torchscript, _scripted), ("fx", cls.fx, _traced)):
            if not claimed:
                self.add(check, where, "skipped", f"not claimed ({cls.__name__}.{check} = False)")
                continue
            try:
                with torch.no_grad():
                    torch.testing.assert_close(run(model)(x), expected, rtol=1e-5, atol=1e-5)
            except Exception as exc:  # noqa: BLE001
                self.add(check, where, "FAIL", f"claimed, but: {_first_line(exc)}")
            else:
                self.add(check, where, "ok", "equals eager")


# -- hostile values: every numeric field of a registered config ------------------------------------------------

HOSTILE_INTEGERS = (0, -1, 1, 2**31 - 1)
HOSTILE_NUMBERS = (0.0, -1.0, 1e-9, 0.01, 1e9)
"""What every numeric field is fed (tiny ratios, 0, negatives, huge values): each must be refused with a located
message or give a network that builds and runs."""

SMALL = {"name": "hostile", "input_size": 64, "num_classes": 10, "widths": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}
"""The small network the values are tried in: widths 8-32, maps 16, 8, 4, 2 (in the 4-stride-2 macros)."""
REAL_BUILD = (10_000_000, 1_000_000_000)
"""(params, MACs) up to which a case is built and run for real; larger ones are built and run on the meta device
(shapes and code paths, nothing allocated)."""


def numeric_fields(schema: dict, skip: tuple[str, ...] = ("type",), prefix: tuple = (),
                   defs: dict | None = None) -> list[tuple[tuple, str]]:
    """(field path, ``integer`` | ``number``) for every numeric field of a config, from its JSON Schema (so per-stage
    fields, optional ones and nested models are found whatever their Python annotation); a list of numbers is
    the path of its first item."""
    defs = schema.get("$defs", {}) if defs is None else defs
    out: list[tuple[tuple, str]] = []
    for name, prop in schema.get("properties", {}).items():
        if name in skip:
            continue
        options = prop.get("anyOf") or prop.get("oneOf") or prop.get("allOf") or [prop]
        kinds = [o["type"] for o in options if o.get("type") in ("integer", "number")]
        items = [o["items"] for o in options if o.get("type") == "array" and isinstance(o.get("items"), dict)]
        if kinds:
            out.append((prefix + (name,), "number" if "number" in kinds else "integer"))
        elif items:
            inner = items[0].get("anyOf") or [items[0]]
            kinds = [o["type"] for o in inner if o.get("type") in ("integer", "number")]
            if kinds:
                out.append((prefix + (name, 0), "number" if "number" in kinds else "integer"))
        for option in options:
            ref = option.get("$ref", "")
            if ref.startswith("#/$defs/"):
                out += numeric_fields(defs[ref.split("/")[-1]], ("type",), prefix + (name,), defs)
    return out


def _with(data: dict, path: tuple, value) -> dict:
    """``data`` with ``value`` at ``path`` (a list item replaced, a missing mapping made)."""
    out = json.loads(json.dumps(data))
    node = out
    for key, nxt in zip(path[:-1], path[1:]):
        if isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
            node[key] = [] if isinstance(nxt, int) else {}
        node = node[key]
    last = path[-1]
    if isinstance(node, list):
        node.extend([value] * (last + 1 - len(node)))
    node[last] = value
    return out


def _registry(kind: str):
    from composer.channel import CHANNEL_MIXERS
    from composer.macro import MACROS
    from composer.mixers import MIXERS

    registries = {"mixer": MIXERS, "channel_mixer": CHANNEL_MIXERS, "macro": MACROS}
    if kind not in registries:
        raise ValueError(f"kind must be mixer, channel_mixer or macro, got {kind!r}")
    return registries[kind]


_FIELDS: dict = {}


def hostile_fields(kind: str, name: str) -> tuple[dict, list[tuple[tuple, str]]]:
    """(the small network's data, [(field path in it, ``integer`` | ``number``)]) for ``name`` in registry ``kind``
    (``mixer``, ``channel_mixer`` or ``macro``): a mixer type as symbol X in every stage; a channel mixer, or the
    spec's own fields (widths, depths, head, norms, ...) under a macro, with identity token mixers. Memoized per
    registry state (JSON Schemas take a while to make)."""
    from composer.channel import CHANNEL_MIXERS
    from composer.macro import MACROS
    from composer.mixers import MIXERS

    key = (kind, name, MIXERS.version, CHANNEL_MIXERS.version, MACROS.version)
    if key in _FIELDS:
        return _FIELDS[key]
    entry = _registry(kind).lookup(name)
    if kind == "mixer":
        base = {**SMALL, "macro": "metaformer", "layout": "X-X-X-X", "mixers": {"X": {"type": name}}}
        fields = [(("mixers", "X") + path, k) for path, k in numeric_fields(entry.model_json_schema())]
    elif kind == "channel_mixer":
        base = {**SMALL, "macro": "metaformer", "layout": "Id-Id-Id-Id", "channel_mixer": {"type": name}}
        fields = [(("channel_mixer",) + path, k) for path, k in numeric_fields(entry.model_json_schema())]
    else:
        from composer.spec.model import Spec

        base = {**SMALL, "macro": name, "layout": "Id-Id-Id-Id"}
        head = entry.spec_defaults(dict(base)).get("head")
        if isinstance(head, dict) and head.get("widths"):  # a head of its own widths (efficientvit): small too
            base["head"] = {"widths": SMALL["widths"][-1:] * 2}
        fields = numeric_fields(Spec.model_json_schema(), ("type", "mixers", "channel_mixer"))
    _FIELDS[key] = (base, fields)
    return base, fields


def field_label(path: tuple) -> str:
    """``("mixers", "X", "kernel_size")`` -> ``mixers.X.kernel_size``; ``("widths", 0)`` -> ``widths[0]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def hostile_spec(base: dict, path: tuple, value) -> str:
    """The YAML of ``base`` with ``value`` at ``path``."""
    import yaml

    return yaml.safe_dump(_with(base, path, value), sort_keys=False)


def hostile_cases(kind: str, name: str) -> list[tuple[str, str]]:
    """(what is set, spec YAML) for every numeric field of ``name`` in registry ``kind`` (:func:`hostile_fields`)
    and every hostile value of its kind."""
    base, fields = hostile_fields(kind, name)
    return [(f"{field_label(path)} = {value!r}", hostile_spec(base, path, value))
            for path, number_kind in fields
            for value in (HOSTILE_NUMBERS if number_kind == "number" else HOSTILE_INTEGERS)]


def try_hostile(text: str) -> tuple[str, str]:
    """(status, detail) of one hostile spec: ``refused`` with a located message (``<string>:LINE: ...``), ``ok``
    when it plans, builds and runs a forward (for real when small, else on the meta device), ``FAIL`` otherwise."""
    import torch

    import composer
    from composer.composed import build

    try:
        p = composer.plan(text)
        est = p.estimate()
        small = est.params <= REAL_BUILD[0] and est.macs <= REAL_BUILD[1]
        with torch.device("cpu" if small else "meta"):
            model = build(p).eval()
            x = torch.randn(1, p.spec.in_chans, p.spec.input_size, p.spec.input_size)
        with torch.no_grad():
            out = model(x)
    except composer.SpecError as exc:
        message = str(exc)
        if message.startswith("<string>:") and all(problem.line is not None for problem in exc.problems):
            return "refused", message.splitlines()[0][:160]
        return "FAIL", f"refused without a line: {message[:160]}"
    except Exception as exc:  # noqa: BLE001  (a crash in a check, a cost, a build or a forward is what we look for)
        return "FAIL", _first_line(exc)
    expected = (1, p.node("head")["out_shape"][0])
    if tuple(out.shape) != expected:
        return "FAIL", f"output {tuple(out.shape)}, the Plan says {expected}"
    # a finite output is not asked for: a layer_scale of 1e9 overflows float32 and is still a network that runs
    return "ok", f"{est.params:,} params" + ("" if small else " (run on the meta device)")


def _scripted(model):
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.10+: "torch.jit.script is deprecated"
        return torch.jit.script(model)


def _traced(model):
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    tracer = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}
    _, nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    traced = create_feature_extractor(model, return_nodes=[nodes[-1]], tracer_kwargs=tracer)
    return lambda x: next(iter(traced(x).values()))


def resolve(name: str) -> tuple[str, str, set[str | None]]:
    """(symbol, mixer type, the macros the symbol is bound in) for a layout symbol or a mixer type name."""
    import difflib

    from composer.mixers import MIXERS, SYMBOLS
    from composer.registry import RegistryError, load_plugins

    load_plugins()
    if name in SYMBOLS:
        entries = SYMBOLS[name]
        general = entries.get(None) or next(iter(entries.values()))
        # a symbol that means another operator in one macro (A in pvt): the kit checks the general binding
        return name, general.type, {m for m, s in entries.items() if s.type == general.type}
    if name in MIXERS:
        return "X", name, set()
    options = sorted(set(SYMBOLS) | set(MIXERS))
    near = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise RegistryError(f"unknown mixer symbol or type {name!r}{hint} known: {', '.join(options)}")


def check_mixer(name: str, macros: list[str] | None = None, quick: bool = False,
                log: Callable[[str], None] | None = None) -> Report:
    """Run the kit for layout symbol (or mixer type) ``name``; ``log`` gets every result as it comes."""
    from composer.macro import MACROS
    from composer.mixers import MIXERS

    t0 = time.perf_counter()
    symbol, mixer_type, bound = resolve(name)
    kit = _Kit(symbol, mixer_type, bound, log)
    if macros is None:
        macros = ["unified"] if quick else list(MACROS)
    for macro in macros:
        MACROS.lookup(macro)
    compiled: list[tuple[str, int]] = []
    for macro in macros:
        for stage in range(4):
            if kit.network(macro, stage) is not None:
                compiled.append((macro, stage))
    if not compiled:
        kit.add("compile", ", ".join(macros), "FAIL", "the mixer compiles in no stage of any macro checked")
    else:
        macro, stage = next(((m, s) for m, s in compiled if s == 2), compiled[0])
        kit.round_trip(macro, stage)
        kit.state_dict(macro, stage)
        if quick:
            kit.add("torchscript / fx", f"{macro} stage {stage}", "skipped", "--quick")
        else:
            kit.jit_fx(macro, stage)
    kit.hostile(macros[0])
    kit.hostile_values()
    origin = MIXERS.origin(mixer_type)
    return Report(name, mixer_type, origin, kit.results, time.perf_counter() - t0)


__all__ = ["Report", "Result", "check_mixer", "field_label", "hostile_cases", "hostile_fields", "hostile_spec",
           "numeric_fields", "try_hostile"]
