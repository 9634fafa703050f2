"""FocalNet's focal modulation (``Focal``), InceptionNeXt's Inception depthwise conv (``Inception``), GFNet's global
filter (``GF``) and PoolFormer's pooling (``Pool``): equal outputs to timm's modules with copied weights (to a
reference written from GFNet's equations for GF), parameter/MAC closed forms of shared/reference
hornet-transnext-others.md §3, estimate == counted cross-check, position checks with clear errors."""

import math
from functools import partial

import pytest
import torch
from timm.layers import LayerNorm2d
from timm.models.focalnet import FocalModulation as TimmFocalModulation
from timm.models.inception_next import InceptionDWConv2d as TimmInceptionDWConv2d
from timm.models.metaformer import Pooling as TimmPooling

import composer
from composer.cost import count_macs, count_module
from composer.mixers import MIXERS, MixerContext, resolve_symbol
from composer.mixers.basic import PoolingConfig
from composer.mixers.focal import FocalModulationConfig
from composer.mixers.gfnet import GlobalFilterConfig
from composer.mixers.inception import InceptionDWConfig
from composer.nn.mixers.gfnet import GlobalFilter

TINY = {"input_size": 64, "num_classes": 10, "widths": [32, 64, 96, 128], "depths": [1, 1, 2, 1]}


def copy_weights(ours: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Load the reference's state dict into ours: the keys and shapes must be exactly the same."""
    ours.load_state_dict(reference.state_dict(), strict=True)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------- Focal


FOCAL_CASES = [
    dict(focal_level=2, focal_window=3),  # FocalNet-T/S/B srf
    dict(focal_level=3, focal_window=3),  # lrf
    dict(focal_level=3, focal_window=3, normalize_modulator=True),  # as focalnet_large_fl3/fl4
    dict(focal_level=3, focal_window=5, normalize_modulator=True, use_post_norm=True, bias=False),
    dict(focal_level=1, focal_window=7, focal_factor=4),
]


@pytest.mark.parametrize("kwargs", FOCAL_CASES, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()))
def test_focal_modulation_equals_timm_with_copied_weights(kwargs):
    torch.manual_seed(0)
    dim = 24
    config = FocalModulationConfig(**kwargs)
    ours = config.build(MixerContext(dim, 9, 7))
    # timm's FocalNet models pass LayerNorm2d(eps=1e-5), the official nn.LayerNorm default
    reference = TimmFocalModulation(dim, kwargs["focal_window"], kwargs["focal_level"],
                                    focal_factor=kwargs.get("focal_factor", 2), bias=kwargs.get("bias", True),
                                    use_post_norm=kwargs.get("use_post_norm", False),
                                    normalize_modulator=kwargs.get("normalize_modulator", False),
                                    norm_layer=partial(LayerNorm2d, eps=1e-5)).eval()
    with torch.no_grad():  # non-trivial norm affine, so a wrong eps or a missing norm would show
        for p in reference.parameters():
            p.normal_(0, 0.3)
    copy_weights(ours, reference)
    x = torch.randn(2, dim, 9, 7)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-6)
    assert n_params(ours) == n_params(reference) == config.cost(MixerContext(dim, 9, 7)).params


def test_focal_global_context_comes_from_the_last_level():
    # with every gate but the global one at 0 and an identity modulator, the output is q * GELU(mean(last level));
    # the last level of a 1x1-kernel stack with weights w1, w2 is GELU(w2 * GELU(w1 * ctx))
    dim = 4
    module = FocalModulationConfig(focal_level=2, focal_window=1, focal_factor=0).build(MixerContext(dim, 5, 5))
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        module.f.weight[:2 * dim, :, 0, 0] = torch.eye(dim).repeat(2, 1)  # q = ctx = x
        module.f.bias[2 * dim + 2] = 1.0  # global gate = 1, level gates = 0
        module.focal_layers[0][0].weight.fill_(2.0)
        module.focal_layers[1][0].weight.fill_(-0.5)
        module.h.weight[:, :, 0, 0] = torch.eye(dim)
        module.proj.weight[:, :, 0, 0] = torch.eye(dim)
    x = torch.randn(1, dim, 5, 5)
    gelu = torch.nn.functional.gelu
    last = gelu(-0.5 * gelu(2.0 * x))
    torch.testing.assert_close(module(x), x * gelu(last.mean((2, 3), keepdim=True)))


