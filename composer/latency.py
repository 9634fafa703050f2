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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# 2: Swin's odd blocks timed with their shift (1 timed them as even blocks); 3: parts timed cold; 4: each part's input
# laid out in memory as the part before actually leaves it (3 assumed each part's own layout: wrong after
# LayerNorms computed through a permute, as U-DWConv's, whose downsamplings ran 2.8x their table entry); 5: parts
# built as compose builds them, convolutions specialized for their map (nn/specialize.py: a 7x7 depthwise conv on
# a 1x1 map ran ~80x its specialized time)
TABLE_VERSION = 5
MIN_RUN_MS = 2.0   # a timed run of a whole model repeats the call until it lasts this long (timer resolution)
EVICT_MB = 64      # before each timed call of a part, this much other memory is written (its weights go cold)
PART_CALLS = 2     # a part is timed in PART_CALLS x repeats single cold calls per session
WARMUP_MS = 100.0  # untimed calls first, at least this long (FFT plans, allocator, caches)
SESSIONS = (2, 5)  # a part is timed in 2 to 5 sessions, each with a freshly built module, until its two fastest
AGREE = 0.05       # sessions agree within 5%; the fastest counts


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


class LatencyTable:
    """Milliseconds per part key for one fingerprint, in ``cache_dir()/latency/<fingerprint key>.jsonl``: a
    header line, then one line per timed part, appended under a file lock (search workers share it). The first
    timing of a key wins, so a prediction never changes once its parts are in the table."""

    def __init__(self, fp: Fingerprint, folder: Path | None = None):
        self.fingerprint = fp
        self.path = (folder or cache_dir() / "latency") / f"{fp.key}.jsonl"
        self.rows: dict[str, float] = {}
        self.what: dict[str, str] = {}
        self.out: dict[str, str | None] = {}  # the layout the part's output is contiguous in (the next part's input)
        self._read()

    def _read(self) -> None:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ValueError(f"cannot read the latency table {self.path}: {exc.strerror or exc}") from None
        for line in lines[1:]:
            try:
                row = json.loads(line)
                key, ms = row["key"], float(row["ms"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a killed writer: that part is timed again
            if key not in self.rows and math.isfinite(ms) and ms >= 0:
                self.rows[key] = ms
                self.what[key] = row.get("what", "")
                self.out[key] = row.get("out")

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, key: str) -> float | None:
        return self.rows.get(key)

    def add(self, key: str, ms: float, what: str, out: str | None = None) -> float:
        """Record a timing and the layout the part's output is contiguous in (unless another process recorded this
        key first: then that one is returned)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_suffix(".lock")):
            self.rows.clear()
            self._read()  # what other workers added meanwhile
            if key in self.rows:
                return self.rows[key]
            new = not self.path.exists() or self.path.stat().st_size == 0
            with open(self.path, "a") as handle:
                if new:
                    handle.write(json.dumps({"fingerprint": asdict(self.fingerprint), "version": TABLE_VERSION})
                                 + "\n")
                handle.write(json.dumps({"key": key, "ms": ms, "what": what, "out": out}) + "\n")
        self.rows[key], self.what[key], self.out[key] = ms, what, out
        return ms


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


def _warm_up(fn, x, device) -> float:
    """Untimed calls of ``fn(x)`` for >= 3 calls and >= WARMUP_MS (FFT plans, allocator, caches); ms per call."""
    from .profile import _sync

    start, calls = time.perf_counter(), 0
    while calls < 3 or (time.perf_counter() - start) * 1e3 < WARMUP_MS:
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
    timings: list[float] = []
    while len(timings) < SESSIONS[1]:
        timings.append(session(len(timings)))
        if len(timings) >= SESSIONS[0]:
            first, second = sorted(timings)[:2]
            if second <= first * (1 + AGREE):
                break
    return min(timings)


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

    def predict(self, source, measure_missing: bool = True) -> Prediction:
        from .spec import EnsembleSpec, load_spec

        spec = load_spec(source)
        if isinstance(spec, EnsembleSpec):
            members = [self.predict(m, measure_missing) for m in spec.members]
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
                timed, out = self._time_part(item)
                ms = self.table.add(key, timed, item.what, out)
                self.measured += 1
                now = True
            stored = self.table.out.get(key) or item.layout
            parts.append(PartLatency(item.name, item.stage, item.what, key, ms, now, item.permuted))
        return Prediction(spec.name or "spec", self.fingerprint, parts, self.table.path, self.measured - before,
                          time.perf_counter() - t0 if self.measured > before else 0.0)

    def _time_part(self, item: _PartToTime) -> tuple[float, str | None]:
        """(ms, the layout its output is contiguous in)."""
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

        with _threads(self.threads):
            ms = _fastest(session)
        self.measure_seconds += time.perf_counter() - t0
        return ms, out[0]


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
        return _fastest(session)


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


__all__ = ["Fingerprint", "LatencyTable", "PartLatency", "Prediction", "Predictor", "cache_dir", "fingerprint",
           "flush_denormal", "keep_freed_memory", "measure", "parse_latency", "predict", "predictor"]
