"""Latency on the user's own device, predicted from a table of per-part timings (``composer latency``, the search's
``--max-latency``).

MACs do not say how fast a model runs (a depthwise 7x7 conv has few MACs and many memory accesses; gnConv's
order 5 costs 1.07x the MACs of order 2 and 1.5x the time). composer knows every part of every candidate from its
Plan (stem, each downsampling, each block with its mixer config and context, stage norms, head), so it times
each *distinct* part once on this device, alone, at the batch size asked for, and predicts a whole network as
the sum of its parts. A part is keyed by what determines its module and its input (kind, macro, shape, mixer
config, channel mixer, norm, scales, the mixer's own ``latency_key``) and by whether its input arrives as a
permuted view (a block whose layout differs from the tensor it gets receives ``x.permute(...)``, as in the model;
how each part lays out its output in memory is recorded when it is timed, and the next part's input follows it),
which is how layout changes enter the prediction. Timings live in a table on disk, one per device fingerprint
(CPU model or GPU name, threads, torch version, dtype, batch size, memory format, CPU allocator, whether
denormals are flushed to zero): later runs, other spaces and other search workers on the machine reuse it, and a
spec with one new part times only that part.

Timing a part: ``torch.inference_mode``, eval mode, >= 100 ms of warm-up calls, then ``2 x repeats`` single calls,
each made as inside a network (EVICT_MB of other memory written first, so its weights and scratch are no longer
cached, then its input written, as the previous part leaves it), the fastest of them; a part is timed in 2-5
sessions with freshly built modules, until the two fastest agree within 5%, and the fastest counts. ``measure``
times a whole model in ``repeats`` runs of enough calls to last >= 2 ms, in sessions alike. On CUDA, CUDA events
around the calls.

A table must not trust a timing taken on a busy machine: each row records the conditions it was timed under (load
average, the CPU time other processes took, steal), a part timed while others kept >= SUSPECT_OTHERS cores busy
is *suspect*, and ``Predictor.self_check`` sets one whole-model measurement beside a prediction (new table,
unchecked network, or a check that disagreed), re-timing the suspect parts first when they disagree.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import paths

# 2: Swin's odd blocks timed with their shift (1 timed them as even blocks); 3: parts timed cold; 4: each part's input
# laid out in memory as the part before actually leaves it (3 assumed each part's own layout: wrong after
# LayerNorms computed through a permute, as U-DWConv's, whose downsamplings ran 2.8x their table entry); 5: parts
# built as compose builds them, convolutions specialized for their map (nn/specialize.py: a 7x7 depthwise conv on
# a 1x1 map ran ~80x its specialized time); 6: convolutions whose live kernel covers their map run as a matrix
# product (1x1 convs on 1x1 maps: ~3x faster)
TABLE_VERSION = 6
MIN_RUN_MS = 2.0   # a timed run of a whole model repeats the call until it lasts this long (timer resolution)
EVICT_MB = 64      # before each timed call of a part, this much other memory is written (its weights go cold)
PART_CALLS = 2     # a part is timed in PART_CALLS x repeats single cold calls per session
WARMUP_MS = 100.0  # untimed calls first, at least this long (FFT plans, allocator, caches)
SESSIONS = (2, 5)  # a part is timed in 2 to 5 sessions, each with a freshly built module, until its two fastest
AGREE = 0.05       # sessions agree within 5%; the fastest counts
# A part timed while other processes kept >= SUSPECT_OTHERS cores busy on average (or the hypervisor stole that
# much) is *suspect*: half a core, against 1.56-1.61 cores measured during timings on this project's 2-core machine
# while other engineers' work (load average 10-20) or eight memory-bound processes ran (docs/latency.md). A quiet
# machine leaves well under it (its background daemons); one busy process beside a one-thread timing, over it.
SUSPECT_OTHERS = 0.5
REPEATABILITY = 0.10  # the self-check's tolerance at least: a whole model measured twice here agrees within +-10%


# -- device fingerprint and the table on disk ------------------------------------------------------------------

def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@dataclass(frozen=True)
class Fingerprint:
    """What a timing depends on beyond the part itself: a table is valid only for an equal fingerprint."""

    device: str          # cpu | cuda
    name: str            # CPU model or GPU name
    threads: int
    torch: str
    dtype: str
    batch_size: int
    memory_format: str   # contiguous | channels_last
    allocator: str = "default"  # CPU: glibc's malloc as tuned by MALLOC_* variables, or a preloaded allocator
    flush_denormal: bool = False  # CPU: denormals flushed to zero (torch.set_flush_denormal(True))

    @property
    def key(self) -> str:
        fields = asdict(self)
        if not self.flush_denormal:  # tables timed before this field existed were timed with it off: still valid
            del fields["flush_denormal"]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha1(f"{TABLE_VERSION}:{text}".encode()).hexdigest()[:16]

    def describe(self) -> str:
        where = f"{self.name}, {self.threads} threads" if self.device == "cpu" else self.name
        allocator = "" if self.allocator == "default" else f", allocator {self.allocator}"
        flush = ", denormals flushed" if self.flush_denormal else ""
        return (f"{self.device} ({where}), batch {self.batch_size}, {self.dtype}, {self.memory_format}, "
                f"torch {self.torch}{allocator}{flush}")


# glibc's malloc hands large freed blocks back to the OS (and faults them in again on the next forward) unless
# told otherwise: a convformer_s18 forward at batch 8 on one core took 696-716 ms with the defaults and 640 ms with
# MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ raised, and a preloaded jemalloc or tcmalloc differs again, so
# timings taken under one allocator are not mixed with another's.
# THP_MEM_ALLOC_ENABLE=1 makes torch's own CPU allocator ask for transparent huge pages for blocks of >= 2 MB.
_ALLOCATOR_VARIABLES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                        "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "THP_MEM_ALLOC_ENABLE")


# What keep_freed_memory() sets, through mallopt(3): the values of MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_
# and MALLOC_TOP_PAD_ that made the prediction hold (docs/latency.md, "The allocator"), within mallopt's int.
# Some glibc releases refuse an mmap threshold over 32 MiB (HEAP_MAX_SIZE / 2): there, blocks over 32 MiB stay mmapped.
KEEP_FREED_MEMORY = {"M_MMAP_THRESHOLD": (-3, (1_000_000_000, 2**25)), "M_TRIM_THRESHOLD": (-1, (2**31 - 1,)),
                     "M_TOP_PAD": (-2, (1_000_000_000,))}
_kept_freed_memory = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc, in this process, to keep freed memory for reuse instead of handing it back to the OS
    (no mmap for blocks under 1 GB, no trimming of the heap under 2 GB): a forward then stops faulting its big
    tensors in afresh on every call, runs faster, and runs as its parts timed alone do. Like setting
    ``MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=1000000000`` before the
    process starts, but from inside it (``composer latency|search|sweep --keep-freed-memory``). Latency is then
    timed into a table of its own (the fingerprint's allocator). Returns False, changing nothing, where the C
    library is not glibc (musl, macOS, Windows) or a preloaded allocator (jemalloc, tcmalloc) replaces it."""
    global _kept_freed_memory
    if _kept_freed_memory:
        return True
    if _preloaded_allocators() or platform.libc_ver()[0] != "glibc":  # musl's mallopt, say, does nothing
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for param, values in KEEP_FREED_MEMORY.values():
        if not any(mallopt(param, value) == 1 for value in values):
            return False
    _kept_freed_memory = True
    return True


