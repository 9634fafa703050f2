"""Convolutions built for the map size the Plan gives them (docs/small-images.md).

With zero padding ``p`` on a map of ``n`` pixels, a kernel tap that reads only padding for every output position
contributes nothing but time: with 'same' padding ``k // 2`` on an ``H x W`` map only the central
``(2H-1) x (2W-1)`` taps of a ``k x k`` kernel ever meet the input (a 7x7 kernel on a 2x2 map: its 3x3 centre).
oneDNN and cuDNN still run the whole kernel over the padding, which on the small maps of a CPU search is most of a
model's time (a 7x7 depthwise conv on a 1x1 map: ~80x slower than its 1x1 centre on 2 cores).

:class:`MapConv2d` is an ``nn.Conv2d`` (a subclass, so ``isinstance`` holds; the same parameters, so the same
state-dict keys and shapes: checkpoints load strictly) whose forward, on the map size it was specialized for, slices
the live taps out of the full weight and runs them with the padding that keeps every output where it was. The result
equals the general convolution's up to summation order; gradients reach the live taps only, which is all the general
convolution gives a nonzero gradient to. On any other map size it runs the general convolution, so a model compiled
at one size and run at another is never wrong (only, there, as fast as an unspecialized one; build it for that size
with ``composer.resolution.at_input_size`` to specialize it there). A single-tap depthwise kernel (k x k on a 1x1
map) runs as the per-channel scale it is.

The arithmetic (:func:`live_taps`) is per axis and exact for any stride and dilation; an axis whose live taps
would need more padding after the map than before it (possible only with strides) keeps its whole kernel.

A depthwise convolution on a map with fewer pixels than its live taps (a 7x7 kernel on a 4x4 map, its 3x3 centre
on a 2x2 one) is, per channel, a small dense operator from the map's P pixels to its Q outputs; while gradients
are recorded on the CPU it runs as that operator (:func:`dense_depthwise`: one batched matrix product, Q·P < Q·taps
MACs, so never more than the convolution executes), because oneDNN's depthwise backward on such maps took 10-40x
the forward (128 channels 7x7 on 4x4 at batch 128, one thread: 31 ms forward and backward, against 3.2 ms as an
operator). Inference keeps the convolution, which is as fast or faster there. A training path measured on the
machine (composer.train.conv_paths) may also be the dense operator of a larger map (up to MAX_DENSE_ENTRIES), which
executes more MACs than the convolution and can still train faster (oneDNN's depthwise backward runs far below its
MAC rate).
"""

import itertools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn

from .layers import fx_tracing


@dataclass(frozen=True)
class AxisCrop:
    """The live taps ``start:stop`` of one kernel axis and the padding they run with."""

    start: int
    stop: int
    padding: int


