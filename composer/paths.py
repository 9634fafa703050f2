"""Every file and folder composer reads or writes is reached through this module.

A path comes from a user: a spec's ``extends``, an ensemble's members, a search space's ``base`` and
``warm_start``, ``--run-dir``, ``--storage``, ``--data``, ``-o``, ``$COMPOSER_CACHE_DIR``. The operating system
refuses many of them in ways Python raises as exceptions nobody expects from a file name: a name longer than the
file system allows (``ENAMETOOLONG``), a NUL byte (``ValueError``), a folder where a file is expected, a dangling
symbolic link, no permission; and a FIFO blocks the reader (or writer) forever. The functions here turn each
into ONE located line, a :class:`~composer.spec.SpecError` (exit 2 in the CLI), naming where the path was given
(:class:`At`: a flag, or a field of a YAML file with its file:line), the path (shortened when long) and why.

Plain Python: no torch, no pydantic; it imports only composer.spec.errors.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .spec.errors import Problem, SpecError

T = TypeVar("T")

NAME_MAX = 255    # bytes in one name (Linux, macOS; most file systems)
PATH_MAX = 4096   # bytes in a whole path handed to the kernel (Linux)


def short_name(text: str, limit: int = 120) -> str:
    """``text`` for a message: whole when short, else its start and end and its length."""
    return text if len(text) <= limit else f"{text[:60]}...{text[-40:]} ({len(text):,} characters)"


def shown(path: Any) -> str:
    """A path as messages name it: shortened when long, control characters (a NUL) escaped."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in text):  # a NUL, a lone surrogate: escaped
        text = "".join(c.encode("unicode_escape").decode("ascii") if ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF
                       else c for c in text)
    return short_name(text)


@dataclass(frozen=True)
class At:
    """Where a path was given, for the message: a command-line flag (``At("--run-dir")``), or a field of a YAML
    file (``At("base", ("base",), locations)``: the message gets that field's file:line)."""

    name: str
    field: tuple = ()
    locations: Any = None   # a composer.spec.source.Locations (file:line of every field), or None for a flag
    file: str | None = None
    """The file being read itself (its own name leads the message, as any problem in it): ``name`` then says
    what was being done (``cannot read spec file``)."""

    def error(self, path: Any, reason: str) -> SpecError:
        if self.locations is not None:
            return SpecError.at(self.field, f"{shown(path)}: {reason}", self.locations)
        if self.file is not None:
            return SpecError(Problem(f"{self.name}: {reason}" if self.name else reason, self.field, self.file))
        label = f"{self.name} " if self.name else ""
        return SpecError(Problem(f"{label}{shown(path)}: {reason}", self.field))


def reason(exc: BaseException, path: Any = None) -> str:
    """Why the operating system refused ``path``, in words (``exc``: the OSError, or the ValueError of a NUL)."""
    if isinstance(exc, ValueError):
        return "it contains a NUL character, which no file name can hold"
    code = getattr(exc, "errno", None)
    if code == errno.ENAMETOOLONG:
        return _too_long(path) or "a name in it is longer than the file system allows"
    if code == errno.ENOENT:
        return "no such file or folder"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.ENOTDIR:
        return "a part of it is a file, not a folder"
    if code == errno.EISDIR:
        return "it is a folder; give a file"
    if code == errno.ELOOP:
        return "a loop of symbolic links"
    if code == errno.EROFS:
        return "the file system is read-only"
    if code == errno.ENOSPC:
        return "no space left on the device"
    return getattr(exc, "strerror", None) or str(exc)


def _too_long(path: Any) -> str | None:
    if path is None:
        return None
    raw = os.fsencode(path)
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return f"a name in it is {len(longest):,} bytes long; the file system allows {NAME_MAX}"
    if len(raw) >= PATH_MAX:
        return f"it is {len(raw):,} bytes long; the operating system allows {PATH_MAX - 1}"
    return None


def check_name(path: Any, at: At) -> Path:
    """``path`` as a Path, refused before the operating system sees it when no file can have that name: a NUL
    character, a name longer than NAME_MAX bytes, a path of PATH_MAX bytes or more."""
    text = os.fspath(path)
    if "\x00" in text:
        raise at.error(path, reason(ValueError(), path))
    try:
        os.fsencode(text)
    except UnicodeEncodeError as exc:  # "\ud800" in YAML: a lone surrogate, which no encoding can write
        raise at.error(path, f"it contains {exc.object[exc.start:exc.end].encode('unicode_escape').decode()}, "
                             "which no file name can hold") from None
    too_long = _too_long(text)
    if too_long:
        raise at.error(path, too_long)
    return Path(text)


def guarded(at: At, path: Any, action: Callable[[], T], doing: str = "") -> T:
    """``action()`` (file-system calls on ``path``), with an OSError turned into ``at``'s located message:
    ``doing`` (``cannot write there``) then why."""
    try:
        return action()
    except SpecError:
        raise
    except OSError as exc:
        why = reason(exc, path)
        raise at.error(path, f"{doing} ({why})" if doing else why) from None


def _lstat(path: Path, at: At) -> os.stat_result | None:
    """``os.lstat``; None when nothing has that name."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise at.error(path, reason(exc, path)) from None


def _dangling(path: Path) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"it is a symbolic link to {shown(target)}, which does not exist"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def exists(path: Any, at: At) -> bool:
    """Whether anything (a file, a folder, a pipe, a dangling link) has the name ``path``; a name no file can
    have is ``at``'s error, not False."""
    return _lstat(check_name(path, at), at) is not None