def _preloaded_allocators() -> list[str]:
    return [Path(p).name for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split()
            if any(a in Path(p).name for a in ("jemalloc", "tcmalloc", "mimalloc"))]


def _allocator() -> str:
    tuned = [f"{v}={os.environ[v]}" for v in _ALLOCATOR_VARIABLES if os.environ.get(v)]
    kept = ["keep-freed-memory"] if _kept_freed_memory else []
    return " ".join(_preloaded_allocators() + tuned + kept) or "default"


# A kernel that meets denormal numbers (tiny values in a weight, an activation or a partial sum) can run several
# times slower on x86 unless the CPU flushes them to zero: caformer_b36's stem took 2.1-2.4 ms in some builds and
# 9.2-11.5 ms in others (two threads), and 2.0-2.7 ms in 12 of 12 builds with torch.set_flush_denormal(True). The
# setting is the process's (`composer latency|search|sweep --flush-denormal` turn it on); composer never changes
# it behind the user's back, and timings taken with it on go to another table.
def flush_denormal() -> bool:
    """Whether this process flushes denormals to zero on the CPU (torch has a setter but no getter: probed)."""
    import torch

    return (torch.full((1,), 1e-39) * 1.0).item() == 0.0


DTYPES = ("float32", "float16", "bfloat16")
MEMORY_FORMATS = ("contiguous", "channels_last")


def fingerprint(device: str = "cpu", batch_size: int = 1, threads: int | None = None, dtype: str = "float32",
                memory_format: str = "contiguous") -> Fingerprint:
    import torch

    from .profile import resolve_device

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"--threads must be a positive integer, got {threads!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
    dev = resolve_device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        threads = threads or torch.get_num_threads()
    else:
        name = _cpu_name()
        threads = threads or torch.get_num_threads()
    return Fingerprint(dev.type if dev.index is None else str(dev), name, threads, torch.__version__, dtype,
                       batch_size, memory_format, _allocator() if dev.type == "cpu" else "default",
                       dev.type == "cpu" and flush_denormal())