def conv_out(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a zero-padded convolution along one axis (PyTorch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def live_taps(size: int, kernel: int, stride: int, padding: int, dilation: int) -> AxisCrop | None:
    """The taps of one kernel axis that meet a ``size``-pixel input for some output position, or None when every
    tap does (nothing to crop) or the axis cannot be cropped exactly with symmetric padding.

    Output ``o`` reads input ``o·stride - padding + j·dilation`` with tap ``j``; over the outputs ``0..out-1``
    tap ``j`` meets the input iff that index lies in ``[0, size)`` for some ``o``, i.e. for
    ``ceil((padding - (out-1)·stride) / dilation) <= j <= floor((size - 1 + padding) / dilation)``.
    Keeping taps ``start..stop-1`` moves the padding before the map to ``padding - start·dilation``."""
    out = conv_out(size, kernel, stride, padding, dilation)
    if out < 1:
        return None
    start = max(0, -(((out - 1) * stride - padding) // dilation))   # ceil((padding - (out-1)·stride) / dilation)
    stop = min(kernel, (size - 1 + padding) // dilation + 1)
    if start >= stop or (start, stop) == (0, kernel):
        return None   # every tap live, or none (a map that only ever meets padding: leave it general)
    before = padding - start * dilation
    # output o now reads o·stride - before + (j - start)·dilation, the same pixel as before; the convolution pads
    # both sides by ``before``, which must give as many outputs as the general one (fewer would need more padding
    # after the map, possible only with strides; more was never found for any size, kernel, stride, padding and
    # dilation up to 11, 11, 4, 11 and 3). A first live tap past the map's first pixel (dilation) stays whole.
    if before < 0 or conv_out(size, stop - start, stride, before, dilation) != out:
        return None
    return AxisCrop(start, stop, before)


def dense_operator_index(height: int, width: int, kernel: tuple[int, int], stride: tuple[int, int],
                         padding: tuple[int, int], dilation: tuple[int, int]) -> list[list[int]]:
    """For a depthwise convolution on a ``height x width`` map: a ``Q x P`` index (Q outputs, P input pixels, both
    row-major) whose entry is the flattened kernel tap with which output q reads pixel p, or ``kh·kw`` (a zero
    appended to the taps) where no tap does. Each (q, p) pair is read by at most one tap: pixel
    ``q·stride - padding + tap·dilation`` fixes the tap."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    out_h, out_w = conv_out(height, kh, sh, ph, dh), conv_out(width, kw, sw, pw, dw)
    index = [[kh * kw] * (height * width) for _ in range(out_h * out_w)]
    for qi, qj, a, b in itertools.product(range(out_h), range(out_w), range(kh), range(kw)):
        i, j = qi * sh - ph + a * dh, qj * sw - pw + b * dw
        if 0 <= i < height and 0 <= j < width:
            index[qi * out_w + qj][i * width + j] = a * kw + b
    return index


def dense_depthwise(x: torch.Tensor, weight: torch.Tensor, index: torch.Tensor, bias: Optional[torch.Tensor],
                    out_size: tuple[int, int]) -> torch.Tensor:
    """A depthwise convolution as the per-channel dense operator it is on a small map (``index``:
    :func:`dense_operator_index`): gather each channel's (Q, P) matrix from its taps and apply it to the map's
    pixels, one batched matrix product. The gather's backward adds each entry's gradient back to its tap: the
    taps that meet no pixel get none, as in the convolution."""
    b, c = x.shape[0], x.shape[1]
    taps = torch.cat([weight.reshape(c, -1), weight.new_zeros(c, 1)], 1)
    operator = taps[:, index]                                    # (C, Q, P)
    y = torch.einsum("bcp,cqp->bcq", x.reshape(b, c, -1), operator).reshape(b, c, out_size[0], out_size[1])
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def conv2d_on_map(x: torch.Tensor, weight: torch.Tensor, live: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                  stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                  map_size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int],
                  crop_padding: tuple[int, int], method: str = "conv", path: str = "",
                  dense_index: Optional[torch.Tensor] = None, out_size: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """The convolution with the live taps ``rows x cols`` of ``weight`` (``live``: those taps, already copied out,
    or None) when ``x`` has the map size they were worked out for, the general one otherwise (a leaf of FX graphs:
    its branch reads the input's shape). ``method`` says how the live taps run on their map:

    * ``"conv"``: a convolution with the live taps and the padding that keeps every output where it was;
    * ``"scale"``: the live kernel is one tap of a depthwise convolution (a k x k kernel on a 1x1 map), i.e. a
      per-channel scale: computed as one, since oneDNN's 1x1 depthwise convolution is pathologically slow (at
      batch 1 with 512 channels: 18 ms against 4 us for the product, one thread);
    * ``"linear"``: a dense convolution whose live kernel covers its whole map without padding (a 1x1 convolution
      on a 1x1 map; a 3x3 stride-2 downsampling on a 2x2 map) has one output pixel, the matrix product of its
      flattened taps with the flattened map: 3-6x faster than oneDNN's convolution (benchmarks/small_map_ops.py).

    ``path``, given by :class:`MapConv2d` only while gradients are recorded on the CPU: ``"dense"``, the depthwise
    convolution runs as its dense operator (:func:`dense_depthwise`, ``dense_index``); ``"channels_last"``, on a
    channels-first input it runs channels-last and converts back (oneDNN's channels-first depthwise backward took
    1.2-4x the time of its channels-last one, conversions included, for kernels of 5 and more)."""
    if x.shape[-2] == map_size[0] and x.shape[-1] == map_size[1]:
        if path == "dense" and dense_index is not None:
            return dense_depthwise(x, weight, dense_index, bias, out_size)
        if live is None:
            live = weight[:, :, rows[0]:rows[1], cols[0]:cols[1]]
        if method == "scale":
            scale = live.reshape(1, -1, 1, 1)
            x = x[:, :, ::stride[0], ::stride[1]]
            return x * scale if bias is None else torch.addcmul(bias.view(1, -1, 1, 1), x, scale)
        if method == "linear":
            return F.linear(x.flatten(1), live.flatten(1), bias).view(x.shape[0], -1, 1, 1)
        weight, padding = live.contiguous(), crop_padding
    if path == "channels_last" and not x.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups).contiguous()
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


torch.fx.wrap("conv2d_on_map")


@register_notrace_module  # FX with timm's tracer: one leaf, as an nn.Conv2d; plain torch.fx: conv2d_on_map's node
class MapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that computes with the taps that can meet its map on the map size it was specialized for
    (:func:`specialize_conv`), and as a plain ``nn.Conv2d`` on any other."""

    map_size: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]
    crop_padding: tuple[int, int]
    method: str          # on its map: "conv", "scale" or "linear" (conv2d_on_map)
    train_path: str      # while gradients are recorded on the CPU: "", "dense" or "channels_last"
    dense_min_batch: int  # the dense path from this batch on (the rule's DENSE_MIN_BATCH; 0 where measured)
    out_size: tuple[int, int]
    dense_index: torch.Tensor   # a non-persistent buffer (not in the state dict): empty unless train_path is "dense"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        live: Optional[torch.Tensor] = None
        path = ""
        if not torch.jit.is_scripting():
            live = self._kept_live_taps()
            path = self._path(x)
        return conv2d_on_map(x, self.weight, live, self.bias, self.stride, self.padding, self.dilation, self.groups,
                             self.map_size, self.rows, self.cols, self.crop_padding, self.method, path,
                             self.dense_index, self.out_size)

    @torch.jit.ignore
    def _path(self, x: torch.Tensor) -> str:
        """The training path while gradients are recorded on the CPU: both pay off in oneDNN's backward (CUDA runs
        cuDNN's convolution, not measured against them). Scripted and FX-traced graphs hold the inference path
        (exact all the same)."""
        if not (self.train_path and torch.is_grad_enabled() and not fx_tracing() and x.device.type == "cpu"):
            return ""
        if self.train_path == "dense" and x.shape[0] < self.dense_min_batch:
            return ""   # gathering the operator costs what the convolution does at small batches beyond 2x2 maps
        return self.train_path

    @torch.jit.ignore
    def _kept_live_taps(self) -> Optional[torch.Tensor]:
        """The live taps, copied out once and kept while no gradient is recorded (eval, inference): gathering them
        from a dense kernel is a strided copy of a few floats per (out, in) pair that took longer than the
        convolution itself (256 x 128 3x3 -> 2x2: ~8 ms against ~50 us, one thread). Taken again when the weight
        changes (its version counter, storage or dtype); None wherever gradients are on (the slice must be part of
        the graph), while FX traces or while torch.compile traces (the compiled graph folds the slice in)."""
        w = self.weight
        if torch.is_grad_enabled() or fx_tracing() or torch.compiler.is_compiling():
            return None
        key = (w._version, w.data_ptr(), w.dtype, w.device)
        if self.__dict__.get("_live_key") != key:
            self.__dict__["_live"] = w.detach()[:, :, self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]].contiguous()
            self.__dict__["_live_key"] = key
        return self.__dict__["_live"]

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, on {self.map_size[0]}x{self.map_size[1]} maps: "
                f"taps [{self.rows[0]}:{self.rows[1]}, {self.cols[0]}:{self.cols[1]}], "
                + {"scale": "a per-channel scale", "linear": "a matrix product"}.get(
                    self.method, f"padding={self.crop_padding}")
                + {"dense": ", trained as a dense operator on CPU",
                   "channels_last": ", trained channels-last on CPU"}.get(self.train_path, ""))


def crops(conv: nn.Conv2d, height: int, width: int) -> tuple[AxisCrop | None, AxisCrop | None] | None:
    """The per-axis crops of ``conv`` on a ``height x width`` input, or None when nothing can be cropped (every
    tap live, or a convolution this does not handle: non-zero padding modes, 'same' / 'valid' strings)."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    axes = tuple(live_taps(size, conv.kernel_size[a], conv.stride[a], conv.padding[a], conv.dilation[a])
                 for a, size in enumerate((height, width)))
    return axes if any(axes) else None


DENSE_MIN_BATCH = 16
"""On maps larger than 2x2 the dense operator trains faster from this batch on (benchmarks/small_map_ops.py, one
thread: 7x7 and 5x5 kernels on 4x4 maps at 0.47-0.81x the convolution at batch 4, 1.24-1.94x at batch 16); on 2x2
maps it was faster at every batch (1.06-1.54x at batches 1 and 4)."""

MAX_DENSE_ENTRIES = 4096
"""Largest Q·P of a dense depthwise operator (a 64-pixel map's 64 x 64; the channels' matrices are gathered in
every training step)."""


def _method(conv: nn.Conv2d, depthwise: bool, height: int, width: int, live: tuple[int, int],
            crop_padding: tuple[int, int]) -> str:
    """How the live taps (``live``: rows x cols) run on their map (conv2d_on_map)."""
    if live == (1, 1) and crop_padding == (0, 0) and depthwise:
        return "scale"
    if conv.groups == 1 and live == (height, width) and crop_padding == (0, 0) and conv.dilation == (1, 1):
        return "linear"
    return "conv"


@dataclass(frozen=True)
class _OnMap:
    """What :func:`specialize_conv` works out for a convolution on one map size."""

    found: bool                   # some taps can never meet the map
    rows: AxisCrop
    cols: AxisCrop
    out_size: tuple[int, int]
    method: str
    paths: tuple[str, ...]        # the training paths it may take ("", "dense", "channels_last"; the rule's first)


def _on_map(conv: nn.Conv2d, height: int, width: int) -> _OnMap | None:
    if type(conv) not in (nn.Conv2d, MapConv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    found = crops(conv, height, width) or (None, None)
    rows, cols = (axis or AxisCrop(0, k, p) for axis, k, p in zip(found, conv.kernel_size, conv.padding))
    live = (rows.stop - rows.start, cols.stop - cols.start)
    crop_padding = (rows.padding, cols.padding)
    out_size = tuple(conv_out(size, conv.kernel_size[a], conv.stride[a], conv.padding[a], conv.dilation[a])
                     for a, size in enumerate((height, width)))
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    method = _method(conv, depthwise, height, width, live, crop_padding)
    paths: tuple[str, ...] = ()
    if method == "conv" and depthwise:
        # the rules' choice first; a measurement may also pick the dense operator where it executes more MACs than
        # the convolution (fewer pixels than live taps is the rules' condition): InceptionNeXt's 1x9 bands on 4x4
        # and 8x8 maps trained 1.4-2.7x faster as one (batch 128); on a channels-last input it loses (small-images.md)
        dense = ("dense",) if 0 < out_size[0] * out_size[1] * height * width <= MAX_DENSE_ENTRIES else ()
        if dense and height * width < live[0] * live[1]:   # fewer pixels than live taps: Q·P < Q·taps MACs
            paths = ("dense", "", "channels_last")
        elif min(live) >= 5:
            paths = ("channels_last", "", *dense)
        else:
            paths = ("", "channels_last", *dense)
    return _OnMap(found != (None, None), rows, cols, out_size, method, paths)


def _rule_min_batch(height: int, width: int) -> int:
    return DENSE_MIN_BATCH if height * width > 4 else 0


def train_paths(conv: nn.Conv2d, height: int, width: int, batch: int | None = None) -> tuple[str, ...]:
    """The training paths ``conv`` may take on ``height x width`` maps, the rules' choice first (what
    :func:`specialize_conv` picks unless told; at ``batch``, if given, what the rules then run: as built where the
    dense operator waits for DENSE_MIN_BATCH), or () when it has no choice (not a depthwise convolution that runs
    as a convolution there)."""
    on_map = _on_map(conv, height, width)
    paths = on_map.paths if on_map is not None else ()
    if paths[:1] == ("dense",) and batch is not None and batch < _rule_min_batch(height, width):
        paths = ("", "dense", "channels_last")
    return paths


def specialize_conv(conv: nn.Conv2d, height: int, width: int, train_path: str | None = None) -> bool:
    """Make ``conv`` (an ``nn.Conv2d``, in place: its parameters stay the same objects) a :class:`MapConv2d` for
    ``height x width`` inputs when some of its taps can never meet such a map, when its live taps run faster
    another way (a per-channel scale, a matrix product), or when it is a depthwise convolution that trains faster
    on the CPU as a dense operator (fewer input pixels than live taps) or channels-last (kernels of 5 and more).
    ``train_path`` (one of :func:`train_paths`) overrides that last rule, as a measurement on the machine chose
    (composer.train.conv_paths): a dense operator chosen so is taken at every batch (the rules take it from
    DENSE_MIN_BATCH on, on maps larger than 2x2). A MapConv2d is specialized again."""
    on_map = _on_map(conv, height, width)
    if on_map is None:
        return False
    measured = train_path is not None
    if train_path is None:
        train_path = on_map.paths[0] if on_map.paths else ""
    elif train_path not in (on_map.paths or ("",)):
        raise ValueError(f"training path {train_path!r} is not one of {on_map.paths or ('',)} for {conv} on "
                         f"{height}x{width} maps")
    if type(conv) is MapConv2d:
        generalize(conv)
    if not on_map.found and on_map.method == "conv" and not train_path:
        return False
    rows, cols = on_map.rows, on_map.cols
    conv.__class__ = MapConv2d
    conv.map_size = (height, width)
    conv.rows, conv.cols = (rows.start, rows.stop), (cols.start, cols.stop)
    conv.crop_padding = (rows.padding, cols.padding)
    conv.method, conv.train_path = on_map.method, train_path
    conv.dense_min_batch = _rule_min_batch(height, width) if train_path == "dense" and not measured else 0
    conv.out_size = on_map.out_size
    index = dense_operator_index(height, width, conv.kernel_size, conv.stride, conv.padding, conv.dilation) \
        if train_path == "dense" else []
    conv.register_buffer("dense_index", torch.tensor(index, dtype=torch.long, device=conv.weight.device),
                         persistent=False)
    return True


def specialize(module: nn.Module, height: int, width: int) -> int:
    """Specialize every convolution in ``module`` that runs on ``height x width`` maps (a Plan part's input map;
    a convolution that meets another size inside the part falls back to the general path at run time). Returns
    how many were specialized."""
    return sum(specialize_conv(m, height, width) for m in list(module.modules()) if type(m) is nn.Conv2d)


def build_for_its_map(part) -> nn.Module:
    """``part.build()`` (a Plan part: stem, downsampling, block) with its convolutions specialized for the part's
    input map, ``part.in_shape`` (C, H, W): the module ``compose`` puts in its place."""
    module = part.build()
    _, height, width = part.in_shape
    specialize(module, height, width)
    return module


def generalize(module: nn.Module) -> int:
    """Undo :func:`specialize`: every MapConv2d in ``module`` becomes a plain ``nn.Conv2d`` again."""
    count = 0
    for m in module.modules():
        if type(m) is MapConv2d:
            m.__class__ = nn.Conv2d
            for name in ("map_size", "rows", "cols", "crop_padding", "method", "train_path", "dense_min_batch",
                         "out_size"):
                delattr(m, name)
            del m._buffers["dense_index"]
            m.__dict__.pop("_live", None), m.__dict__.pop("_live_key", None)
            count += 1
    return count
