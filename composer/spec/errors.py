"""Errors that point at the place in a spec a user has to fix.

Every problem with a spec is reported as a :class:`SpecError`: the file and line it came from (when the
spec was YAML), the field path in the spec (``layout[2]``, ``mixers.M.head_dim``), what was given and
what is allowed. The CLI prints ``str(error)`` and exits with code 2; it never shows a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Path = tuple  # tuple[str | int, ...]


def format_path(path: Sequence) -> str:
    """``("mixers", "M", "head_dim")`` -> ``mixers.M.head_dim``; ``("layout", 2)`` -> ``layout[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<spec>"


@dataclass
class Problem:
    message: str
    path: Path = ()
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        field = f"{format_path(self.path)}: " if self.path else ""
        return f"{where}{field}{self.message}"


class SpecError(ValueError):
    """One or more problems in a spec, each with a location. ``str()`` is the user-facing message."""

    def __init__(self, problems: Problem | Iterable[Problem]):
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def report(self) -> str:
        """The text the command line prints: one ``error: `` line per problem, so none of them reads as the
        continuation of another."""
        return "\n".join(f"error: {p}" for p in self.problems)

    @classmethod
    def at(cls, path: Sequence, message: str, locator=None) -> SpecError:
        """An error at ``path``; ``locator`` (a :class:`~composer.spec.source.Locations`) adds file:line."""
        problem = Problem(message, tuple(path))
        if locator is not None:
            problem.file, problem.line = locator.find(tuple(path))
        return cls(problem)