def regular_file(path: Any, at: At, what: str = "file") -> Path:
    """``path``, which must name a regular file (through symbolic links) that exists: anything else (missing, a
    folder, a dangling link, a FIFO, a device) is ``at``'s error. Nothing is opened, so a FIFO cannot block."""
    path = check_name(path, at)
    if _lstat(path, at) is None:
        raise at.error(path, f"no such {what}")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise at.error(path, _dangling(path)) from None
    except OSError as exc:
        raise at.error(path, reason(exc, path)) from None
    if not stat.S_ISREG(info.st_mode):
        hint = f"; give a {what}" if stat.S_ISDIR(info.st_mode) else ""
        raise at.error(path, f"it is {_kind(info.st_mode)}, not a regular file{hint}")
    return path


def read_bytes(path: Any, at: At, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the regular file ``path`` (the caller tells whether it was longer). The file
    is opened without blocking and checked again once open, so a FIFO swapped in meanwhile is refused too."""
    path = check_name(path, at)

    def read() -> bytes:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise at.error(path, f"it is {_kind(mode)}, not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                return handle.read(limit + 1)
        finally:
            os.close(fd)

    return guarded(at, path, read, "cannot read it")


def writable_file(path: Any, at: At, example: str = "out") -> Path:
    """``path`` as a file composer may create or overwrite: its folder exists, and what has its name now (if
    anything) is a regular file: not a folder, a dangling link or a FIFO (writing to a FIFO blocks until someone
    reads it). ``example``: a file name for the hint when ``path`` is a folder."""
    path = check_name(path, at)
    info = _lstat(path, at)
    if info is not None:
        try:
            target = os.stat(path)
        except FileNotFoundError:
            raise at.error(path, _dangling(path)) from None
        except OSError as exc:
            raise at.error(path, reason(exc, path)) from None
        if stat.S_ISDIR(target.st_mode):
            raise at.error(path, f"it is a folder; give a file name, e.g. {shown(path / example)}")
        if not stat.S_ISREG(target.st_mode):
            raise at.error(path, f"it is {_kind(target.st_mode)}, not a file; give a file name")
        return path
    parent = path.parent
    try:
        is_folder = stat.S_ISDIR(os.stat(parent).st_mode)
    except FileNotFoundError:
        raise at.error(path, f"folder {shown(parent)} does not exist") from None
    except OSError as exc:
        raise at.error(path, f"folder {shown(parent)}: {reason(exc, parent)}") from None
    if not is_folder:
        raise at.error(path, f"{shown(parent)} is a file, not a folder")
    return path


def write(path: Any, at: At, action: Callable[[], T]) -> T:
    """Check ``path`` with :func:`writable_file`, then run ``action`` (which writes it); an OSError is ``at``'s
    error (``cannot write there``)."""
    path = writable_file(path, at)
    return guarded(at, path, action, "cannot write there")


PROBE_PREFIX = ".composer-write-test-"


def _not_a_folder(taken: Path, path: Path) -> str:
    """Why ``taken`` (``path`` or one of its parents) cannot be made a folder: what holds its name."""
    where = "it" if taken == path else shown(taken)
    try:
        mode = os.lstat(taken).st_mode
    except OSError:
        return f"{where} cannot be made a folder"
    if stat.S_ISLNK(mode) and not os.path.exists(taken):
        return _dangling(taken).replace("it is", f"{where} is", 1) + "; give a folder"
    kind = "a file" if stat.S_ISREG(mode) or stat.S_ISLNK(mode) else _kind(mode)
    return f"{where} is {kind}, not a folder; give a folder"


def writable_folder(path: Any, at: At) -> Path:
    """``path`` as a folder composer writes into: made (with its parents) when missing, and proven writable by
    a probe file. Each process's probe has a name of its own (``tempfile.mkstemp``: pid-independent random
    names, created exclusively), so processes starting at once on one new folder never remove each other's."""
    path = check_name(path, at)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:   # something that is no folder holds the name (or a parent's)
        raise at.error(path, _not_a_folder(Path(exc.filename or path), path)) from None
    except NotADirectoryError:
        raise at.error(path, "a part of it is a file, not a folder") from None
    except OSError as exc:
        raise at.error(path, f"cannot write there ({reason(exc, path)})") from None

    def probe() -> None:
        fd, name = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=path)
        os.close(fd)
        os.unlink(name)

    guarded(at, path, probe, "cannot write there")
    return path


def readable_folder(path: Any, at: At) -> Path:
    """``path``, which must be an existing folder composer may list (``--data``'s ImageFolder)."""
    path = check_name(path, at)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise at.error(path, _dangling(path) if os.path.islink(path) else "no such folder") from None
    except OSError as exc:
        raise at.error(path, reason(exc, path)) from None
    if not stat.S_ISDIR(info.st_mode):
        raise at.error(path, "it is not a folder")
    def list_one() -> None:
        with os.scandir(path) as entries:
            next(entries, None)

    guarded(at, path, list_one, "cannot list it")
    return path


__all__ = ["At", "check_name", "exists", "guarded", "read_bytes", "readable_folder", "reason", "regular_file",
           "short_name", "shown", "writable_file", "writable_folder", "write"]
