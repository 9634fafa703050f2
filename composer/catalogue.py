"""The mixer catalogue (docs/mixers.md), generated from the registry so that it cannot go stale.

    python -m composer.catalogue > docs/mixers.md

Everything on the page comes from the code: the layout symbols and their per-macro bindings (``SYMBOLS``),
and for every mixer type (``MIXERS``) its ``summary``, ``paper``, ``layout`` and ``cost_formula`` class
variables and its parameters as the spec schema sees them (pydantic fields: type, default, description or
the attribute's docstring). tests/test_docs.py checks that the committed page equals :func:`render` and that
no registered mixer lacks a summary, a paper or a cost formula (:func:`missing_docs`).
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from typing import Any

from .mixers import MIXERS, SYMBOLS, MixerConfig
from .registry import COMPOSER, load_plugins

REGENERATE = "python -m composer.catalogue > docs/mixers.md"
DOCUMENTED = ("summary", "paper", "cost_formula")


def missing_docs() -> list[str]:
    """``type: attribute`` for every registered mixer whose summary, paper or cost formula is empty."""
    return [f"{name}: {attr}" for name, cls in sorted(MIXERS.items()) for attr in DOCUMENTED
            if not str(getattr(cls, attr, "")).strip()]


# ---------------------------------------------------------------------------------------------------------
# parameters: type text, default, description


def _schema_type(prop: dict[str, Any]) -> str:
    """A JSON-schema property as a short type text: ``integer > 0``, ``'dw' | 'gf'``, ``integer > 0 or null``."""
    if "anyOf" in prop:
        return " or ".join(_schema_type(p) for p in prop["anyOf"])
    if "const" in prop:
        return repr(prop["const"])
    if "enum" in prop:
        return " | ".join(repr(v) for v in prop["enum"])
    if prop.get("type") == "array":
        items = prop.get("items")
        return f"list of {_schema_type(items)}" if items else "list"
    text = prop.get("type", "any")
    bounds = [(key, op) for key, op in (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"),
                                        ("maximum", "<="))]
    limits = [f"{op} {_value(prop[key])}" for key, op in bounds if key in prop]
    return f"{text} {', '.join(limits)}" if limits else text


def _value(value: Any) -> str:
    """A default as it is written in a YAML spec."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """``field: docstring`` for fields documented by a string literal right after them (as in hyena.py),
    collected over the class and its bases (a subclass wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, MixerConfig)):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in zip(body, body[1:]):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[stmt.target.id] = " ".join(after.value.value.split())
    return docs


def _parameter_rows(cls: type[MixerConfig]) -> list[tuple[str, str, str, str]]:
    props = cls.model_json_schema().get("properties", {})
    docstrings = _attribute_docstrings(cls)
    rows = []
    for name, field in cls.model_fields.items():
        if name == "type":
            continue
        default = field.get_default(call_default_factory=True)
        description = field.description or docstrings.get(name, "")
        rows.append((name, _schema_type(props.get(name, {})), _value(default), description))
    return rows


# ---------------------------------------------------------------------------------------------------------
# the page


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _symbols_of(type_name: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(symbol, macro or None, symbol defaults) of every layout symbol bound to ``type_name``."""
    return [(symbol, macro, entry.defaults) for symbol in sorted(SYMBOLS)
            for macro, entry in sorted(SYMBOLS[symbol].items(), key=lambda kv: kv[0] or "")
            if entry.type == type_name]


def _symbol_text(symbol: str, macro: str | None, defaults: dict[str, Any]) -> str:
    text = f"`{symbol}`" + (f" (macro `{macro}`)" if macro else "")
    if defaults:
        text += " with " + ", ".join(f"`{k}: {_value(v)}`" for k, v in defaults.items())
    return text


def _mixer_section(type_name: str, cls: type[MixerConfig]) -> list[str]:
    symbols = _symbols_of(type_name)
    lines = [f"## `{type_name}`", "", cls.summary or "*(no summary)*", ""]
    lines.append("* **symbols:** " + (", ".join(_symbol_text(*s) for s in symbols) if symbols
                                      else f"none; use it as `mixers: {{X: {{type: {type_name}}}}}`"))
    lines.append(f"* **paper:** {cls.paper or '*(missing)*'}")
    lines.append(f"* **layout:** `{cls.layout}`  ·  **module:** `{cls.__module__}.{cls.__name__}`")
    lines.append(f"* **cost:** {cls.cost_formula or '*(missing)*'}")
    if cls.cost_depends_on_block:
        lines.append("* the cost depends on the block's index within its stage")
    if MIXERS.origin(type_name) != COMPOSER:
        lines.append(f"* **registered by:** {MIXERS.origin(type_name)}")
    lines.append("")
    rows = _parameter_rows(cls)
    if rows:
        lines += ["| parameter | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{name}` | {_cell(kind)} | `{_cell(default)}` | {_cell(doc)} |"
                  for name, kind, default, doc in rows]
    else:
        lines.append("No parameters.")
    return lines + [""]


def render() -> str:
    """The whole of docs/mixers.md (with installed plugins' mixers, marked by their origin)."""
    load_plugins()
    lines = [
        "# Mixer catalogue",
        "",
        f"<!-- generated by `{REGENERATE}`; do not edit by hand -->",
        "",
        "Every token mixer composer knows, generated from the registry (`composer.mixers.MIXERS` and `SYMBOLS`).",
        "A layout symbol is shorthand for a mixer type (possibly a different one per macro); any parameter",
        "below can be set under `mixers:` for a symbol, as one value or one value per stage",
        "(docs/spec-language.md). In cost formulas C is the stage width, H x W its feature map at the spec's",
        "`input_size`, N = H·W the tokens; MACs follow docs/flop-conventions.md (convolutions, linears and",
        "attention products; biases, norms, activations, softmax and element-wise terms are not counted; FFTs",
        "go to `fft_macs` at 1.25·P·log2 P per real transform of P points). Params count every `nn.Parameter`,",
        "biases included.",
        "",
        "| symbol | macro | type | summary |",
        "|---|---|---|---|",
    ]
    for symbol in sorted(SYMBOLS):
        for macro, entry in sorted(SYMBOLS[symbol].items(), key=lambda kv: kv[0] or ""):
            summary = MIXERS[entry.type].summary if entry.type in MIXERS else "*(unregistered type)*"
            lines.append(f"| `{symbol}` | {macro or 'any'} | [`{entry.type}`](#{entry.type}) "
                         f"| {_cell(summary)} |")
    unbound = sorted(t for t in MIXERS if not _symbols_of(t))
    if unbound:
        lines += ["", "Types without a symbol (use them with `mixers: {X: {type: ...}}`): "
                  + ", ".join(f"`{t}`" for t in unbound) + "."]
    lines.append("")
    for type_name, cls in sorted(MIXERS.items()):
        lines += _mixer_section(type_name, cls)
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