@pytest.mark.parametrize("level,window,factor,bias,post_norm", [(2, 3, 2, True, False), (3, 3, 2, True, True),
                                                                  (4, 5, 2, False, False), (0, 3, 2, True, False)])
def test_focal_params_and_macs_closed_form(level, window, factor, bias, post_norm):
    c, h, w = 48, 14, 14
    n = h * w
    config = FocalModulationConfig(focal_level=level, focal_window=window, focal_factor=factor, bias=bias,
                                   use_post_norm=post_norm)
    kernels = [window + factor * i for i in range(level)]
    b = int(bias)
    # shared/reference §3.1 (there with bias): C(2C+L+1) + (2C+L+1) + C·Σk² + 2(C²+C)
    params = (c * (2 * c + level + 1) + (2 * c + level + 1) * b + c * sum(k * k for k in kernels)
              + c * c + c * b + c * c + c + (2 * c if post_norm else 0))
    macs = n * (c * (2 * c + level + 1) + c * sum(k * k for k in kernels) + 2 * c * c)
    ctx = MixerContext(c, h, w)
    cost = config.cost(ctx)
    module = config.build(ctx)
    assert (cost.params, cost.macs, cost.fft_macs) == (params, macs, 0)
    assert n_params(module) == params
    assert count_module(module, torch.randn(1, c, h, w)).macs == macs


def test_focal_tiny_srf_block_cost_matches_reference_closed_form():
    # FocalNet-T srf stage 1: C = 96, L = 2, kernels 3 and 5, 56x56 map
    cost = FocalModulationConfig().cost(MixerContext(96, 56, 56))
    assert cost.params == 96 * 195 + 195 + 96 * (9 + 25) + 2 * (96 * 96 + 96)
    assert cost.macs == 56 * 56 * (96 * 195 + 96 * 34 + 2 * 96 * 96)


# ---------------------------------------------------------------------------------------------- Inception


@pytest.mark.parametrize("dim,square,band,ratio,hw", [
    (64, 3, 11, 0.125, (14, 14)),  # InceptionNeXt-T/S/B
    (40, 3, 9, 0.25, (9, 7)),  # atto
    (20, 3, 11, 0.125, (6, 5)),  # int(2.5) = 2 channels per branch; bands longer than the map
    (96, 5, 11, 0.125, (2, 2)),  # a 2x2 map (stage 4 at input 64): 11-tap bands over zero padding
])
def test_inception_dw_equals_timm_with_copied_weights(dim, square, band, ratio, hw):
    torch.manual_seed(0)
    config = InceptionDWConfig(square_kernel_size=square, band_kernel_size=band, branch_ratio=ratio)
    ctx = MixerContext(dim, *hw)
    config.check(ctx)
    ours = config.build(ctx)
    reference = TimmInceptionDWConv2d(dim, square, band, ratio).eval()
    copy_weights(ours, reference)
    x = torch.randn(2, dim, *hw)
    assert torch.equal(ours(x), reference(x))
    g = int(dim * ratio)  # §3.2: params g(k_s² + 1) + 2g(k_b + 1), MACs N·g(k_s² + 2k_b)
    params = g * (square ** 2 + 1) + 2 * g * (band + 1)
    assert n_params(ours) == n_params(reference) == config.cost(ctx).params == params
    assert config.cost(ctx).macs == hw[0] * hw[1] * g * (square ** 2 + 2 * band)
    assert count_module(ours, x[:1]).macs == config.cost(ctx).macs


