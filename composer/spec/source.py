"""Reading spec text: YAML with line numbers, ``extends:`` chains, presets.

The loader keeps, for every key and list item, the file and line it was written on, so that a problem
found later (by pydantic, by the Plan) can be reported as ``specs/x.yaml:7: layout[2]: ...``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import yaml

from ..paths import At, check_name, read_bytes, regular_file, short_name
from ..paths import exists as path_exists
from .errors import Problem, SpecError

_SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass
class Locations:
    """Map from a path in the spec data to (file, line) where it was written."""

    entries: dict[tuple, tuple[str, int]] = field(default_factory=dict)
    default_file: str | None = None

    def find(self, path: tuple) -> tuple[str | None, int | None]:
        """The location of ``path`` or of its nearest written ancestor."""
        path = tuple(path)
        while True:
            if path in self.entries:
                return self.entries[path]
            if not path:
                return self.default_file, None
            path = path[:-1]

    def override(self, other: Locations, data: Any) -> None:
        """Layer a child's locations (``other``, for the overrides ``data``) over these."""

        def drop_replaced(value: Any, prefix: tuple) -> None:
            for key, sub in value.items():
                path = prefix + (key,)
                if isinstance(sub, Mapping):
                    drop_replaced(sub, path)  # merged key by key: the parent's other keys stay
                else:
                    self.entries = {p: v for p, v in self.entries.items() if p[: len(path)] != path}

        if isinstance(data, Mapping):
            drop_replaced(data, ())
        self.entries.update(other.entries)


# A spec is a few hundred YAML nodes. These bounds turn hostile or broken input (``[[[[...]]]]`` thousands
# deep, alias "billion laughs" that expand to 10^9 nodes, an alias that contains itself) into an error
# instead of a RecursionError, a hang or an exhausted memory.
MAX_DEPTH = 32
MAX_EXTENDS = 64  # files in one extends chain (each level is a recursion: a limit, not a RecursionError)
MAX_NODES = 100_000


class _Walker:
    """Plain data from a composed YAML node tree, recording the line of every key and list item."""

    def __init__(self, loader: yaml.SafeLoader, file: str, locs: Locations):
        self.loader, self.file, self.locs = loader, file, locs
        self.nodes = 0
        self.open: set[int] = set()  # ids of the collection nodes being walked (an alias cycle revisits one)

    def _fail(self, message: str, path: tuple, node: yaml.Node) -> SpecError:
        return SpecError(Problem(message, path, self.file, node.start_mark.line + 1))

    def walk(self, node: yaml.Node, path: tuple) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self._fail(f"the YAML expands to more than {MAX_NODES:,} values (aliases repeating aliases?); "
                             "a spec is a few hundred", path, node)
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            try:
                return self.loader.construct_object(node, deep=True)
            except (ValueError, OverflowError):  # e.g. a 5000-digit integer (Python's int-string limit)
                text = str(node.value)
                shown = text if len(text) <= 40 else f"{text[:20]}...{text[-10:]} ({len(text)} characters)"
                raise self._fail(f"cannot read the number {shown}: numbers in a spec must be below 2^31",
                                 path, node) from None
        if len(path) >= MAX_DEPTH:
            raise self._fail(f"nested more than {MAX_DEPTH} levels deep; a spec needs a handful", path, node)
        default = "tag:yaml.org,2002:map" if isinstance(node, yaml.MappingNode) else "tag:yaml.org,2002:seq"
        if node.tag != default:  # yaml.safe_load refuses unknown tags (!!python/object, !custom, ...)
            raise self._fail(f"unknown YAML tag {short_name(str(node.tag), 60)!r} on a "
                             f"{'mapping' if default.endswith('map') else 'list'}; specs are plain YAML data",
                             path, node)
        if id(node) in self.open:
            raise self._fail("a YAML alias refers to a collection that contains it (a recursive structure)",
                             path, node)
        self.open.add(id(node))
        try:
            return self._mapping(node, path) if isinstance(node, yaml.MappingNode) else self._sequence(node, path)
        finally:
            self.open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        out: dict = {}
        pairs = node.value
        own = sum(1 for key_node, _ in pairs if key_node.tag != "tag:yaml.org,2002:merge")
        if own != len(pairs):  # merge keys (<<: *anchor) as yaml.safe_load reads them; on a copy, since an
            flat = yaml.MappingNode(node.tag, list(pairs), node.start_mark, node.end_mark)  # alias shares the node
            try:
                self.loader.flatten_mapping(flat)
            except yaml.MarkedYAMLError as exc:
                raise self._fail(f"YAML merge key: {exc.problem}", path, node) from None
            pairs = flat.value
        merged = len(pairs) - own  # the merged pairs come first; this mapping's own keys override them
        written: set = set()
        for index, (key_node, value_node) in enumerate(pairs):
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._fail("keys must be names, got a YAML collection as a key", path, key_node)
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise self._fail(f"keys must be names, got {key!r}", path, key_node)
            if index >= merged and key in written:
                raise self._fail(f"duplicate key {key!r} (first given on line "
                                 f"{self.locs.entries[path + (key,)][1]})", path + (key,), key_node)
            if index >= merged:
                written.add(key)
            self.locs.entries[path + (key,)] = (self.file, key_node.start_mark.line + 1)
            out[key] = self.walk(value_node, path + (key,))
        return out

    def _sequence(self, node: yaml.SequenceNode, path: tuple) -> list:
        items = []
        for i, item in enumerate(node.value):
            self.locs.entries[path + (i,)] = (self.file, item.start_mark.line + 1)
            items.append(self.walk(item, path + (i,)))
        return items


class SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-5`` / ``3E+2`` as floats: YAML 1.1 (PyYAML) needs a dot in the
    mantissa and would hand composer the string ``'1e-5'``, while YAML 1.2, JSON and Python read a float."""


SpecLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))


def parse_yaml(text: str, file: str = "<string>") -> tuple[Any, Locations]:
    """Parse YAML text into plain data plus the line of every key and list item."""
    locs = Locations(default_file=file)
    loader = None
    try:
        loader = SpecLoader(text)  # checks the characters of the whole text: may raise a ReaderError
        node = loader.get_single_node()
        data = None if node is None else _Walker(loader, file, locs).walk(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        start = exc.context_mark
        if start is not None and mark is not None and start.line != mark.line:
            what += f" (the construct began on line {start.line + 1})"
        raise SpecError(Problem(f"YAML syntax error: {what}; check indentation, colons and brackets",
                                (), file, line)) from None
    except yaml.YAMLError as exc:
        raise SpecError(Problem(f"YAML syntax error: {exc}", (), file)) from None
    except RecursionError:  # PyYAML composes nested collections recursively, before the walker's depth check
        raise SpecError(Problem(f"YAML nested too deeply (more than {MAX_DEPTH} levels); a spec needs a handful",
                                (), file)) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, locs


def shipped_folder(kind: str) -> FsPath | None:
    """The folder of the ``kind`` files that ship with composer: ``"specs"`` (presets) or ``"search"`` (search
    spaces). An installed wheel has them as package data (``composer/_data/<kind>``, put there by setup.py's
    build step); a clone or editable install reads the repository's own folder beside the package."""
    from importlib.resources import files

    try:
        packaged = FsPath(os.fspath(files("composer") / "_data" / kind))
    except TypeError:  # a zipped install, whose Traversable is no file-system path: not supported
        packaged = None
    if packaged is not None and packaged.is_dir():
        return packaged
    checkout = FsPath(__file__).resolve().parents[2] / kind
    return checkout if checkout.is_dir() else None


def _search_path(variable: str, kind: str, plugins) -> list[FsPath]:
    from ..registry import load_plugins

    load_plugins()
    dirs = [FsPath(p) for p in os.environ.get(variable, "").split(os.pathsep) if p]
    shipped = shipped_folder(kind)
    return dirs + ([shipped] if shipped is not None else []) + [FsPath(f) for f in plugins.values()]


def spec_search_path() -> list[FsPath]:
    """Folders searched for preset names: ``$COMPOSER_SPECS_PATH`` (``os.pathsep``-separated), the presets that
    ship with composer, then plugins' preset folders (entry-point group ``composer.specs``)."""
    from ..registry import PRESET_FOLDERS

    return _search_path("COMPOSER_SPECS_PATH", "specs", PRESET_FOLDERS)


def space_search_path() -> list[FsPath]:
    """Folders searched for search-space names: ``$COMPOSER_SEARCH_PATH``, the spaces that ship with composer,
    then plugins' (entry-point group ``composer.search_spaces``)."""
    from ..registry import SPACE_FOLDERS

    return _search_path("COMPOSER_SEARCH_PATH", "search", SPACE_FOLDERS)


def _names_in(folders: list[FsPath]) -> list[str]:
    names = set()
    for folder in folders:
        try:
            names.update(p.stem for p in folder.iterdir() if p.suffix in _SPEC_SUFFIXES)
        except OSError:  # a folder of $COMPOSER_SPECS_PATH that is missing or unreadable adds nothing
            continue
    return sorted(names)


def preset_names() -> list[str]:
    return _names_in(spec_search_path())


def space_names() -> list[str]:
    return _names_in(space_search_path())


def _find_in(folders: list[FsPath], name: str) -> FsPath | None:
    for folder in folders:
        for suffix in _SPEC_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if is_file(candidate):
                return candidate
    return None


def find_preset(name: str) -> FsPath | None:
    return _find_in(spec_search_path(), name)


def find_space(name: str) -> FsPath | None:
    return _find_in(space_search_path(), name)


