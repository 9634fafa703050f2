"""The counted cross-check of the analytic cost: PyTorch's FlopCounterMode on a model built on the meta
device (no weights allocated), extended with formulas for FFTs, grid_sample and deformable convs, plus an
audit that reports every executed op that has no formula.

Why the audit: FlopCounterMode silently counts an op it has no formula for as 0, so a new mixer whose
main op is, say, an FFT would look free. ``count_macs`` fails on such ops unless ``strict=False``.
Conventions (docs/flop-conventions.md): MACs = FlopCounterMode total / 2; FFTs kept apart as real FFT
1.25·N·log2 N MAC-equivalents; grid_sample bilinear 4 per output element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from .cost_types import fft_cost

aten = torch.ops.aten


def _dims(dim, ndim):
    return [d % ndim for d in dim]


def _r2c(x, dim, *args, out_shape=None, **kwargs):
    d = _dims(dim, len(x))
    n = prod(x[i] for i in d)
    return int(2 * fft_cost(n, prod(x) // n, True))


def _c2r(x, dim, *args, out_shape=None, **kwargs):
    d = _dims(dim, len(out_shape))
    n = prod(out_shape[i] for i in d)
    return int(2 * fft_cost(n, prod(out_shape) // n, True))


def _c2c(x, dim, *args, out_shape=None, **kwargs):
    d = _dims(dim, len(x))
    n = prod(x[i] for i in d)
    return int(2 * fft_cost(n, prod(x) // n, False))


def _grid_sample(x, grid, *args, out_shape=None, **kwargs):
    return 2 * 4 * prod(out_shape)


def _sdpa_cpu(q, k, v, *args, out_shape=None, **kwargs):
    return 2 * prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


FFT_OPS = {aten._fft_r2c, aten._fft_c2r, aten._fft_c2c}
EXTRA_FORMULAS = {aten._fft_r2c: _r2c, aten._fft_c2r: _c2r, aten._fft_c2c: _c2c,
                  aten.grid_sampler_2d: _grid_sample}
if aten._scaled_dot_product_flash_attention_for_cpu not in flop_registry:  # torch <= 2.13
    EXTRA_FORMULAS[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu

# Ops that move data (cost 0) and ops the convention deliberately leaves out (norms, activations,
# softmax, element-wise, pooling). Anything else without a formula is reported by the audit.
MOVES = {
    "view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "clone", "slice", "select",
    "unsqueeze", "squeeze", "cat", "stack", "split", "split_with_sizes", "unbind", "as_strided", "alias",
    "detach", "copy_", "_to_copy", "empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "arange", "lift_fresh", "constant_pad_nd", "pad", "roll", "index", "gather", "im2col",
    "col2im", "view_as_complex", "view_as_real", "flip", "masked_fill", "repeat", "contiguous", "fill_",
    "new_empty", "new_zeros", "_reshape_alias", "narrow", "expand_as", "index_select", "scatter", "unfold",
    "linspace", "rand", "randn", "uniform_", "normal_", "zero_", "_local_scalar_dense", "lt", "gt", "le", "ge",
    "eq", "ne", "logical_and", "logical_or", "logical_not", "bitwise_and", "bitwise_or", "any", "all",
    "native_dropout", "dropout", "bernoulli_", "tril", "triu", "meshgrid", "floor", "ceil", "round",
    "_unsafe_index", "new_ones", "new_full", "real", "imag", "conj", "_conj", "resolve_conj",
}
EXCLUDED = {
    "native_layer_norm", "native_group_norm", "native_batch_norm", "_native_batch_norm_legit",
    "_native_batch_norm_legit_no_training", "var_mean", "var", "std", "_softmax", "_safe_softmax",
    "_log_softmax", "gelu", "relu", "relu_", "silu", "sigmoid", "tanh", "hardswish", "hardtanh", "erf", "leaky_relu",
    "mul", "mul_", "add", "add_", "sub", "sub_", "div", "div_", "pow", "sqrt", "rsqrt", "square", "addcmul",
    "neg", "abs", "exp", "log", "log2", "clamp", "clamp_min", "clamp_max", "where", "mean", "sum", "amax",
    "amin", "max", "min", "avg_pool2d", "_adaptive_avg_pool2d", "max_pool2d_with_indices",
    "upsample_bilinear2d", "upsample_nearest2d", "upsample_bicubic2d", "affine_grid_generator", "sin", "cos",
    "reciprocal", "norm", "linalg_vector_norm", "softplus", "maximum", "minimum", "cumsum",
}


class _Audit(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.unknown: dict[str, int] = {}
        self.known = set(flop_registry) | set(EXTRA_FORMULAS)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func._overloadpacket
        if packet not in self.known and packet.__name__ not in MOVES | EXCLUDED:
            self.unknown[str(packet)] = self.unknown.get(str(packet), 0) + 1
        return func(*args, **(kwargs or {}))


class UncountedOpsError(RuntimeError):
    pass


@dataclass
class Counted:
    """What the counter measured: MACs (FlopCounterMode / 2, FFTs excluded), FFT MACs, per module."""

    macs: int
    fft_macs: float
    by_module: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)
    unknown_ops: dict[str, int] = field(default_factory=dict)


def count_module(model: torch.nn.Module, x: torch.Tensor, strict: bool = True) -> Counted:
    """Count one forward of ``model`` on ``x`` (both may live on the meta device)."""
    audit = _Audit()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS) as counter, audit:
        model(x)
    counts = counter.get_flop_counts()
    by_op = {str(op): int(v) for op, v in counts.get("Global", {}).items()}
    fft = sum(v for op, v in counts.get("Global", {}).items() if op in FFT_OPS)
    total = counter.get_total_flops()
    prefix = type(model).__name__ + "."
    by_module = {k[len(prefix):]: sum(v for op, v in ops.items() if op not in FFT_OPS) // 2
                 for k, ops in counts.items() if k.startswith(prefix)}
    if strict and audit.unknown:
        raise UncountedOpsError(
            f"ops without a FLOP formula ran (they would silently count as 0): {audit.unknown}; add a formula "
            "to composer.cost.EXTRA_FORMULAS or, if they are free, to MOVES / EXCLUDED")
    return Counted((total - fft) // 2, fft / 2, by_module, by_op, audit.unknown)


def count_macs(source, strict: bool = True, specialized: bool = False) -> Counted:
    """Build ``source`` (anything ``compose`` accepts) on the meta device and count one batch-1 forward.

    By default the model is built general (plain convolutions), so the count is the convention's
    (docs/flop-conventions.md: every tap of every kernel) and equals ``estimate``; ``specialized=True`` counts
    what the default build executes, where convolutions skip the kernel taps that cannot meet their map
    (docs/small-images.md): fewer MACs on maps smaller than a kernel, the same elsewhere."""
    from .composed import build
    from .plan import plan as make_plan

    p = make_plan(source)
    with torch.device("meta"):
        model = build(p, specialize=specialized).eval()
        x = torch.empty(1, p.spec.in_chans, p.spec.input_size, p.spec.input_size)
    return count_module(model, x, strict=strict)