def test_inception_identity_group_comes_first_and_is_untouched():
    dim = 16  # g = 2: channels 0..9 identity, 10..11 square, 12..13 1xk band, 14..15 kx1 band
    module = InceptionDWConfig().build(MixerContext(dim, 8, 8))
    with torch.no_grad():
        for conv in (module.dwconv_hw, module.dwconv_w, module.dwconv_h):
            conv.weight.zero_()
            conv.bias.fill_(7.0)
    x = torch.randn(1, dim, 8, 8)
    y = module(x)
    assert torch.equal(y[:, :10], x[:, :10])
    assert (y[:, 10:] == 7.0).all()


# ---------------------------------------------------------------------------------------------- Pool


@pytest.mark.parametrize("pool_size,hw", [(3, (7, 7)), (3, (5, 9)), (5, (6, 4)), (7, (3, 3))])
def test_pooling_equals_timm(pool_size, hw):
    config = PoolingConfig(pool_size=pool_size)
    ctx = MixerContext(8, *hw)
    ours, reference = config.build(ctx), TimmPooling(pool_size)
    x = torch.randn(2, 8, *hw)
    assert torch.equal(ours(x), reference(x))
    assert n_params(ours) == 0 and config.cost(ctx).params == config.cost(ctx).macs == 0


# ---------------------------------------------------------------------------------------------- GF


def global_filter_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """GFNet's equations with explicit DFT sums, in float64, on (B, H, W, C) with weight (H, W//2+1, C, 2):
    X[u, v] = Σ_{m,n} x[m, n] e^{-2πi(um/H + vn/W)} / sqrt(HW) for v = 0..W//2, Y = X ⊙ K, and the real inverse
    y[m, n] = Re Σ_{u, v} c_v Y[u, v] e^{2πi(um/H + vn/W)} / sqrt(HW), where c_v = 2 counts the mirrored
    frequency W - v of a real signal's spectrum, and c_v = 1 for v = 0 and v = W/2 (even W), their own mirrors."""
    _, h, w, _ = x.shape
    half = w // 2 + 1
    m, n = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    u, v = torch.arange(h, dtype=torch.float64), torch.arange(half, dtype=torch.float64)
    fh = torch.exp(-2j * math.pi * torch.outer(u, m) / h)  # (u, m)
    fw = torch.exp(-2j * math.pi * torch.outer(v, n) / w)  # (v, n)
    x = x.to(torch.complex128)
    spectrum = torch.einsum("um,vn,bmnc->buvc", fh, fw, x) / math.sqrt(h * w)
    spectrum = spectrum * torch.complex(weight[..., 0].double(), weight[..., 1].double())
    c = torch.full((half,), 2.0, dtype=torch.float64)
    c[0] = 1.0
    if w % 2 == 0:
        c[-1] = 1.0
    y = torch.einsum("um,vn,v,buvc->bmnc", fh.conj(), fw.conj(), c.to(torch.complex128), spectrum)
    return y.real / math.sqrt(h * w)


@pytest.mark.parametrize("hw", [(8, 8), (7, 5), (6, 9)])
def test_global_filter_equals_the_dft_equations(hw):
    torch.manual_seed(0)
    module = GlobalFilterConfig().build(MixerContext(6, *hw))
    with torch.no_grad():
        module.complex_weight.normal_()  # far from identity, so the Hermitian handling matters
    x = torch.randn(2, *hw, 6)
    expected = global_filter_reference(x, module.complex_weight.detach())
    torch.testing.assert_close(module(x).double(), expected, rtol=0, atol=1e-5)


def test_global_filter_identity_filter_gives_the_input_and_a_dc_filter_the_mean():
    module = GlobalFilter(5, 6, 7)
    assert module.complex_weight.shape == (6, 7 // 2 + 1, 5, 2)
    x = torch.randn(3, 6, 7, 5)
    with torch.no_grad():
        module.complex_weight.zero_()
        module.complex_weight[..., 0] = 1.0  # K = 1 + 0i everywhere: ortho rfft2 then irfft2 is the identity
        torch.testing.assert_close(module(x), x, rtol=0, atol=1e-5)
        module.complex_weight.zero_()
        module.complex_weight[0, 0, :, 0] = 1.0  # only the DC term: the per-channel mean over the map
        torch.testing.assert_close(module(x), x.mean((1, 2), keepdim=True).expand_as(x), rtol=0, atol=1e-6)
        module.complex_weight[0, 0, :, 0] = torch.arange(5.0)  # each channel its own filter
        expected = (x.mean((1, 2), keepdim=True) * torch.arange(5.0)).expand_as(x)
        torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-5)


