"""composer's extension points, one registry idiom for all of them, and the plugins that fill them.

Every extension point is a :class:`Registry` (a read-only mapping of names to what they name):

=====================  ===================================  ===========================================
registry               holds                                plugins declare (entry-point group)
=====================  ===================================  ===========================================
``MIXERS``             mixer config classes by ``type``     ``composer.mixers`` (a module that registers)
``SYMBOLS``            layout symbols (per macro)           ``composer.mixers``
``CHANNEL_MIXERS``     channel-mixer config classes         ``composer.channel_mixers``
``MACROS``             macro instances by name              ``composer.macros``
``WEIGHT_SOURCES``     checkpoint key mappings              ``composer.weight_sources`` (a function)
``OBJECTIVES``         search objectives                    ``composer.objectives`` (a function)
``DATASETS``           training data sources                ``composer.datasets`` (a function)
=====================  ===================================  ===========================================

A plugin is an installed distribution that declares, in its ``pyproject.toml``::

    [project.entry-points."composer.mixers"]
    msaconv = "composer_msaconv"          # a module: importing it registers its mixers and symbols

composer imports every plugin once, when the spec schema is first needed (after its own registrations), so a
plugin may import anything of composer but ``composer.spec``. A plugin that fails to import, or registers a name
that is taken, is skipped whole (its registrations are rolled back) with a warning naming it (logger
``composer.plugins``; ``composer list`` shows it too); composer keeps working without it. Registering after the
schema exists (in a notebook, after ``import composer``) works too: listeners (the spec schema) rebuild on every
change.

This module is plain Python: no torch, no pydantic.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

COMPOSER = "composer"
"""The origin of everything composer registers itself."""


class RegistryError(ValueError):
    """A name registered twice, or looked up but never registered."""


_log = logging.getLogger("composer.plugins")
_origin_stack: list[str] = [COMPOSER]


@contextlib.contextmanager
def registering_as(origin: str) -> Iterator[None]:
    """Registrations inside this block are attributed to ``origin`` (``composer list`` shows it)."""
    _origin_stack.append(origin)
    try:
        yield
    finally:
        _origin_stack.pop()


def _caller_origin() -> str:
    """Who is registering: the plugin being loaded, else the first module outside composer's registration
    helpers on the stack (``composer`` for composer's own modules, ``__main__`` in a notebook or script)."""
    if len(_origin_stack) > 1:
        return _origin_stack[-1]
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module not in _HELPERS:
            if module in _PLUGIN_MODULES:  # a plugin's module imported directly, before composer loaded it
                return _PLUGIN_MODULES[module]
            return COMPOSER if module == "composer" or module.startswith("composer.") else module
        frame = frame.f_back
    return COMPOSER


_HELPERS = {__name__, "composer.mixers.base", "composer.channel.mlp"}  # modules whose register_* wrap ours
_PLUGIN_MODULES: dict[str, str] = {}  # module of an entry point -> its plugin's label


class Registry(Mapping[str, T], Generic[T]):
    """Names -> registered objects for one extension point. Read it as a mapping; write it with
    :meth:`register`. ``kind`` names an entry in messages (``"mixer type"``)."""

    def __init__(self, kind: str, group: str | None = None):
        self.kind = kind
        self.group = group
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._listeners: list[Callable[[], None]] = []
        self.version = 0

    # -- reading ---------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def origin(self, name: str) -> str:
        """Who registered ``name``: ``composer``, a plugin (``plugin atconv (composer-atconv 0.1.0)``) or a module."""
        return self._origins[name]

    def lookup(self, name: str) -> T:
        """The entry, or a :class:`RegistryError` with the nearest names and every known one."""
        if name in self._entries:
            return self._entries[name]
        near = difflib.get_close_matches(str(name), list(self._entries), n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise RegistryError(f"unknown {self.kind} {name!r}{hint} known: {', '.join(sorted(self._entries))}")

    # -- writing ---------------------------------------------------------------------------------------------
    def register(self, name: str, value: T, *, replace: bool = False, origin: str | None = None) -> T:
        """Add ``value`` under ``name``. A name that is taken (by another object) is a :class:`RegistryError`
        naming who took it, unless ``replace``. ``origin``: who registers (default: found on the call stack)."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries and self._entries[name] is not value and not replace:
            raise RegistryError(f"{self.kind} {name!r} is already registered by {self._origins[name]}")
        self._entries[name] = value
        if origin is not None:
            self._origins[name] = origin
        elif not (replace and name in self._origins):
            self._origins[name] = _caller_origin()
        self._changed()
        return value

    def unregister(self, name: str) -> None:
        if name not in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is not registered")
        del self._entries[name]
        del self._origins[name]
        self._changed()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change (the spec schema rebuilds its unions)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.version += 1
        if not _batch:
            for listener in self._listeners:
                listener()

    def _snapshot(self) -> tuple[dict, dict]:
        return dict(self._entries), dict(self._origins)

    def _restore(self, snapshot: tuple[dict, dict]) -> None:
        self._entries, self._origins = dict(snapshot[0]), dict(snapshot[1])
        self._changed()


_batch: list[bool] = []


@contextlib.contextmanager
def _batched(registries) -> Iterator[None]:
    """Listeners run once after the block, not after every registration inside it."""
    _batch.append(True)
    try:
        yield
    finally:
        _batch.pop()
        if not _batch:
            done: set[int] = set()
            for registry in registries:
                for listener in registry._listeners:
                    if id(listener) not in done:
                        done.add(id(listener))
                        listener()


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Every registry as it is now is restored when the block ends: what is registered inside (a test, a
    notebook experiment) is gone afterwards; composer's own lazily imported registrations stay."""
    snapshots = [(r, r._snapshot()) for r in REGISTRIES]
    try:
        yield
    finally:
        with _batched(REGISTRIES):
            for registry, (entries, origins) in snapshots:
                if (registry._entries, registry._origins) == (entries, origins):
                    continue
                # composer's own registrations made inside the block (a module of composer imported there for
                # the first time) stay: that module will not run again to make them
                for name, origin in registry._origins.items():
                    if origin == COMPOSER and name not in entries:
                        entries[name], origins[name] = registry._entries[name], origin
                registry._restore((entries, origins))


# -- the registries ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Symbol:
    """A layout symbol: shorthand for a mixer type plus default parameters, possibly per macro."""

    name: str
    type: str
    defaults: dict[str, Any] = field(default_factory=dict)
    macro: str | None = None  # None: every macro without a macro-specific entry
    doc: str = ""


@dataclass(frozen=True)
class Objective:
    """A search objective. Built-ins (``builtin=True``) are evaluated by the search itself; any other is
    ``function(model, spec, reporter) -> float`` (see :mod:`composer.search.objectives`)."""

    name: str
    maximize: bool
    function: Callable | None = None
    doc: str = ""
    builtin: bool = False


MIXERS: Registry = Registry("mixer type", "composer.mixers")
SYMBOLS: Registry = Registry("layout symbol", "composer.mixers")
"""symbol name -> {macro or None: :class:`Symbol`}"""
CHANNEL_MIXERS: Registry = Registry("channel mixer type", "composer.channel_mixers")
MACROS: Registry = Registry("macro", "composer.macros")
WEIGHT_SOURCES: Registry = Registry("weight source", "composer.weight_sources")
OBJECTIVES: Registry = Registry("objective", "composer.objectives")
PRESET_FOLDERS: Registry = Registry("preset folder", "composer.specs")
"""plugin name -> a folder of preset spec files (found by name like composer's own, registered with timm)"""
SPACE_FOLDERS: Registry = Registry("search-space folder", "composer.search_spaces")
DATASETS: Registry = Registry("dataset", "composer.datasets")
"""name -> ``factory(argument: str | None) -> composer.train.DataSource`` (``--data NAME[:ARGUMENT]``)"""

REGISTRIES = (MIXERS, SYMBOLS, CHANNEL_MIXERS, MACROS, WEIGHT_SOURCES, OBJECTIVES, PRESET_FOLDERS, SPACE_FOLDERS,
              DATASETS)
GROUPS = ("composer.mixers", "composer.channel_mixers", "composer.macros", "composer.weight_sources",
          "composer.objectives", "composer.specs", "composer.search_spaces", "composer.datasets")


def register_mixer(cls: type) -> type:
    """Class decorator: register a :class:`~composer.mixers.MixerConfig` subclass under its ``type`` default."""
    info = getattr(cls, "model_fields", {}).get("type")
    type_name = getattr(info, "default", None)
    if not isinstance(type_name, str):
        raise RegistryError(f"{cls.__name__}.type needs a string default (the discriminator value), e.g. "
                            f"type: Literal['my_mixer'] = 'my_mixer'")
    MIXERS.register(type_name, cls)
    return cls


def register_symbol(name: str, type_name: str, *, macro: str | None = None, doc: str = "", **defaults) -> Symbol:
    """Bind layout symbol ``name`` (what users write in ``layout:``) to mixer type ``type_name`` with
    ``defaults``, for every macro (``macro=None``) or for one macro only."""
    entries = dict(SYMBOLS.get(name, {}))
    if macro in entries:
        where = f" for macro {macro!r}" if macro else ""
        raise RegistryError(f"layout symbol {name!r}{where} is already registered by {SYMBOLS.origin(name)}")
    entries[macro] = symbol = Symbol(name, type_name, defaults, macro, doc)
    origin = SYMBOLS._origins.get(name)
    SYMBOLS.register(name, entries, replace=True)
    if origin is not None and origin != _caller_origin():  # a plugin adding a macro binding to a known symbol
        SYMBOLS._origins[name] = f"{origin} + {_caller_origin()}"
    return symbol


def register_channel_mixer(cls: type) -> type:
    """Class decorator: register a :class:`~composer.channel.ChannelConfig` subclass under its ``type``."""
    type_name = getattr(cls.model_fields.get("type"), "default", None)
    if not isinstance(type_name, str):
        raise RegistryError(f"{cls.__name__}.type needs a string default (the discriminator value)")
    CHANNEL_MIXERS.register(type_name, cls)
    return cls


def register_macro(macro: Any) -> Any:
    """Register a :class:`~composer.macro.Macro` instance (or a class, which is instantiated) by its ``name``."""
    instance = macro() if isinstance(macro, type) else macro
    MACROS.register(instance.name, instance)
    return macro


def register_weight_source(name: str, mapping: Callable | None = None):
    """Register ``mapping(state_dict) -> state_dict`` (checkpoint keys -> composer's) as ``weights.load``'s
    ``source=name``; usable as a decorator."""
    if mapping is None:
        return lambda fn: register_weight_source(name, fn)
    WEIGHT_SOURCES.register(name, mapping)
    return mapping


def register_objective(name: str, function: Callable | None = None, *, direction: str | None = None,
                       doc: str = ""):
    """Register ``function(model, spec, reporter) -> float`` as search objective ``name`` (``--objective name``);
    ``direction`` is ``maximize`` or ``minimize`` (default: the function's ``direction`` attribute). Usable as a
    decorator."""
    if function is None:
        return lambda fn: register_objective(name, fn, direction=direction, doc=doc)
    OBJECTIVES.register(name, Objective(name, objective_direction(function, direction, name) == "maximize",
                                        function, doc or (function.__doc__ or "").strip().split("\n")[0]))
    return function


def register_dataset(name: str, factory: Callable | None = None):
    """Register ``factory(argument) -> composer.train.DataSource`` as ``--data name`` (``--data name:ARGUMENT``
    passes ARGUMENT, else None); usable as a decorator."""
    if factory is None:
        return lambda fn: register_dataset(name, fn)
    if not callable(factory):
        raise RegistryError(f"dataset {name!r}: the factory must be a function (argument -> DataSource)")
    DATASETS.register(name, factory)
    return factory


DIRECTIONS = ("maximize", "minimize")


def objective_direction(function: Callable, given: str | None, name: str) -> str:
    """``given`` (``--direction``), else ``function.direction``; one of them must say it."""
    direction = given if given is not None else getattr(function, "direction", None)
    if direction is None:
        raise RegistryError(f"objective {name!r}: say whether to maximize or minimize it: --direction maximize "
                            f"(or minimize), or set {getattr(function, '__name__', 'the function')}.direction = "
                            "'maximize'")
    if direction not in DIRECTIONS:
        raise RegistryError(f"objective {name!r}: direction must be maximize or minimize, got {direction!r}")
    return direction


def register_folder(name: str, where: Any, registry: Registry) -> str:
    """A folder of spec (or search-space) files: a path, or a module / package whose own folder it is."""
    import os
    from pathlib import Path

    if getattr(where, "__file__", None):
        path = Path(os.path.dirname(where.__file__))
    elif hasattr(where, "__path__"):  # a namespace package (a folder without __init__.py)
        path = Path(next(iter(where.__path__)))
    else:
        path = Path(os.fspath(where))
    if not path.is_dir():
        raise RegistryError(f"{registry.kind} {str(path)!r} is not a folder")
    registry.register(name, str(path))
    return str(path)


# -- plugins -------------------------------------------------------------------------------------------------------

@dataclass
class Plugin:
    """One entry point composer loaded (or tried to)."""

    group: str
    name: str
    value: str
    distribution: str
    error: str | None = None

    @property
    def label(self) -> str:
        return f"plugin {self.name!r} ({self.value}, from {self.distribution})"


PLUGINS: list[Plugin] = []
_loaded = False


def load_plugins() -> list[Plugin]:
    """Import every installed plugin once (entry-point groups :data:`GROUPS`); returns what was tried."""
    global _loaded
    if _loaded:
        return PLUGINS
    _loaded = True
    from importlib.metadata import entry_points

    with _batched(REGISTRIES):
        for group in GROUPS:
            for ep in sorted(entry_points(group=group), key=lambda e: e.name):
                dist = ep.dist
                where = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an unknown distribution"
                plugin = Plugin(group, ep.name, ep.value, where)
                PLUGINS.append(plugin)
                _PLUGIN_MODULES.setdefault(ep.value.split(":")[0].strip(), plugin.label)
                _load(plugin, ep.load)
    return PLUGINS


def _load(plugin: Plugin, load: Callable[[], Any]) -> None:
    snapshots = [(r, r._snapshot()) for r in REGISTRIES]
    try:
        with registering_as(plugin.label):
            obj = load()
            if plugin.group == "composer.objectives":
                if not callable(obj):
                    raise RegistryError(f"an objective entry point must name a function, got {type(obj).__name__}")
                register_objective(plugin.name, obj)
            elif plugin.group == "composer.weight_sources":
                if not callable(obj):
                    raise RegistryError("a weight-source entry point must name a function (state_dict -> state_dict)")
                register_weight_source(plugin.name, obj)
            elif plugin.group == "composer.datasets":
                register_dataset(plugin.name, obj)
            elif plugin.group in ("composer.specs", "composer.search_spaces"):
                register_folder(plugin.name, obj, PRESET_FOLDERS if plugin.group == "composer.specs" else SPACE_FOLDERS)
            elif callable(obj) and not isinstance(obj, type):
                obj()  # "pkg:register": a function that registers
    except Exception as exc:  # anything a broken plugin raises; composer goes on without it
        for registry, snapshot in snapshots:
            registry._restore(snapshot)
        plugin.error = f"{type(exc).__name__}: {exc}"
        # a log record, not a warning: without logging configured, Python prints just the message on stderr (one
        # line, no file:line of composer's), the way the command line reports everything else
        _log.warning("warning: %s was not loaded (%s); composer goes on without it", plugin.label, plugin.error)


__all__ = ["CHANNEL_MIXERS", "DATASETS", "DIRECTIONS", "GROUPS", "MACROS", "MIXERS", "OBJECTIVES", "PLUGINS",
           "PRESET_FOLDERS", "REGISTRIES", "SPACE_FOLDERS", "SYMBOLS", "WEIGHT_SOURCES", "Objective", "Plugin",
           "Registry", "RegistryError", "Symbol", "isolated", "load_plugins", "objective_direction",
           "register_channel_mixer", "register_dataset", "register_folder", "register_macro", "register_mixer",
           "register_objective", "register_symbol", "register_weight_source", "registering_as"]
