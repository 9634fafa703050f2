"""Operator facts a mixer's cost (its config, torch-free) and its tensors (its ``nn.Module``) must agree on.

One definition for both sides: the configs in ``composer/mixers`` and ``composer/channel`` and the modules in
``composer/nn`` import these, so neither side imports the other (no import circle), and a number changed here
changes the closed form and the module together. Plain Python; numpy only inside the table functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np


# mixers/inception.py

def branch_channels(dim: int, branch_ratio: float) -> int:
    """Channels of each conv branch, rounded down as the reference does."""
    return int(dim * branch_ratio)


# mixers/focal.py

POST_NORM_EPS = 1e-5  # nn.LayerNorm's default in the official code; timm's FocalNet passes eps=1e-5 too


# mixers/hyena.py

def fft_conv1d_size(seq_len: int) -> int:
    return 2 * seq_len


# mixers/hornet.py

GF_LOCAL_KERNEL = 3


def gnconv_dims(dim: int, order: int) -> list[int]:
    """The widths d_0..d_{n-1} of the recursive gating, ascending (the official ``dims``)."""
    return [dim // 2 ** (order - 1 - k) for k in range(order)]


# mixers/sr_attention.py

SR_NORM_EPS = 1e-5  # nn.LayerNorm's default, what PVT and STM-Evaluation use on the reduced tokens


# mixers/dcnv3.py
Init = Literal["internimage", "stm"]


# mixers/transnext.py

CPB_HIDDEN = 512


TEMPERATURE_INIT = 1 / 0.24  # softplus(temperature) at init


def pool_centres(n: int, p: int) -> np.ndarray:
    """Twice the centre of each cell of a 1-D adaptive average pool of 0..n-1 to p cells (integers)."""
    import numpy as np  # the tables only; importing the config stays light

    starts = np.array([(i * n) // p for i in range(p)])
    ends = np.array([-((-(i + 1) * n) // p) for i in range(p)])
    return starts + ends - 1


def axis_offsets(n: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique doubled offsets (query - pooled key) along one axis, and each (query, key) pair's index."""
    import numpy as np  # the tables only; importing the config stays light

    doubled = 2 * np.arange(n)[:, None] - pool_centres(n, p)[None, :]
    unique, inverse = np.unique(doubled, return_inverse=True)
    return unique, inverse.reshape(n, p)


def window_tables(height: int, width: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(padding mask (N, k²) bool: True where the window position falls in the padding, valid counts (N,))."""
    import numpy as np  # the tables only; importing the config stays light

    r = window // 2
    offsets = np.arange(window) - r
    rows = np.arange(height)[:, None] + offsets[None, :]  # (H, k)
    cols = np.arange(width)[:, None] + offsets[None, :]  # (W, k)
    row_ok = (rows >= 0) & (rows < height)
    col_ok = (cols >= 0) & (cols < width)
    valid = row_ok[:, None, :, None] & col_ok[None, :, None, :]  # (H, W, k, k), row-major offsets as unfold
    valid = valid.reshape(height * width, window * window)
    return ~valid, valid.sum(-1)


# mixers/swin.py

SHIFT_MASK_VALUE = -100.0  # the official additive mask between tokens of different regions (not -inf)


# channel/convglu.py

DW_KERNEL = 3