def test_global_filter_runs_in_float32_and_keeps_the_input_dtype():
    module = GlobalFilter(4, 8, 8)
    x = torch.randn(2, 8, 8, 4)
    y = module(x.bfloat16())  # torch has no bfloat16 FFT on CPU: this only works because it runs in float32
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, module(x.bfloat16().float()).bfloat16())
    assert module.complex_weight.dtype == torch.float32


def test_global_filter_init_and_params():
    torch.manual_seed(0)
    ctx = MixerContext(64, 56, 56)
    module = GlobalFilterConfig().build(ctx)
    assert n_params(module) == GlobalFilterConfig().cost(ctx).params == 2 * 64 * 56 * 29  # GFNet-H-Ti stage 1
    assert abs(module.complex_weight.std().item() - 0.02) < 0.001  # randn·0.02
    assert abs(module.complex_weight.mean().item()) < 0.001


@pytest.mark.parametrize("c,h,w", [(32, 16, 16), (96, 14, 14), (20, 7, 5)])
def test_global_filter_fft_cost_is_counted_exactly(c, h, w):
    ctx = MixerContext(c, h, w)
    cost = GlobalFilterConfig().cost(ctx)
    # rfft2 and irfft2, each a real 2-D FFT of N = HW points on C channels: 1.25·N·log2 N MAC-equivalents
    n = h * w
    assert cost.fft_macs == pytest.approx(2 * 1.25 * n * math.log2(n) * c, abs=1)
    assert cost.macs == 0
    counted = count_module(GlobalFilterConfig().build(ctx), torch.randn(1, h, w, c))
    assert (counted.macs, counted.fft_macs, counted.unknown_ops) == (0, cost.fft_macs, {})


def test_global_filter_rejects_another_map_size():
    model = composer.compose(dict(TINY, layout="Conv-Conv-GF-GF"))
    with pytest.raises(ValueError, match="compiled for a 4x4 map but got 6x6; compile the spec at this input_size"):
        model(torch.randn(1, 3, 96, 96))


def test_gf_symbol_is_gfnet_not_hornet_gf():
    for macro in ("metaformer", "hornet", "pvt"):
        assert resolve_symbol("GF", macro).type == "global_filter"
    assert resolve_symbol("Focal", "metaformer").type == "focal_modulation"
    assert resolve_symbol("Inception", "hornet").type == "inception_dw"
    assert MIXERS["global_filter"].layout == "channels_last"


# ---------------------------------------------------------------------------------------------- specs


SPECS = [
    dict(TINY, layout="Focal-Inception-GF-A"),
    dict(TINY, layout=["GF", ["Focal", "Inception"], ["Inception", "GF"], "Focal"],
         depths=[1, 2, 2, 1], mixers={"Focal": {"focal_level": [1, 2, 3, 3], "normalize_modulator": True}}),
    dict(TINY, macro="hornet", layout="GF-Focal-Inception-gnConv", mixers={"gnConv": {"order": 3}}),
    dict(TINY, macro="hornet", layout=["Inception", "GF", ["Focal", "gnConv"], "GF"], mixers={
        "Inception": {"band_kernel_size": 7, "branch_ratio": 0.25}, "Focal": {"use_post_norm": True}}),
    dict(TINY, macro="pvt", layout="Focal-Inception-GF-GF"),
]


@pytest.mark.parametrize("spec", SPECS, ids=["metaformer", "metaformer-per-block", "hornet", "hornet-per-block",
                                             "pvt"])