def display_path(path: FsPath) -> str:
    """How a file is named in messages: relative to the working folder when it lies below it, else absolute
    (a preset inside site-packages is clearer as an absolute path than as ../../../lib/...)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def not_found_hint(ref: str, names: list[str], folders: list[FsPath], what: str) -> str:
    """'; did you mean X?' or the list of names, then the folders searched (for a name that is not found)."""
    import difflib

    near = [repr(n) for n in difflib.get_close_matches(ref, names, n=3)]
    if near:
        options = near[0] if len(near) == 1 else f"{', '.join(near[:-1])} or {near[-1]}"
        hint = f"; did you mean {options}?"
    else:
        hint = f"; {what}: {', '.join(names) or '(none)'}"
    return hint + f" (folders searched: {', '.join(str(f) for f in folders) or '(none)'})"


def named_instead(path_text: str, names: list[str], command: str) -> str:
    """For a path that does not exist whose file name is a shipped name (``specs/chpxformer.yaml`` typed outside
    a clone): a hint to use the name."""
    stem = FsPath(path_text).stem
    if FsPath(path_text).suffix in _SPEC_SUFFIXES and stem in names:
        return f"; {stem!r} ships with composer: use the name, e.g. `composer {command} {stem}`"
    return ""


def is_file(path: FsPath) -> bool:
    """``path.is_file()``, False (not an OSError) for a name the OS refuses, e.g. longer than NAME_MAX."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def exists(path: FsPath) -> bool:
    """Whether anything (a file, a folder, a pipe, a dangling link) has this name; False for a refused name."""
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False


def looks_like_path(ref: str) -> bool:
    return ref.endswith(_SPEC_SUFFIXES) or "/" in ref or os.sep in ref


def _deep_merge(base: Mapping, override: Mapping) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


MAX_FILE_BYTES = 1 << 20  # a spec or search space is a few KB; 1 MiB leaves room and stops /dev/zero


def read_spec_file(path: FsPath, display: str | None = None) -> tuple[Any, Locations]:
    """The YAML of a spec or search-space file. Only regular files are read (a FIFO would block forever,
    /dev/zero never end), at most MAX_FILE_BYTES, as UTF-8; the path goes through composer.paths, so a name the
    OS refuses is a located error too."""
    display = short_name(display or str(path))
    at = At("cannot read spec file", file=display)
    if not path_exists(path, at):  # a name no file can have, a file where a folder should be: said as such
        hint = named_instead(display, preset_names(), "build")
        raise SpecError(Problem(f"no such file: {display}{hint}", (), display))
    regular_file(path, at, "spec file")
    raw = read_bytes(path, at, MAX_FILE_BYTES)
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(Problem(f"cannot read spec file: more than {MAX_FILE_BYTES:,} bytes; a spec is a few KB",
                                (), display))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError(Problem(f"the file is not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line} "
                                "(save it as UTF-8)", (), display, line)) from None
    return parse_yaml(text, display)


def spec_file(ref: str, base_dir: FsPath | None, at: At) -> FsPath:
    """The spec file a field (``extends``, ``base``, an ensemble member) names by path, relative to
    ``base_dir``: it must be a regular file, else ``at``'s located error says why (missing, a folder, a dangling
    link, a name too long, a NUL byte, ...)."""
    path = (base_dir or FsPath.cwd()) / check_name(ref, at)
    if not path_exists(path, at):
        raise at.error(ref, f"no such spec file (looked for {short_name(str(path))})")
    return regular_file(path, at, "spec file")


def resolve_extends(data: Any, locs: Locations, base_dir: FsPath | None,
                    chain: tuple[str, ...] = ()) -> tuple[Any, Locations]:
    """Merge the ``extends:`` chain of ``data`` (parents first) into one mapping without ``extends``."""
    if not isinstance(data, Mapping) or "extends" not in data:
        return data, locs
    ref = data["extends"]
    if not isinstance(ref, str) or not ref.strip():
        raise SpecError.at(("extends",), f"expected a preset name or a path to a spec file, got {ref!r}", locs)
    if looks_like_path(ref):
        parent_path = spec_file(ref, base_dir, At("extends", ("extends",), locs))
    else:
        parent_path = find_preset(ref)
        if parent_path is None:
            hint = not_found_hint(ref, preset_names(), spec_search_path(), "presets")
            raise SpecError.at(("extends",), f"unknown preset {short_name(ref)!r}{hint}", locs)
    key = str(parent_path.resolve())
    if len(chain) >= MAX_EXTENDS:
        first = FsPath(chain[0]).name if chain else "?"
        raise SpecError.at(("extends",), f"the extends chain from {first} is longer than {MAX_EXTENDS} files; "
                                         "a variant extends a preset or two", locs)
    if key in chain:
        cycle = " -> ".join([*(FsPath(c).stem for c in chain), FsPath(key).stem])
        raise SpecError.at(("extends",), f"extends cycle: {cycle}; remove one of these extends", locs)
    display = display_path(parent_path) if parent_path.is_absolute() else str(parent_path)
    parent, parent_locs = read_spec_file(parent_path, display)
    if not isinstance(parent, Mapping):
        raise SpecError(Problem("a spec must be a mapping of fields (name: ..., widths: ...)", (), display))
    parent, parent_locs = resolve_extends(parent, parent_locs, parent_path.parent, chain + (key,))
    child = {k: v for k, v in data.items() if k != "extends"}
    merged = _deep_merge(parent, child)
    merged_locs = Locations(dict(parent_locs.entries), locs.default_file)
    merged_locs.override(locs, child)
    if "name" not in child:
        merged.pop("name", None)  # a variant is not its parent: name it or stay anonymous
    return merged, merged_locs
