"""Measured latency and throughput of a spec's model beside its analytic MACs (``composer profile``).

The model is built once, put in eval mode and timed under ``torch.inference_mode`` at each batch size:
``warmup`` untimed forwards, then ``iters`` timed ones (the median is the latency; CUDA is synchronised
around every timed forward, so the time covers the kernels and not only their launch). Achieved GMAC/s is
the Plan's MACs x batch / latency: the analytic count (FFTs excluded, as docs/flop-conventions.md says), so
it compares mixers on equal terms rather than measuring hardware utilisation exactly.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    batch_size: int
    latency_ms: float  # median over iters, one forward of the whole batch
    min_ms: float
    macs: int  # analytic MACs of one image (the Plan's estimate, FFT MACs apart)
    fft_macs: float

    @property
    def throughput(self) -> float:
        """Images per second at the median latency."""
        return self.batch_size / (self.latency_ms / 1e3)

    @property
    def gmacs_per_s(self) -> float:
        return self.macs * self.batch_size / (self.latency_ms / 1e3) / 1e9


@dataclass
class Profile:
    name: str
    input_size: int
    device: str
    params: int
    timings: list[Timing]
    threads: int = 1
    specialized: bool = True

    def table(self) -> str:
        from .report import _table
        from .spec.units import gmacs_cell, value_cell

        has_fft = any(t.fft_macs for t in self.timings)
        header = ["batch", "latency ms", "min ms", "img/s", "GMACs/img", "GMAC/s"] + (["FFT GMACs/img"] if has_fft
                                                                                       else [])
        rows = [header]
        for t in self.timings:
            row = [str(t.batch_size), f"{t.latency_ms:.2f}", f"{t.min_ms:.2f}", f"{t.throughput:.1f}",
                   gmacs_cell(t.macs), value_cell(t.gmacs_per_s)]
            rows.append(row + ([gmacs_cell(t.fft_macs)] if has_fft else []))
        where = f"{self.device}, {self.threads} threads" if self.device == "cpu" else self.device
        title = (f"{self.name}  ({self.params:,} params, input {self.input_size}x{self.input_size}, {where}, "
                 f"eval, inference_mode{'' if self.specialized else ', general build'})")
        foot = "latency: median of the timed forwards; GMAC/s: analytic MACs x batch / latency (FFTs apart)"
        return f"{title}\n{_table(rows, 'r' * len(header))}\n{foot}"


def resolve_device(device: str | None) -> torch.device:
    """``None``/``auto``: CUDA when available, else CPU. An explicit ``cuda`` without a GPU is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile(source, batch_sizes: tuple[int, ...] = (1, 8), device: str | None = None, input_size: int | None = None,
            warmup: int = 3, iters: int = 10, specialize: bool = True) -> Profile:
    """Time a spec's model (a path, preset, YAML text, dict or Spec) at each batch size; ``specialize=False``
    times the general build (plain convolutions throughout, docs/small-images.md)."""
    from .composed import build
    from .plan import plan
    from .resolution import at_input_size
    from .spec import load_spec

    if warmup < 0 or iters < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"need warmup >= 0, iters >= 1 and batch sizes >= 1, got warmup={warmup}, iters={iters}, "
                         f"batch sizes={list(batch_sizes)}")
    spec = load_spec(source)
    if input_size is not None and input_size != spec.input_size:
        spec = at_input_size(spec, input_size)  # auto sizes (Hyena filters) follow the new map
    p = plan(spec)
    est = p.estimate()
    dev = resolve_device(device)
    model = build(p, specialize=specialize).eval().to(dev)
    in_chans = spec.in_chans
    timings = []
    with torch.inference_mode():
        for batch in batch_sizes:
            x = torch.randn(batch, in_chans, spec.input_size, spec.input_size, device=dev)
            for _ in range(warmup):
                model(x)
            _sync(dev)
            times = []
            for _ in range(iters):
                _sync(dev)
                start = time.perf_counter()
                model(x)
                _sync(dev)
                times.append((time.perf_counter() - start) * 1e3)
            timings.append(Timing(batch, statistics.median(times), min(times), est.macs, est.fft_macs))
    name = spec.name or "spec"
    return Profile(name, spec.input_size, str(dev), est.params, timings, torch.get_num_threads(), specialize)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"1,8,32"`` -> (1, 8, 32)."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--batch-sizes must be positive integers separated by commas, e.g. 1,8,32; got "
                         f"{text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--batch-sizes must be positive integers separated by commas, e.g. 1,8,32; got {text!r}")
    return sizes


__all__ = ["Profile", "Timing", "parse_batch_sizes", "profile", "resolve_device"]
