"""The plugin's own tests: run after `pip install ./examples/composer-msaconv` (composer's .ci/run does).

The module is compared with a reference written from the official operator's definition (its CUDA kernel reads
zero outside the map; scores over the k x k window, softmax over the window, the weighted sum of values, the
residual, the k x k conv and the ReLU), loop by loop, not with the module's own unfold / matmul."""

import subprocess
import sys

import pytest
import torch
from composer_msaconv.module import MSAConv
from torch.nn import functional as F

import composer
from composer.mixers import MIXERS, SYMBOLS


def reference(module: MSAConv, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    k, d = module.kernel_size, module.dilation
    r = k // 2
    q, key, v = F.conv2d(x, module.qkv_conv.weight, module.qkv_conv.bias).chunk(3, dim=1)
    scores = torch.zeros(b, k * k, h, w)
    gathered_v = torch.zeros(b, k * k, c, h, w)
    for i in range(k):
        for j in range(k):
            dy, dx = (i - r) * d, (j - r) * d
            shifted_k = torch.zeros_like(key)
            shifted_v = torch.zeros_like(v)
            ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
            ys_src, xs_src = slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx))
            shifted_k[:, :, ys, xs] = key[:, :, ys_src, xs_src]
            shifted_v[:, :, ys, xs] = v[:, :, ys_src, xs_src]
            scores[:, i * k + j] = (q * shifted_k).sum(1) * c ** -0.5
            gathered_v[:, i * k + j] = shifted_v
    attn = scores.softmax(dim=1)
    out = (attn.unsqueeze(2) * gathered_v).sum(1) + x
    return torch.relu(F.conv2d(out, module.mlp.weight, padding=k // 2))


@pytest.mark.parametrize("kernel_size, dilation", [(3, 1), (3, 2), (5, 1), (5, 3)])
def test_module_equals_the_reference(kernel_size, dilation):
    torch.manual_seed(0)
    module = MSAConv(12, kernel_size, dilation).eval()
    x = torch.randn(2, 12, 9, 7)
    torch.testing.assert_close(module(x), reference(module, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim, kernel_size", [(8, 3), (30, 5), (64, 3)])
def test_parameters_follow_the_cost_formula(dim, kernel_size):
    module = MSAConv(dim, kernel_size)
    assert sum(p.numel() for p in module.parameters()) == 3 * dim * dim + 3 * dim + kernel_size ** 2 * dim ** 2


def test_registered_through_the_entry_point():
    assert "msa_conv" in MIXERS and MIXERS.origin("msa_conv").startswith("plugin 'msaconv'")
    assert SYMBOLS["MSA"][None].type == "msa_conv"


def test_the_preset_builds_with_the_estimated_parameters():
    est = composer.estimate("msa_caformer_s18")
    model = composer.compose("msa_caformer_s18")
    assert sum(p.numel() for p in model.parameters()) == est.params


def test_the_conformance_kit_passes():
    out = subprocess.run([sys.executable, "-m", "composer.cli", "check-mixer", "MSA"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "passed:" in out.stdout and "0 failed" in out.stdout
