"""Each depthwise convolution's CPU training path, measured on this machine (``--conv-paths measured``).

A specialized depthwise convolution (composer.nn.specialize) may train on the CPU as built, as its dense operator
(small maps) or channels-last; the rules that pick one by default were fixed from one machine's measurements
(docs/small-images.md), and which is fastest depends on the CPU, the thread count, the batch, the map and the
layout of the input the model hands over. Like ``torch.backends.cudnn.benchmark`` on a GPU, this times each
candidate, forward and backward, for every distinct convolution of a model at the batch it trains with, on an input
laid out as in the model, and takes the fastest. The timings are kept in
the latency table of the machine's fingerprint (composer.latency: the same cache folder, file lock and conditions),
so a search's later trials, and later runs, read them instead of timing again.

The paths compute the same convolution (outputs and gradients equal up to summation order; tests/test_specialize.py),
so the choice changes speed only, and a study does not record it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..latency import LatencyTable, _key, _timed_ms, _warm_up, _Watch, fingerprint
from ..nn.specialize import MapConv2d, specialize_conv, train_paths

MARGIN = 0.10
"""A measured path replaces the rule's only when it is faster by more than this: on this project's 2-core machine
two paths that run the same computation (channels-last and as built, on a channels-last input) timed 7.22 and
7.82 ms; a closer race is noise."""
ROUNDS = 5            # timed runs per path, interleaved across the paths (drift reaches them alike); the fastest counts
MIN_RUN_MS = 5.0      # a timed run repeats the step until it lasts this long
WARMUP_MS = 50.0
SHOWN = 3             # the summary line names at most this many changed kinds

_PATH_NAMES = {"": "as built", "dense": "dense operator", "channels_last": "channels-last"}


@dataclass(frozen=True)
class ConvSignature:
    """What a depthwise convolution's training time depends on besides the machine (whose fingerprint, with the
    batch, the dtype and the model's input memory format, names the table). ``layout``: the order of the
    convolution's input dimensions in memory as the model hands it over, outermost first ("NCHW" contiguous,
    "NHWC" channels-last, as a channels-last norm before a 1x1 convolution leaves it), because a path's cost
    depends on it: a 7x7 kernel on an 8x8 map trained 1.4x faster as a dense operator than channels-last on a
    contiguous input, and made ConvFormer 7-10% slower inside the model, whose input there is channels-last."""

    channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    bias: bool
    map_size: tuple[int, int]
    layout: str = "NCHW"

    @classmethod
    def of(cls, conv: nn.Conv2d, x: torch.Tensor) -> ConvSignature:
        """``conv``'s signature on its input ``x``."""
        return cls(conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding),
                   tuple(conv.dilation), conv.bias is not None, tuple(x.shape[-2:]), memory_order(x))

    def key(self, path: str) -> str:
        return _key({"conv_train_path": path, "channels": self.channels, "kernel": self.kernel,
                     "stride": self.stride, "padding": self.padding, "dilation": self.dilation, "bias": self.bias,
                     "map": self.map_size, "layout": self.layout})

    def describe(self) -> str:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        extra = (f" stride {sh}x{sw}" if (sh, sw) != (1, 1) else "") + \
                (f" dilation {dh}x{dw}" if (dh, dw) != (1, 1) else "")
        layout = "" if self.layout == "NCHW" else " (channels-last input)" if self.layout == "NHWC" else \
            f" ({self.layout} input)"
        return f"depthwise {self.channels} ch {kh}x{kw}{extra} on {self.map_size[0]}x{self.map_size[1]}{layout}"

    def build(self, path: str) -> nn.Conv2d:
        conv = nn.Conv2d(self.channels, self.channels, self.kernel, self.stride, self.padding, self.dilation,
                         groups=self.channels, bias=self.bias)
        specialize_conv(conv, *self.map_size, train_path=path)
        return conv

    def input(self, batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A random input of ``batch`` images laid out in memory as ``layout`` says."""
        order = ["NCHW".index(d) for d in self.layout]
        shape = (batch, self.channels, *self.map_size)
        return torch.randn([shape[d] for d in order], dtype=dtype).permute(*[order.index(d) for d in range(4)])


def memory_order(x: torch.Tensor) -> str:
    """The order of ``x``'s (N, C, H, W) dimensions in memory, outermost first (ties, i.e. dimensions of size 1,
    in NCHW order): "NCHW" for a contiguous tensor, "NHWC" for a channels-last one."""
    return "".join("NCHW"[d] for d in sorted(range(4), key=lambda d: (-x.stride(d), d)))


@dataclass
class ConvPathChoice:
    """The measured training step (forward and backward, ms) of each path for one signature, and the pick."""

    signature: ConvSignature
    ms: dict[str, float]
    rule: str
    chosen: str
    modules: list[str] = field(default_factory=list)   # the model's convolutions with this signature
    timed_now: bool = False
    busy: str = ""        # the conditions, when the machine was busy while they were timed


@dataclass
class ConvPaths:
    """What :func:`choose_conv_paths` found and set."""

    choices: list[ConvPathChoice]
    seconds: float = 0.0

    @property
    def changed(self) -> list[ConvPathChoice]:
        return [c for c in self.choices if c.chosen != c.rule]

    def summary(self) -> str:
        convs = sum(len(c.modules) for c in self.choices)
        timed = sum(c.timed_now for c in self.choices)
        changed = self.changed
        line = (f"CPU training paths measured: {convs} depthwise convolutions of {len(self.choices)} kinds "
                f"({timed} timed now in {self.seconds:.1f} s, {len(self.choices) - timed} from the latency table); "
                f"{len(changed)} {'kind differs' if len(changed) == 1 else 'kinds differ'} from the rules")
        for c in changed[:SHOWN]:
            line += (f"; {c.signature.describe()}: {_PATH_NAMES[c.chosen]} {c.ms[c.chosen]:.2f} ms against "
                     f"{_PATH_NAMES[c.rule]} {c.ms[c.rule]:.2f} ms")
        if len(changed) > SHOWN:
            line += f"; {len(changed) - SHOWN} more"
        busy = [c for c in self.choices if c.busy]
        if busy:
            line += f" ({len(busy)} timed while the machine was busy: {busy[0].busy})"
        return line


def _training_step(conv: nn.Conv2d, grad: torch.Tensor) -> Callable[[torch.Tensor], None]:
    """One training step of ``conv`` on its input: forward, then backward into the input, weight and bias."""
    def step(x: torch.Tensor) -> None:
        x.grad = None
        conv.weight.grad = None
        if conv.bias is not None:
            conv.bias.grad = None
        conv(x).backward(grad)
    return step


def time_paths(signature: ConvSignature, paths: tuple[str, ...], batch: int, dtype: torch.dtype = torch.float32,
               rounds: int = ROUNDS) -> dict[str, float]:
    """ms per training step (forward, then backward into the input, weight and bias) of ``signature`` at ``batch``
    on each path, its input laid out as in the model: the fastest of ``rounds`` interleaved runs, after a warm-up
    (composer.latency's loops: each run repeats the step until it lasts MIN_RUN_MS)."""
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    convs = {path: signature.build(path).to(dtype=dtype) for path in paths}
    x = signature.input(batch, dtype).requires_grad_()
    with torch.no_grad():
        grad = torch.randn_like(convs[paths[0]](x))
    steps = {path: _training_step(conv, grad) for path, conv in convs.items()}
    number = {path: max(1, min(1000, math.ceil(MIN_RUN_MS / max(_warm_up(step, x, cpu, WARMUP_MS), 1e-3))))
              for path, step in steps.items()}
    best = {path: math.inf for path in paths}
    for _ in range(rounds):
        for path, step in steps.items():
            best[path] = min(best[path], _timed_ms(step, x, cpu, number[path]))
    return best


def _depthwise_inputs(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype,
                      memory_format: torch.memory_format) -> list[tuple[str, nn.Conv2d, ConvSignature]]:
    """(name, convolution, signature) of every depthwise convolution ``model`` runs on an input of
    ``input_shape``, from one forward in eval mode without gradients (no BatchNorm statistic moves)."""
    seen: list[tuple[str, nn.Conv2d, ConvSignature]] = []
    hooks = []
    for name, m in model.named_modules():
        if type(m) in (nn.Conv2d, MapConv2d) and m.groups == m.in_channels == m.out_channels:
            def hook(module, args, name=name):
                if not any(module is s[1] for s in seen):
                    seen.append((name, module, ConvSignature.of(module, args[0])))
            hooks.append(m.register_forward_pre_hook(hook))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(input_shape, dtype=dtype, device=device).contiguous(memory_format=memory_format))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return seen