def test_layout_symbols_estimate_build_run_and_count_exactly(spec):
    est = composer.estimate(spec)
    model = composer.compose(spec)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    model(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    counted = count_macs(spec)
    assert counted.unknown_ops == {}
    assert (counted.macs, counted.fft_macs) == (est.macs, est.fft_macs)
    assert est.fft_macs > 0
    assert n_params(model) == est.params


def test_layout_metaformer_focal_inception_gf_a_stage_costs():
    est = composer.estimate(dict(TINY, layout="Focal-Inception-GF-A"))
    focal = FocalModulationConfig().cost(MixerContext(32, 16, 16))
    inception = InceptionDWConfig().cost(MixerContext(64, 8, 8))
    gf = GlobalFilterConfig().cost(MixerContext(96, 4, 4))
    base = composer.estimate(dict(TINY, layout="Id-Id-Id-A"))
    assert est.params - base.params == focal.params + inception.params + 2 * gf.params
    assert est.macs - base.macs == focal.macs + inception.macs
    assert est.fft_macs == 2 * gf.fft_macs


# ---------------------------------------------------------------------------------------------- checks


@pytest.mark.parametrize("mixers,message", [
    ({"Focal": {"focal_window": 4}},
     r"stage 0 \(Focal, width 32, 16x16 map\): focal kernels \[4, 6\] \(focal_window 4 \+ focal_factor 2 per level\) "
     r"include even sizes \[4, 6\]; 'same' padding needs odd kernels: use an odd focal_window and an even "
     r"focal_factor"),
    ({"Focal": {"focal_factor": 1}}, r"mixers\.Focal\.focal_factor: .*focal kernels \[3, 4\] .*even sizes \[4\]"),
    ({"Inception": {"band_kernel_size": 10}},
     r"mixers\.Inception\.band_kernel_size: stage 1 \(Inception, width 64, 8x8 map\): band_kernel_size must be odd "
     r"so that 'same' padding keeps the feature map, got 10"),
    ({"Inception": {"square_kernel_size": 2}}, r"square_kernel_size must be odd .* got 2"),
    ({"Inception": {"branch_ratio": 0.5}},
     r"mixers\.Inception\.branch_ratio: .*branch_ratio 0\.5 gives 3 conv branches of 32 channels, more than the "
     r"width 64; use a branch_ratio of at most 1/3"),
    ({"Inception": {"branch_ratio": 0.01}},
     r"branch_ratio 0\.01 leaves int\(64·0\.01\) = 0 channels per conv branch; use a branch_ratio of at least 1/64"),
])
def test_position_checks_name_the_field(mixers, message):
    with pytest.raises(composer.SpecError, match=message):
        composer.estimate(dict(TINY, layout="Focal-Inception-GF-A", mixers=mixers))


def test_focal_check_passes_odd_kernels_and_the_layout_hint_names_the_field():
    FocalModulationConfig(focal_level=3, focal_window=1, focal_factor=4).check(MixerContext(8, 2, 2))
    FocalModulationConfig(focal_level=1, focal_window=3, focal_factor=1).check(MixerContext(8, 2, 2))  # one kernel
    # a user-defined symbol: the error points at its field
    spec = dict(TINY, layout="F4-Inception-GF-A", mixers={"F4": {"type": "focal_modulation", "focal_window": 2}})
    with pytest.raises(composer.SpecError, match=r"mixers\.F4\.focal_window: stage 0 \(F4, .*focal kernels \[2, 4\]"):
        composer.estimate(spec)


def test_schema_rejects_bad_values():
    with pytest.raises(composer.SpecError, match="branch_ratio"):
        composer.estimate(dict(TINY, layout="Focal-Inception-GF-A", mixers={"Inception": {"branch_ratio": 0}}))
    with pytest.raises(composer.SpecError, match="focal_level"):
        composer.estimate(dict(TINY, layout="Focal-Inception-GF-A", mixers={"Focal": {"focal_level": -1}}))
    with pytest.raises(composer.SpecError, match="extra|not permitted|unknown"):
        composer.estimate(dict(TINY, layout="Focal-Inception-GF-A", mixers={"GF": {"size": 4}}))


def test_configs_document_themselves():
    for cls in (FocalModulationConfig, InceptionDWConfig, GlobalFilterConfig):
        assert cls.summary and cls.paper and cls.cost_formula
