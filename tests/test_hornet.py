"""HorNet (gⁿConv mixer + hornet macro): the published specs compile to the official parameter counts and
MAC figures, the closed forms equal the counted cross-check, and gⁿConv has the reference's structure."""

import math

import pytest
import torch

import composer
from composer.cost import count_macs
from composer.mixers import MixerContext
from composer.mixers.hornet import GnConvConfig
from composer.nn.mixers.hornet import GlobalLocalFilter
from composer.weights import load

from conftest import SPECS

# shared/reference/targets.md: exact params of the official code and its fvcore GMACs. For GF the
# small/base figures include HorNet's own FFT term (calc_flops.py), subtracted below; tiny's is without it.
TARGETS = {
    "hornet_tiny_7x7": (22_409_512, 3.977, False), "hornet_tiny_gf": (22_991_848, 3.897, False),
    "hornet_small_7x7": (49_528_264, 8.826, False), "hornet_small_gf": (50_401_768, 8.734, True),
    "hornet_base_7x7": (87_256_680, 15.584, False), "hornet_base_gf": (88_421_352, 15.461, True),
}
BASE = {"tiny": 64, "small": 96, "base": 128}


def hornet_fft_term(b: int) -> int:
    """HorNet's calc_flops.py FFT handler (reference §1.6): per GF layer with C' = S/2 channels on an H x W map,
    (C'H)·W·ceil(log2(C'H)) for rfft2 plus (C'H)·(W/2+1)·ceil(log2(C'H)) for irfft2 (stages 3 and 4)."""
    total = 0
    for c, n, hw, depth in ((4 * b, 4, 14, 18), (8 * b, 5, 7, 2)):
        half = c * (2 - 2 ** (1 - n)) // 2
        rows = int(half * hw)
        total += depth * rows * (hw + hw // 2 + 1) * math.ceil(math.log2(rows))
    return total


def test_hornet_fft_term_reproduces_the_reference_tiny_figures():
    assert abs(3.897e9 + hornet_fft_term(64) - 3.914e9) < 0.0005e9


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_params_exact_and_macs_within_one_percent(name):
    params, gmacs, with_fft = TARGETS[name]
    est = composer.estimate(SPECS / f"{name}.yaml")
    assert est.params == params
    target = gmacs * 1e9 - (hornet_fft_term(BASE[name.split("_")[1]]) if with_fft else 0)
    assert abs(est.macs - target) / target < 0.01
    assert (est.fft_macs > 0) == name.endswith("_gf")


SMALL = """
macro: hornet
input_size: {size}
num_classes: 10
widths: [16, 32, 64, 128]
depths: [1, 1, 2, 1]
layout: gnConv-gnConv-gnConv-gnConv
mixers:
  gnConv: {{order: {order}, filter: {filter}, kernel_size: {kernel}}}
"""


def small_spec(size=64, order="[1, 3, 4, 5]", filter="[dw, gf, gf, gf]", kernel=7):
    return SMALL.format(size=size, order=order, filter=filter, kernel=kernel)


@pytest.mark.parametrize("source", [
    small_spec(), small_spec(size=72, order="[2, 2, 3, 4]", filter="gf", kernel=3),
    small_spec(size=100, order="[5, 4, 3, 2]", filter="dw", kernel=5),
    SPECS / "hornet_tiny_gf.yaml",
])
def test_analytic_cost_equals_the_counted_cross_check(source):
    counted = count_macs(source)  # strict: fails on any op without a formula
    est = composer.estimate(source)
    assert counted.unknown_ops == {}
    assert counted.macs == est.macs
    assert abs(counted.fft_macs - est.fft_macs) <= 1e-9 * max(est.fft_macs, 1.0)


@pytest.mark.parametrize("order, dims", [
    (1, [64]), (2, [32, 64]), (3, [16, 32, 64]), (4, [8, 16, 32, 64]), (5, [4, 8, 16, 32, 64]),
])
@pytest.mark.parametrize("filter", ["dw", "gf"])
def test_gnconv_channel_widths_equal_the_reference(order, dims, filter):
    ctx = MixerContext(64, 14, 14)
    module = GnConvConfig(order=order, filter=filter).build(ctx)
    assert module.dims == dims and sum(dims) == 64 * (2 - 2 ** (1 - order))
    assert module.proj_in.out_channels == 128 and module.proj_out.in_channels == 64
    assert [(pw.in_channels, pw.out_channels) for pw in module.pws] == list(zip(dims, dims[1:]))
    assert module.scale == pytest.approx(1 / 3)
    if filter == "dw":
        assert module.dwconv.groups == module.dwconv.out_channels == sum(dims)
        assert module.dwconv.kernel_size == (7, 7) and module.dwconv.bias is not None
    else:
        assert module.dwconv.dw.out_channels == sum(dims) // 2 and module.dwconv.dw.bias is None
        assert tuple(module.dwconv.complex_weight.shape) == (sum(dims) // 2, 14, 8, 2)
    params = sum(p.numel() for p in module.parameters())
    assert params == GnConvConfig(order=order, filter=filter).cost(ctx).params


def test_tiny_stage_widths_and_gf_filter_sizes_equal_the_reference():
    with torch.device("meta"):
        model = composer.compose(SPECS / "hornet_tiny_gf.yaml")
        model384 = composer.compose({**composer.load_spec(SPECS / "hornet_tiny_gf.yaml").model_dump(
            exclude_unset=True), "input_size": 384})
    sd, sd384 = model.state_dict(), model384.state_dict()
    for i, s in enumerate((96, 224, 480, 992)):
        assert model.stages[i].blocks[0].gnconv.dims[0] == 32 and sum(model.stages[i].blocks[0].gnconv.dims) == s
    assert sd["stages.2.blocks.0.gnconv.dwconv.complex_weight"].shape == (240, 14, 8, 2)
    assert sd["stages.3.blocks.0.gnconv.dwconv.complex_weight"].shape == (496, 7, 4, 2)
    assert sd384["stages.2.blocks.0.gnconv.dwconv.complex_weight"].shape == (240, 24, 13, 2)
    assert sd384["stages.3.blocks.0.gnconv.dwconv.complex_weight"].shape == (496, 12, 7, 2)
    block = {k.removeprefix("stages.3.blocks.1.") for k in sd if k.startswith("stages.3.blocks.1.")}
    assert block == {"norm1.weight", "norm1.bias", "gnconv.proj_in.weight", "gnconv.proj_in.bias",
                     "gnconv.dwconv.dw.weight", "gnconv.dwconv.complex_weight", "gnconv.dwconv.pre_norm.weight",
                     "gnconv.dwconv.pre_norm.bias", "gnconv.dwconv.post_norm.weight",
                     "gnconv.dwconv.post_norm.bias", "gnconv.proj_out.weight", "gnconv.proj_out.bias",
                     *(f"gnconv.pws.{k}.{p}" for k in range(4) for p in ("weight", "bias")),
                     "norm2.weight", "norm2.bias", "pwconv1.weight", "pwconv1.bias", "pwconv2.weight",
                     "pwconv2.bias", "gamma1", "gamma2"}


def test_official_key_names_load_through_the_hornet_source():
    model = composer.compose(small_spec())
    renames = [(r"stem.", "downsample_layers.0."), ("head.fc.", "head."), ("head.norm.", "norm.")]
    official = {}
    for key, value in model.state_dict().items():
        for ours, theirs in renames:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        else:
            parts = key.split(".")
            if parts[2] == "downsample":
                key = ".".join(["downsample_layers", parts[1], *parts[3:]])
            else:
                key = ".".join(["stages", parts[1], *parts[3:]])
        official[key] = value + 1
    load(model, official, source="hornet")
    assert torch.equal(model.stages[2].blocks[0].gamma1, official["stages.2.0.gamma1"])


def test_gf_interleaves_local_and_global_channels():
    gf = GlobalLocalFilter(8, 6, 4)
    with torch.no_grad():
        gf.dw.weight.zero_()
        gf.dw.weight[:, :, 1, 1] = 1  # identity local filter
        gf.complex_weight.zero_()
        gf.complex_weight[..., 0] = 1  # identity global filter
    x = torch.randn(2, 8, 6, 6)
    out = gf(x)
    xn = gf.pre_norm(x)
    torch.testing.assert_close(out[:, 0::2], xn[:, :4], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[:, 1::2], xn[:, 4:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("widths, order, filter, stage, needle", [
    ("[24, 48, 96, 200]", "[2, 3, 4, 5]", "dw", 3, "order"),
    ("[16, 34, 64, 128]", "[2, 3, 4, 5]", "dw", 1, "order"),  # 34 % 4
    ("[16, 36, 64, 128]", "[2, 3, 4, 5]", "[dw, gf, dw, dw]", 1, "filter"),  # 9 + 18 + 36 channels to halve
])
def test_order_not_dividing_the_width_is_a_spec_error(widths, order, filter, stage, needle):
    text = small_spec(order=order, filter=filter).replace("[16, 32, 64, 128]", widths)
    with pytest.raises(composer.SpecError) as info:
        composer.estimate(text)
    message = str(info.value)
    assert f"stage {stage}" in message and needle in message


def test_widths_divisible_by_every_order_compile():
    composer.estimate(small_spec(order="[2, 3, 4, 5]", filter="dw").replace("[16, 32, 64, 128]", "[24, 48, 96, 192]"))


def test_order_out_of_range_is_a_spec_error():
    with pytest.raises(composer.SpecError, match="order"):
        composer.estimate(small_spec(order="[1, 2, 3, 6]"))


def test_forward_backward_and_other_input_sizes():
    torch.manual_seed(0)
    model = composer.compose(small_spec(size=64))
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with torch.no_grad():  # the GF filters are resized to another input, as the official code does
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 10)
        assert [f.shape[1:] for f in model.forward_stages(torch.randn(1, 3, 64, 64))] == [
            (16, 16, 16), (32, 8, 8), (64, 4, 4), (128, 2, 2)]