def cache_dir() -> Path:
    """``$COMPOSER_CACHE_DIR``, else ``$XDG_CACHE_HOME/composer``, else ``~/.cache/composer``."""
    if os.environ.get("COMPOSER_CACHE_DIR"):
        return Path(os.environ["COMPOSER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "composer"


MAX_TABLE_BYTES = 64 << 20   # a table holds a line per timed part: thousands of lines, well below this


def _table_at() -> paths.At:
    return paths.At("latency table (in $COMPOSER_CACHE_DIR, else $XDG_CACHE_HOME/composer or ~/.cache/composer)")


class LatencyTable:
    """Milliseconds per part key for one fingerprint, in ``cache_dir()/latency/<fingerprint key>.jsonl``: a
    header line, then one line per timed part, appended under a file lock (search workers share it). The first
    timing of a key wins, so a prediction never changes once its parts are in the table, unless the part is
    *re-timed* (``--retime``, or the self-check): a row marked ``retimed`` replaces the key's earlier one. Each
    row records the conditions it was timed under (``cond``; rows from before have none and are not suspect), and
    the self-check appends its findings as ``check`` rows (tables written before are read as they were)."""

    def __init__(self, fp: Fingerprint, folder: Path | None = None):
        self.fingerprint = fp
        self.path = (folder or cache_dir() / "latency") / f"{fp.key}.jsonl"
        self._clear()
        self._read()

    def _clear(self) -> None:
        self.rows: dict[str, float] = {}
        self.what: dict[str, str] = {}
        self.out: dict[str, str | None] = {}  # the layout the part's output is contiguous in (the next part's input)
        self.conditions: dict[str, Conditions | None] = {}
        self.checks: dict[str, dict] = {}  # the last self-check of each network (by its parts), as recorded
        self.created: float | None = None

    def _read(self) -> None:
        at = _table_at()
        if not paths.exists(self.path, at):
            return
        raw = paths.read_bytes(self.path, at, MAX_TABLE_BYTES)
        lines = raw[:MAX_TABLE_BYTES].decode("utf-8", errors="replace").splitlines()
        with contextlib.suppress(ValueError, TypeError, AttributeError, IndexError):
            self.created = float(json.loads(lines[0]).get("created"))
        for line in lines[1:]:
            try:
                row = json.loads(line)
                if isinstance(row, dict) and "check" in row:
                    self.checks[str(row["check"])] = row
                    continue
                key, ms = row["key"], float(row["ms"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a killed writer: that part is timed again
            if (key not in self.rows or row.get("retimed")) and math.isfinite(ms) and ms >= 0:
                self.rows[key] = ms
                self.what[key] = row.get("what", "")
                self.out[key] = row.get("out")
                self.conditions[key] = Conditions.from_row(row.get("cond"))

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: str) -> float | None:
        return self.rows.get(key)

    def suspect(self, key: str) -> bool:
        """Whether the part was timed while the machine was busy (SUSPECT_OTHERS)."""
        cond = self.conditions.get(key)
        return cond is not None and cond.suspect

    def add(self, key: str, ms: float, what: str, out: str | None = None, cond: Conditions | None = None,
            retimed: bool = False) -> float:
        """Record a timing, the layout the part's output is contiguous in and the conditions it was timed under
        (unless another process recorded this key first and this is no re-timing: then that one is returned)."""
        row = {"key": key, "ms": ms, "what": what, "out": out}
        if cond is not None:
            row["cond"] = cond.as_row()
        if retimed:
            row["retimed"] = True
        with self._appending() as append:
            if key in self.rows and not retimed:
                return self.rows[key]
            append(row)
        self.rows[key], self.what[key], self.out[key], self.conditions[key] = ms, what, out, cond
        return ms

    def add_check(self, network: str, row: dict) -> None:
        """Record a self-check of the network whose parts hash to ``network``."""
        with self._appending() as append:
            append({"check": network, **row})
        self.checks[network] = {"check": network, **row}

    @contextlib.contextmanager
    def _appending(self) -> Iterator[Any]:
        """Under the table's lock, after reading what other workers added meanwhile: ``append(row)``. The folder,
        the lock and the table go through composer.paths (no FIFO an append would block on, no folder in the
        table's place); an OSError on the way is one located line."""
        at = _table_at()
        paths.writable_folder(self.path.parent, at)
        lock = paths.writable_file(self.path.with_suffix(".lock"), at)
        paths.writable_file(self.path, at)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(_locked(lock))
            except OSError as exc:
                raise at.error(self.path, f"cannot write there ({paths.reason(exc, self.path)})") from None
            self._clear()
            self._read()
            new = not self.path.exists() or self.path.stat().st_size == 0
            try:
                handle = open(self.path, "a")
            except OSError as exc:
                raise at.error(self.path, f"cannot write there ({paths.reason(exc, self.path)})") from None
            with handle:
                if new:
                    self.created = time.time()
                    handle.write(json.dumps({"fingerprint": asdict(self.fingerprint), "version": TABLE_VERSION,
                                             "created": self.created}) + "\n")

                def append(row: dict) -> None:
                    handle.write(json.dumps(row) + "\n")

                yield append


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: appends of one short line are still whole in practice
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the conditions a timing was taken under ---------------------------------------------------------------------

def _cpu_ticks() -> tuple[float, float, float] | None:
    """(busy ticks of all CPUs, steal ticks, this process's own ticks) from /proc, or None where unreadable."""
    try:
        with open("/proc/stat") as handle:
            fields = [float(v) for v in handle.readline().split()[1:]]
        with open("/proc/self/stat") as handle:
            own = handle.read().rsplit(")", 1)[1].split()  # the name may hold spaces; fields from the state on
    except (OSError, ValueError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    steal = fields[7] if len(fields) > 7 else 0.0
    return busy, steal, float(own[11]) + float(own[12])  # utime, stime (fields 14 and 15 of stat(5))


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


@dataclass
class Conditions:
    """What the machine was doing while something was timed: the 1-minute load average at the start, the CPU time
    other processes took (cores, on average over the timing), the CPU time the hypervisor stole (cores)."""

    load: float | None = None
    others: float | None = None
    steal: float | None = None
    seconds: float = 0.0

    @property
    def suspect(self) -> bool:
        if self.others is not None:
            return self.others >= SUSPECT_OTHERS or (self.steal or 0.0) >= SUSPECT_OTHERS
        # no /proc (macOS): the load average, which counts this process too, over the machine's cores
        return self.load is not None and self.load >= (os.cpu_count() or 1) + SUSPECT_OTHERS

    def describe(self) -> str:
        parts = [f"other processes {self.others:.2f} cores"] if self.others is not None else []
        if self.steal:
            parts.append(f"steal {self.steal:.2f} cores")
        if self.load is not None:
            parts.append(f"load average {self.load:.2f}")
        return ", ".join(parts) or "conditions unknown"

    def as_row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None} | {"suspect": self.suspect}

    @classmethod
    def from_row(cls, row: Any) -> Conditions | None:
        if not isinstance(row, dict):
            return None  # timed before conditions were recorded
        try:
            return cls(*(None if row.get(k) is None else float(row[k]) for k in ("load", "others", "steal")),
                       float(row.get("seconds", 0.0)))
        except (TypeError, ValueError):
            return None


class _Watch:
    """``with _Watch() as w: ...`` then ``w.conditions``: the conditions over the block."""

    def __enter__(self) -> _Watch:
        self.load, self.start, self.ticks = _load_average(), time.perf_counter(), _cpu_ticks()
        return self

    def __exit__(self, *exc) -> None:
        seconds = time.perf_counter() - self.start
        after = _cpu_ticks()
        others = steal = None
        if self.ticks is not None and after is not None and seconds > 0:
            hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
            others = max(0.0, (after[0] - self.ticks[0]) - (after[2] - self.ticks[2])) / hz / seconds
            steal = max(0.0, after[1] - self.ticks[1]) / hz / seconds
            others, steal = round(others, 3), round(steal, 3)
        self.conditions = Conditions(self.load, others, steal, round(seconds, 3))


def quiet_now(seconds: float = 0.5) -> Conditions:
    """The machine's conditions over the next ``seconds`` (this process idle meanwhile)."""
    with _Watch() as watch:
        time.sleep(seconds)
    return watch.conditions


# -- the parts of a spec ---------------------------------------------------------------------------------------

@dataclass
class PartLatency:
    name: str            # module path: stem, stages.2.blocks.0, head
    stage: int | None
    what: str
    key: str
    ms: float = 0.0
    measured_now: bool = False
    permuted: bool = False  # its input was timed as a permuted view (as the part before hands it on)
    suspect: bool = False   # timed while the machine was busy


@dataclass
class _PartToTime:
    name: str
    stage: int | None
    what: str
    description: dict
    part: Any
    layout: str          # the layout the part takes
    permuted: bool = False  # its input arrives as a permuted view of the other layout (set by Predictor.predict)


@dataclass
class _OwnBlock:
    """A block Part as the costs-only walk shares it, whose ``build`` makes block ``index``'s own module."""

    shared: Any
    macro: Any
    spec: Any
    stage: int
    index: int
    mixer: Any

    @property
    def in_shape(self):
        return self.shared.in_shape

    def build(self):
        return self.macro.block(self.spec, self.stage, self.index, self.shared.in_shape, self.mixer, 0.0).build()


def _dump(config) -> Any:
    return None if config is None else config.model_dump(mode="json")


def _parts(spec) -> list[_PartToTime]:
    from .macro import MACROS
    from .mixers.base import MixerContext
    from .perstage import pick
    from .plan import walk

    w = walk(spec, costs_only=True)
    macro = MACROS[spec.macro]
    out: list[_PartToTime] = []
    conventions = {"stem_norm": _dump(spec.stem_norm), "downsample_norm": _dump(spec.downsample_norm),
                   "norm": _dump(spec.norm), "in_chans": spec.in_chans}
    out.append(_PartToTime("stem", None, "stem", {"kind": "stem", "macro": spec.macro,
                                                    "in": w.stem.in_shape, "out": w.stem.out_shape, **conventions},
                           w.stem, "channels_first", False))
    # Whether a part's input arrives as a permuted view is not known here: it depends on how the part before lays
    # out its output in memory (Predictor.predict follows the chain, from what the table recorded of each part).
    for stage in w.stages:
        i = stage.index
        for name, part, extra in stage.members:
            if part.kind == "block":
                mixer = part.info["mixer"]
                j = int(name.rsplit(".", 1)[1])
                ctx = MixerContext.at(spec, i, j, part.in_shape)
                layout = mixer.layout
                description = {"kind": "block", "macro": spec.macro, "shape": part.in_shape, "layout": layout,
                               "mixer": _dump(mixer), "mixer_at": mixer.latency_key(ctx),
                               "channel": _dump(spec.channel_mixer.at_stage(i)), "norm": _dump(spec.norm),
                               "layer_scale": pick(spec.layer_scale, i), "res_scale": pick(spec.res_scale, i)}
                what = f"{extra.get('symbol', mixer.type)} ({mixer.type}) at {'x'.join(map(str, part.in_shape))}"
                # A costs-only walk hands equal-cost blocks one shared Part, built for the stage's first such block;
                # the module timed must be this block's own (Swin's odd blocks roll and mask: same MACs, 2.3x the
                # time), so it is built from its own context.
                part = _OwnBlock(part, macro, spec, i, j, mixer)
            else:  # downsample or stage norm: channels-first
                layout = "channels_first"
                description = {"kind": part.kind, "macro": spec.macro, "stage": i, "in": part.in_shape,
                               "out": part.out_shape, **conventions}
                if spec.downsample_ratio is not None:  # only then: the other macros' table keys stay as they were
                    description["downsample_ratio"] = pick(spec.downsample_ratio, i)
                what = f"{part.kind} {'x'.join(map(str, part.in_shape))}"
            out.append(_PartToTime(name, i, what, description, part, layout))
    head = w.head
    out.append(_PartToTime("head", None, "head", {"kind": "head", "macro": spec.macro, "in": head.in_shape,
                                                    "num_classes": spec.num_classes, "head": _dump(spec.head)},
                           head, "channels_first"))
    return out


def _stored_layout(y, layout: str) -> str | None:
    """The layout a part's output ``y`` (a map in the part's own ``layout``) is contiguous in: its own, the other
    one (a permuted view: a LayerNorm computed as permute -> norm -> permute hands one on), or None (not a dense
    4-D map: the head's logits)."""
    import torch

    from .nn.layers import to_layout

    if not isinstance(y, torch.Tensor) or y.dim() != 4:
        return None
    if y.is_contiguous():
        return layout
    other = "channels_last" if layout == "channels_first" else "channels_first"
    return other if to_layout(y, layout, other).is_contiguous() else None


def _key(description: dict) -> str:
    return hashlib.sha1(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


# -- timing ----------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _warm_up(fn, x, device, warmup_ms: float = WARMUP_MS) -> float:
    """Untimed calls of ``fn(x)`` for >= 3 calls and >= ``warmup_ms`` (FFT plans, allocator, caches); ms per call."""
    from .profile import _sync

    start, calls = time.perf_counter(), 0
    while calls < 3 or (time.perf_counter() - start) * 1e3 < warmup_ms:
        fn(x)
        calls += 1
        _sync(device)
    return (time.perf_counter() - start) * 1e3 / calls


def _timed_ms(fn, x, device, number: int) -> float:
    """ms per call of ``number`` calls of ``fn(x)`` in a row: CUDA events on CUDA (what was queued before
    ``begin`` stays outside the span, with no host sync inside it), the wall clock on CPU."""
    import torch

    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(number):
            fn(x)
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) / number
    begin = time.perf_counter()
    for _ in range(number):
        fn(x)
    return (time.perf_counter() - begin) * 1e3 / number


def _time_ms(fn, x, device, repeats: int) -> float:
    """The fastest of ``repeats`` timed runs of ``fn(x)`` (each run repeats the call until it lasts MIN_RUN_MS), in
    ms per call, after warming up for >= 3 calls and >= WARMUP_MS. The fastest, not the median: on a shared
    machine noise only ever adds time, and the minimum is the figure that repeats (the median of a 20 ms FFT
    block varies by 50% from one minute to the next here, its minimum by a few %)."""
    import torch

    with torch.inference_mode():
        once = _warm_up(fn, x, device)
        number = max(1, min(1000, math.ceil(MIN_RUN_MS / max(once, 1e-3))))
        return min(_timed_ms(fn, x, device, number) for _ in range(repeats))


def _time_cold_ms(fn, x, device, repeats: int, evict) -> float:
    """The fastest of ``repeats`` single calls of ``fn(x)``, each made as inside a network: after ``evict`` (a
    buffer of EVICT_MB) is written, which pushes the part's weights and scratch out of the caches as the rest of a
    model's forward does, and after ``x`` is written, as the previous part leaves it. Warm-up first, as
    ``_time_ms``. Timed hot in a loop instead, the parts of six presets summed to 0.83-1.03x the measured model
    at batch 1 (one thread; the benchmark's samples 7-9% low on average); timed after 64 MB of other writes,
    0.91-1.10x."""
    import torch

    source = x.clone()
    with torch.inference_mode():
        _warm_up(fn, x, device)
        times = []
        for i in range(repeats):
            evict.fill_(float(i))
            x.copy_(source)
            times.append(_timed_ms(fn, x, device, 1))
    return min(times)


def _fastest(session) -> float:
    """``session(i)`` (ms) for i = 0, 1, ... until the two fastest agree within AGREE (at most SESSIONS[1]); the
    fastest. On this project's machines one freshly built FFT block in two runs 1.5x slower than the others
    (where its buffers land), so one session may be slow; two that agree are not both an accident."""
    return min(_sessions(session))


def _sessions(session) -> list[float]:
    """The session timings ``_fastest`` takes its minimum of."""
    timings: list[float] = []
    while len(timings) < SESSIONS[1]:
        timings.append(session(len(timings)))
        if len(timings) >= SESSIONS[0]:
            first, second = sorted(timings)[:2]
            if second <= first * (1 + AGREE):
                break
    return timings


def _prepare(module, fp: Fingerprint, device):
    import torch

    module = module.eval().to(device=device, dtype=getattr(torch, fp.dtype))
    if fp.memory_format == "channels_last":
        module = module.to(memory_format=torch.channels_last)
    return module


def _input(shape, layout: str, permuted: bool, fp: Fingerprint, device):
    """A (B, C, H, W) or (B, H, W, C) input as the model hands it to the part: contiguous in its own layout, or a
    permuted view of the other layout's contiguous tensor."""
    import torch

    from .nn.layers import to_layout

    c, h, w = shape
    b = fp.batch_size
    stored = layout if not permuted else "channels_last" if layout == "channels_first" else "channels_first"
    base = torch.randn((b, c, h, w) if stored == "channels_first" else (b, h, w, c), dtype=getattr(torch, fp.dtype),
                       device=device)
    # permuted as the model's stages permute; a channels_last memory format model's input is such a view too
    return to_layout(base, stored, layout)


# -- prediction ------------------------------------------------------------------------------------------------

@dataclass
class Prediction:
    spec_name: str
    fingerprint: Fingerprint
    parts: list[PartLatency]
    table_path: Path
    measured_now: int = 0
    measure_seconds: float = 0.0
    members: list[Prediction] = field(default_factory=list)

    @property
    def ms(self) -> float:
        if self.members:
            return sum(m.ms for m in self.members)
        return sum(p.ms for p in self.parts)

    @property
    def suspect(self) -> list[PartLatency]:
        """The parts (distinct keys) of this prediction timed while the machine was busy."""
        seen: dict[str, PartLatency] = {}
        for p in [q for m in self.members for q in m.parts] + self.parts:
            if p.suspect:
                seen.setdefault(p.key, p)
        return list(seen.values())

    @property
    def network(self) -> str:
        """What identifies the network to the self-check: its parts' keys in order."""
        keys = [q.key for m in self.members for q in m.parts] + [p.key for p in self.parts]
        return _key(keys)[:16]

    def by_stage(self) -> list[tuple[str, float]]:
        """(stem | stage i | head, ms) in order."""
        rows: dict[str, float] = {}
        for p in self.parts:
            label = p.name if p.stage is None else f"stage {p.stage}"
            rows[label] = rows.get(label, 0.0) + p.ms
        return list(rows.items())


class Predictor:
    """Predicts latency on one device fingerprint; times the parts its table lacks (``measure_missing``)."""

    def __init__(self, device: str = "cpu", batch_size: int = 1, threads: int | None = None, dtype: str = "float32",
                 memory_format: str = "contiguous", repeats: int = 5, folder: Path | None = None):
        self.fingerprint = fingerprint(device, batch_size, threads, dtype, memory_format)
        self.threads = self.fingerprint.threads
        self.repeats = repeats
        self.table = LatencyTable(self.fingerprint, folder)
        self.measured = 0
        self.measure_seconds = 0.0
        self._evict = None  # EVICT_MB on the device, made at the first miss
        self._retimed: set[str] = set()  # keys re-timed by this Predictor (once each)
        self._checked = False  # checked_predict's self-check, once per process
        self._noted = False  # checked_predict's note on suspect parts, once per process

    def predict(self, source, measure_missing: bool = True, retime: set[str] | None = None) -> Prediction:
        """The prediction from the table, timing the parts it lacks (unless ``measure_missing`` is False: then a
        KeyError) and re-timing those whose keys are in ``retime`` (each once per Predictor: ``_retimed``)."""
        from .spec import EnsembleSpec, load_spec

        spec = load_spec(source)
        if isinstance(spec, EnsembleSpec):
            members = [self.predict(m, measure_missing, retime) for m in spec.members]
            return Prediction(spec.name or "ensemble", self.fingerprint, [], self.table.path,
                              sum(m.measured_now for m in members), sum(m.measure_seconds for m in members),
                              members)
        before, t0 = self.measured, time.perf_counter()
        parts = []
        # the layout the tensor between two parts is contiguous in: the input's, then what each part's output was
        # when it was timed (a part whose layout differs gets a permuted view, as inside the model)
        stored = "channels_last" if self.fingerprint.memory_format == "channels_last" else "channels_first"
        for item in _parts(spec):
            item.permuted = stored != item.layout
            key = _key({**item.description, "permuted": item.permuted})
            ms = self.table.get(key)
            now = False
            if ms is None:
                if not measure_missing:
                    raise KeyError(f"{item.name} ({item.what}) is not in the latency table {self.table.path}")
                timed, out, cond = self._time_part(item)
                ms = self.table.add(key, timed, item.what, out, cond)
                self.measured += 1
                now = True
            elif retime is not None and key in retime and key not in self._retimed:
                timed, out, cond = self._time_part(item)
                ms = self.table.add(key, timed, item.what, out, cond, retimed=True)
                self._retimed.add(key)
                self.measured += 1
                now = True
            stored = self.table.out.get(key) or item.layout
            parts.append(PartLatency(item.name, item.stage, item.what, key, ms, now, item.permuted,
                                     self.table.suspect(key)))
        return Prediction(spec.name or "spec", self.fingerprint, parts, self.table.path, self.measured - before,
                          time.perf_counter() - t0 if self.measured > before else 0.0)

    def retime(self, source) -> Prediction:
        """Time every part of ``source`` again (``composer latency SPEC --retime``): the new timings replace the
        table's, for every later prediction too."""
        keys = {p.key for m in (lambda q: q.members or [q])(self.predict(source)) for p in m.parts}
        self._retimed -= keys
        return self.predict(source, retime=keys)

    def self_check(self, source, prediction: Prediction | None = None, force: bool = False,
                   repeats: int = 7) -> SelfCheck | None:
        """One whole-model measurement beside the prediction, when the table is new for this network (parts timed
        now), it was never checked, its last check disagreed, or ``force``; None when none is needed (or the
        spec is an ensemble). When prediction and measurement disagree by more than the machine's repeatability
        (REPEATABILITY, or the spread of the measurement's own sessions if larger), the network's suspect parts
        are re-timed and, if it still disagrees, the rest of its parts, quiet permitting (not while other processes
        keep the machine busy during the measurement itself); the check is recorded in the table."""
        prediction = prediction or self.predict(source)
        if prediction.members:
            return None
        last = self.table.checks.get(prediction.network)
        # a network whose last check agreed is vouched for, suspect parts and all
        if not (force or prediction.measured_now > 0 or last is None or not last.get("agrees", False)):
            return None
        fp = self.fingerprint
        with _Watch() as watch:
            sessions = measure_sessions(source, fp.device, fp.batch_size, self.threads, repeats, fp.dtype,
                                        fp.memory_format)
        measured = min(sessions)
        spread = sorted(sessions)[1] / measured - 1 if len(sessions) > 1 else 0.0
        check = SelfCheck(prediction.ms, measured, max(REPEATABILITY, spread), watch.conditions,
                          len(prediction.suspect), prediction)
        for which in ("suspect", "all"):
            if check.agrees or check.conditions.suspect:  # quiet permitting: busy now, a re-timing is no better
                break
            keys = {p.key for p in check.prediction.parts if which == "all" or p.suspect} - self._retimed
            if not keys:
                continue
            before = self.measured
            check.prediction = self.predict(source, retime=keys)
            check.retimed += self.measured - before
        self.table.add_check(prediction.network, {
            "spec": prediction.spec_name, "at": round(time.time(), 1), "predicted": round(check.first_ms, 4),
            "measured": round(measured, 4), "final": round(check.prediction.ms, 4),
            "error": round(check.error, 4), "tolerance": round(check.tolerance, 4), "agrees": check.agrees,
            "retimed": check.retimed, "cond": check.conditions.as_row()})
        return check

    def checked_predict(self, source) -> Prediction:
        """For a search's latency budget: the first prediction of this process runs the self-check (once per
        table, said in one line on stderr; a search calls it first with its space's base, before its first trial);
        later ones are plain. Says once (stderr) when a prediction rests on
        suspect parts."""
        check = None
        if not self._checked:
            self._checked = True
            check = self.self_check(source)
            if check is not None:
                print(f"latency table {self.table.path.name}: {check.describe()}", file=sys.stderr)
        prediction = check.prediction if check is not None else self.predict(source)
        if prediction.suspect and not self._noted:
            self._noted = True
            print(f"note: the latency budget rests on {len(prediction.suspect)} parts timed while the machine was "
                  "busy (suspect: composer latency --tables lists them, composer latency SPEC --retime mends them)",
                  file=sys.stderr)
        return prediction

    def _time_part(self, item: _PartToTime) -> tuple[float, str | None, Conditions]:
        """(ms, the layout its output is contiguous in, the conditions it was timed under)."""
        import torch

        from .nn.specialize import build_for_its_map
        from .profile import resolve_device

        device = resolve_device(self.fingerprint.device)
        t0 = time.perf_counter()
        if self._evict is None:
            self._evict = torch.empty(EVICT_MB * 2**20 // 4, dtype=torch.float32, device=device)
        out: list[str | None] = []

        def session(i: int) -> float:
            torch.manual_seed(i)
            module = _prepare(build_for_its_map(item.part), self.fingerprint, device)
            x = _input(item.part.in_shape, item.layout, item.permuted, self.fingerprint, device)
            if not out:
                with torch.inference_mode():
                    out.append(_stored_layout(module(x), item.layout))
            return _time_cold_ms(module, x, device, PART_CALLS * self.repeats, self._evict)

        with _threads(self.threads), _Watch() as watch:
            ms = _fastest(session)
        self.measure_seconds += time.perf_counter() - t0
        return ms, out[0], watch.conditions


@dataclass
class SelfCheck:
    """A prediction set beside one whole-model measurement (``Predictor.self_check``)."""

    first_ms: float            # what the table predicted before the check
    measured: float
    tolerance: float           # the machine's repeatability: REPEATABILITY, or the measurement's own spread
    conditions: Conditions     # while the model was measured
    suspect_before: int
    prediction: Prediction     # after any re-timing
    retimed: int = 0

    @property
    def error(self) -> float:
        return self.prediction.ms / self.measured - 1

    @property
    def agrees(self) -> bool:
        return abs(self.error) <= self.tolerance

    def describe(self) -> str:
        """One line."""
        ratio = self.prediction.ms / self.measured
        busy = f"; measured while the machine was busy ({self.conditions.describe()})" \
            if self.conditions.suspect else ""
        if self.retimed == 0:
            if not self.agrees and self.conditions.suspect:
                verdict, busy = f"DISAGREES, not re-timed: the machine is busy now ({self.conditions.describe()})", ""
            else:
                verdict = "agrees" if self.agrees else "DISAGREES (nothing left to re-time)"
            return (f"self-check: predicted {self.prediction.ms:.2f} ms, measured {self.measured:.2f} ms "
                    f"({ratio:.2f}x, this machine repeats within +-{self.tolerance:.0%}): {verdict}{busy}")
        first = f"the table predicted {self.first_ms:.2f} ms ({self.first_ms / self.measured:.2f}x the measured " \
                f"{self.measured:.2f} ms, beyond this machine's +-{self.tolerance:.0%})"
        if self.agrees:
            return f"self-check: {first}; re-timed {self.retimed} parts, now {ratio:.2f}x: agrees{busy}"
        return (f"self-check: {first}; re-timed {self.retimed} parts and it still DISAGREES ({ratio:.2f}x): this "
                f"prediction is not sound on this machine now{busy}")


_PREDICTORS: dict[tuple, Predictor] = {}


def predictor(device: str = "cpu", batch_size: int = 1, threads: int | None = None, dtype: str = "float32",
              memory_format: str = "contiguous") -> Predictor:
    """A shared Predictor per settings (its table read once per process)."""
    fp = fingerprint(device, batch_size, threads, dtype, memory_format)
    key = (fp, str(cache_dir()))
    if key not in _PREDICTORS:
        _PREDICTORS[key] = Predictor(device, batch_size, threads, dtype, memory_format)
    return _PREDICTORS[key]


def predict(spec, device: str = "cpu", batch_size: int = 1, threads: int | None = None) -> float:
    """Predicted ms of one forward of ``spec``'s model (any SpecLike) at ``batch_size`` on ``device``, from this
    device's latency table (parts it lacks are timed now and added)."""
    return predictor(device, batch_size, threads).predict(spec).ms


def measure(spec, device: str = "cpu", batch_size: int = 1, threads: int | None = None, repeats: int = 7,
            dtype: str = "float32", memory_format: str = "contiguous") -> float:
    """Measured ms of one forward of the whole built model, timed as the parts are: the fastest of ``repeats`` runs
    after >= 100 ms of warm-up, in 2-5 sessions with freshly built models until two agree."""
    return min(measure_sessions(spec, device, batch_size, threads, repeats, dtype, memory_format))


def measure_sessions(spec, device: str = "cpu", batch_size: int = 1, threads: int | None = None, repeats: int = 7,
                     dtype: str = "float32", memory_format: str = "contiguous") -> list[float]:
    """``measure``'s session timings (ms), whose spread is the machine's repeatability at that moment."""
    import torch

    from .composed import compose
    from .profile import resolve_device
    from .spec import load_spec

    fp = fingerprint(device, batch_size, threads, dtype, memory_format)
    dev = resolve_device(device)
    spec = load_spec(spec)
    def session(i: int) -> float:  # like the parts: freshly built each time
        torch.manual_seed(i)
        model = _prepare(compose(spec), fp, dev)
        x = _input((spec.in_chans, spec.input_size, spec.input_size), "channels_first",
                   fp.memory_format == "channels_last", fp, dev)
        return _time_ms(model, x, dev, repeats)

    with _threads(fp.threads):
        return _sessions(session)



# -- the tables on disk: listed and removed (composer latency --tables | --clear) --------------------------------

@dataclass
class TableInfo:
    key: str
    path: Path
    describe: str        # the fingerprint in words, or why it cannot be read
    parts: int
    suspect: int
    created: float | None
    last_check: dict | None


def tables_folder() -> Path:
    return cache_dir() / "latency"


def _listing(folder: Path) -> list[Path]:
    """The table files in ``folder`` ([] when it does not exist); ValueError when it cannot be read."""
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == ".jsonl")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ValueError(f"cannot read the latency tables folder {folder}: {exc.strerror or exc}") from None


def list_tables(folder: Path | None = None) -> list[TableInfo]:
    """Every table in the folder, oldest first: its fingerprint, parts, suspect parts, age, last self-check."""
    folder = folder or tables_folder()
    out = []
    for path in _listing(folder):
        try:
            header = json.loads(path.read_text().split("\n", 1)[0])
            fp = Fingerprint(**header["fingerprint"])
            table = LatencyTable(fp, folder)
            table.path = path  # an older version's table keeps its own name
            table._clear()
            table._read()
            describe = fp.describe() + ("" if header.get("version") == TABLE_VERSION
                                        else f" (table version {header.get('version')}: not read by this composer)")
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            out.append(TableInfo(path.stem, path, f"unreadable: {exc}", 0, 0, None, None))
            continue
        created = table.created
        if created is None:
            with contextlib.suppress(OSError):
                created = path.stat().st_mtime
        last = max(table.checks.values(), key=lambda r: r.get("at", 0), default=None)
        out.append(TableInfo(path.stem, path, describe, len(table), sum(map(table.suspect, table.rows)), created,
                             last))
    return sorted(out, key=lambda t: t.created or 0)


def clear_tables(fingerprint_key: str | None = None, folder: Path | None = None) -> list[Path]:
    """Remove every table, or the one whose fingerprint key is (or starts with) ``fingerprint_key``; the removed
    files. ValueError for a malformed key, one that matches no table or several."""
    folder = folder or tables_folder()
    paths = _listing(folder)
    if fingerprint_key is not None:
        if not (1 <= len(fingerprint_key) <= 16 and all(c in "0123456789abcdef" for c in fingerprint_key)):
            raise ValueError(f"--clear: a fingerprint is up to 16 hexadecimal digits (composer latency --tables "
                             f"lists them), got {fingerprint_key!r}")
        paths = [p for p in paths if p.stem.startswith(fingerprint_key)]
        if len(paths) != 1:
            many = f"{len(paths)} tables" if paths else "no table"
            raise ValueError(f"--clear: {many} in {folder} with fingerprint {fingerprint_key!r} "
                             "(composer latency --tables lists them)")
    for path in paths:
        try:
            path.unlink()
            path.with_suffix(".lock").unlink(missing_ok=True)
        except OSError as exc:
            raise ValueError(f"--clear: cannot remove {path}: {exc.strerror or exc}") from None
    return paths


def parse_latency(value, flag: str = "--max-latency") -> float:
    """``25ms``, ``25 ms``, ``0.025s``, ``25`` (ms) -> milliseconds (positive, finite)."""
    if isinstance(value, bool):
        raise ValueError(f"{flag}: expected a latency such as 25ms, got {value!r}")
    if isinstance(value, (int, float)):
        ms = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        scale = 1.0
        for suffix, factor in (("ms", 1.0), ("us", 1e-3), ("µs", 1e-3), ("s", 1e3)):
            if text.endswith(suffix):
                text, scale = text[: -len(suffix)], factor
                break
        try:
            ms = float(text) * scale
        except ValueError:
            raise ValueError(f"{flag}: expected a latency such as 25ms, 0.5s or 800us, got {value!r}") from None
    if not math.isfinite(ms) or ms <= 0:
        raise ValueError(f"{flag}: a latency budget must be a positive, finite time, got {value!r}")
    return ms


__all__ = ["Conditions", "Fingerprint", "LatencyTable", "PartLatency", "Prediction", "Predictor", "SelfCheck",
           "TableInfo", "cache_dir", "clear_tables", "fingerprint", "flush_denormal", "keep_freed_memory",
           "list_tables", "measure", "measure_sessions", "parse_latency", "predict", "predictor", "quiet_now"]