def choose_conv_paths(model: nn.Module, input_shape: tuple[int, ...], *, channels_last: bool = False,
                      dtype: torch.dtype = torch.float32, margin: float = MARGIN, folder=None,
                      timer: Callable[..., dict[str, float]] = time_paths) -> ConvPaths:
    """Time every training path of each depthwise convolution ``model`` (a CPU model, specialized as ``compose``
    builds it) runs on ``input_shape`` inputs (batch first: the batch it trains with), unless the latency table
    already holds them, and set on each convolution the fastest (the rule's unless another is faster by more than
    ``margin``). ``folder``: the latency tables' folder (default: the cache's)."""
    start = time.perf_counter()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    batch = int(input_shape[0])
    table = LatencyTable(fingerprint("cpu", batch_size=batch, dtype=str(dtype).removeprefix("torch."),
                                     memory_format="channels_last" if channels_last else "contiguous"),
                         Path(folder) if folder is not None else None)
    by_signature: dict[ConvSignature, ConvPathChoice] = {}
    for name, conv, signature in _depthwise_inputs(model, input_shape, dtype, memory_format):
        height, width = signature.map_size
        paths = train_paths(conv, height, width, batch)
        if len(paths) < 2:
            continue
        choice = by_signature.get(signature)
        if choice is None:
            ms = {p: table.get(signature.key(p)) for p in paths}
            missing = tuple(p for p in paths if ms[p] is None)
            busy = ""
            if missing:
                with _Watch() as watch:
                    timed = timer(signature, missing, batch, dtype=dtype)
                busy = watch.conditions.describe() if watch.conditions.suspect else ""
                for p in missing:
                    ms[p] = table.add(signature.key(p), timed[p], f"{signature.describe()}, training step, "
                                      f"{_PATH_NAMES[p]}", cond=watch.conditions)
            rule = paths[0]
            fastest = min(paths, key=lambda p: ms[p])
            chosen = fastest if ms[fastest] < ms[rule] * (1 - margin) else rule
            choice = by_signature[signature] = ConvPathChoice(signature, ms, rule, chosen, timed_now=bool(missing),
                                                              busy=busy)
        choice.modules.append(name)
        specialize_conv(conv, height, width, train_path=choice.chosen)   # a chosen dense operator: at every batch
    return ConvPaths(list(by_signature.values()), time.perf_counter() - start)


__all__ = ["ConvPathChoice", "ConvPaths", "ConvSignature", "choose_conv_paths", "memory_order", "time_paths"]
