"""The related-work families as whole published models (issue 17): InceptionNeXt's MetaNeXt macro and FocalNet's
macro, their presets with timm's exact parameter counts, MACs within 1% of the reference and outputs equal to
timm's for the same weights; any mixer in their token-mixer slots."""

from __future__ import annotations

import pytest
import torch

import composer
from composer.cost import count_macs
from composer.weights import load

timm = pytest.importorskip("timm")

# ../shared/reference/targets.md: params exact (timm 1.0.31), GMACs = FlopCounterMode / 2 at 224
INCEPTION_NEXT = {
    "inception_next_atto": (4_156_520, 0.503),
    "inception_next_tiny": (28_055_680, 4.189),
    "inception_next_small": (49_374_016, 8.356),
    "inception_next_base": (86_672_136, 14.841),
}


FOCALNET = {
    "focalnet_tiny_srf": (28_427_116, 4.403),
    "focalnet_tiny_lrf": (28_647_928, 4.475),
    "focalnet_small_srf": (49_891_216, 8.599),
    "focalnet_base_srf": (88_148_144, 15.241),
}


@pytest.mark.parametrize("preset", [*INCEPTION_NEXT, *FOCALNET])
def test_params_exact_and_macs_within_1_percent(preset):
    params, gmacs = {**INCEPTION_NEXT, **FOCALNET}[preset]
    est = composer.estimate(preset)
    assert est.params == params
    assert abs(est.macs / 1e9 - gmacs) / gmacs < 0.01


@pytest.mark.parametrize("preset", ["inception_next_atto", "focalnet_tiny_lrf"])
def test_macs_are_the_flop_counters(preset):
    """The closed forms against FlopCounterMode on the built model (meta device)."""
    assert count_macs(preset).macs == composer.estimate(preset).macs


@pytest.mark.parametrize("preset, size", [("inception_next_atto", 224), ("inception_next_tiny", 224),
                                          ("inception_next_small", 96), ("inception_next_base", 96),
                                          ("focalnet_tiny_srf", 224), ("focalnet_tiny_lrf", 224),
                                          ("focalnet_small_srf", 96), ("focalnet_small_lrf", 96),
                                          ("focalnet_base_srf", 96), ("focalnet_base_lrf", 96)])
def test_equals_timm_for_the_same_weights(preset, size):
    torch.manual_seed(0)
    reference = timm.create_model(preset).eval()
    model = composer.compose(preset).eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    with torch.no_grad():   # trained-like statistics, so the BatchNorms do something
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    load(model, reference.state_dict(), source="timm")   # strict: every key maps
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=0)
        ours = model.forward_intermediates(x, intermediates_only=True)
        # FocalNet's final map norm is composer's stages.3.norm: the last stage map is normed, as timm's is with
        # norm=True (MetaNeXt has no final norm: norm changes nothing there)
        theirs = reference.forward_intermediates(x, norm=True, intermediates_only=True)
        assert all(torch.allclose(a, b, atol=1e-5, rtol=0) for a, b in zip(ours, theirs))


def test_timms_inception_next_head_keys_map_to_composers_mlp_head():
    reference = timm.create_model("inception_next_atto")
    keys = set(reference.state_dict())
    assert {"head.fc1.weight", "head.norm.weight", "head.fc2.weight"} <= keys
    model = composer.compose("inception_next_atto")
    assert {"head.fc.fc1.weight", "head.fc.norm.weight", "head.fc.fc2.weight"} <= set(model.state_dict())
    body = {k for k in model.state_dict() if not k.startswith("head.")}
    assert body == {k for k in keys if not k.startswith("head.")}


def test_timms_focalnet_keys_map_to_composers_stages():
    reference = timm.create_model("focalnet_tiny_srf")
    model = composer.compose("focalnet_tiny_srf")
    load(model, reference.state_dict(), source="timm")   # strict
    assert "stages.3.norm.weight" in model.state_dict() and "norm.weight" in reference.state_dict()
    assert {k.replace("layers.", "stages.", 1) for k in reference.state_dict() if k.startswith("layers.")} <= set(
        model.state_dict())


@pytest.mark.parametrize("preset", ["inception_next_atto", "focalnet_tiny_srf"])
@pytest.mark.parametrize("layout", ["A-A-A-A", "Hpx-Hpx-Hpx-Hpx", "Conv-Conv-gnConv-gnConv", "SR-SR-SR-SR"])
def test_any_mixer_in_the_token_mixer_slot(preset, layout):
    """Channels-last mixers (attention), FFT mixers and position-embedding mixers in the MetaNeXt and FocalNet
    blocks: the estimate is the built model's, and a forward and backward run."""
    spec = {"extends": preset, "layout": layout, "input_size": 64, "widths": [64, 128, 256, 512],
            "depths": [1, 1, 1, 1], "mixers": {}}
    model = composer.compose(spec)
    assert sum(p.numel() for p in model.parameters()) == composer.estimate(spec).params
    out = model(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    assert out.shape == (2, 1000)


# -- LowFormer --------------------------------------------------------------------------------------------------

LOWFORMER = {   # ../shared/reference/targets.md (the official lowformer_model.py + configs/cls/imagenet/b*.yaml)
    "lowformer_b0": (14_100_472, 0.944),
    "lowformer_b1": (17_936_312, 1.411),
    "lowformer_b15": (33_982_028, 2.574),
    "lowformer_b3": (57_086_920, 6.099),
}


@pytest.mark.parametrize("preset", LOWFORMER)
def test_lowformer_params_exact_and_macs_within_1_percent(preset):
    params, gmacs = LOWFORMER[preset]
    est = composer.estimate(preset)
    assert est.params == params
    assert abs(est.macs / 1e9 - gmacs) / gmacs < 0.01
    assert sum(p.numel() for p in composer.compose(preset).parameters()) == params


@pytest.mark.parametrize("preset", ["lowformer_b0", "lowformer_b3"])
def test_lowformer_macs_are_the_flop_counters(preset):
    """Transposed convs are counted per input position and SDPA as 2·n²·D, as FlopCounterMode counts them."""
    assert count_macs(preset).macs == composer.estimate(preset).macs


def _trained_like(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("preset, size", [("lowformer_b0", 224), ("lowformer_b1", 96), ("lowformer_b15", 96),
                                          ("lowformer_b3", 96), ("lowformer_b0", 100)])
def test_lowformer_equals_timm_for_the_same_weights(preset, size):
    """timm 1.0.31's lowformer.py (a port of the official code): its state dict loads strictly, outputs and
    stage maps equal (an odd map at 100 px: the transposed conv overshoots and is cropped, as in timm)."""
    torch.manual_seed(0)
    reference = _trained_like(timm.create_model(preset).eval())
    model = composer.compose({"extends": preset, "input_size": size}).eval()
    load(model, reference.state_dict(), source="timm")
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=0)
        ours = model.forward_intermediates(x, intermediates_only=True)
        theirs = reference.forward_intermediates(x, intermediates_only=True)
    # composer's stage 0 is the official stage0 (stride 2, the stem's blocks); timm folds it into its stem
    assert [o.shape[1] for o in ours[1:]] == [t.shape[1] for t in theirs]
    assert all(torch.allclose(a, b, atol=1e-5, rtol=0) for a, b in zip(ours[1:], theirs))


# The official LowFormer modules' structure (altair199797/LowFormer lowformer_model.py), written here from the
# paper and that file's module tree, so that its state-dict keys and its forward (attention as matmul + softmax)
# are what composer.weights.load(source="lowformer") is tested against without the official code.

class _ConvLayer(torch.nn.Module):
    def __init__(self, cin, cout, k=3, stride=1, groups=1, bias=False, norm=True, act=True):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)
        self.norm = torch.nn.BatchNorm2d(cout) if norm else None
        self.act = torch.nn.Hardswish() if act else None

    def forward(self, x):
        x = self.conv(x)
        x = self.norm(x) if self.norm is not None else x
        return self.act(x) if self.act is not None else x


class _OpSequential(torch.nn.Module):
    def __init__(self, ops):
        super().__init__()
        self.op_list = torch.nn.ModuleList(ops)

    def forward(self, x):
        for op in self.op_list:
            x = op(x)
        return x


class _Residual(torch.nn.Module):
    def __init__(self, main, shortcut=True):
        super().__init__()
        self.main, self.shortcut = main, shortcut

    def forward(self, x):
        return self.main(x) + x if self.shortcut else self.main(x)


class _FusedMBConv(torch.nn.Module):
    def __init__(self, cin, cout, ratio, stride=1, bias=False):
        super().__init__()
        mid = round(cin * ratio)
        self.spatial_conv = _ConvLayer(cin, mid, 3, stride, bias=bias)
        self.point_conv = _ConvLayer(mid, cout, 1, act=False)

    def forward(self, x):
        return self.point_conv(self.spatial_conv(x))


class _MBConv(torch.nn.Module):
    def __init__(self, c, ratio):
        super().__init__()
        mid = round(c * ratio)
        self.inverted_conv = _ConvLayer(c, mid, 1, bias=True, norm=False)
        self.depth_conv = _ConvLayer(mid, mid, 3, groups=mid, bias=True, norm=False)
        self.point_conv = _ConvLayer(mid, c, 1, act=False)

    def forward(self, x):
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class _ConvAttention(torch.nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        self.heads = int(max(1, (c * 0.5) // 30))
        self.head_dim = int((c // self.heads) * 0.5)
        inner, k = self.heads * self.head_dim, 5 if stride > 1 else 3
        self.conv_proj = torch.nn.Sequential(torch.nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False),
                                             torch.nn.BatchNorm2d(c))
        self.pwise = torch.nn.Sequential(torch.nn.Conv2d(c, 3 * inner, 1, bias=False))
        self.o_proj = torch.nn.Identity()
        self.upsampling = (torch.nn.ConvTranspose2d(inner, c, 3, 1, 1) if stride == 1 else
                           torch.nn.ConvTranspose2d(inner, c, 2 * stride, stride, stride // 2))

    def forward(self, x):
        n, c, hh, ww = x.shape
        y = self.pwise(self.conv_proj(x))
        h, w = y.shape[-2:]
        q, k, v = y.reshape(n, self.heads, 3 * self.head_dim, h * w).permute(0, 1, 3, 2).chunk(3, dim=-1)
        att = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim ** 0.5, dim=-1) @ v
        o = self.o_proj(att.permute(0, 1, 3, 2).reshape(n, self.heads * self.head_dim, h, w))
        return self.upsampling(o)[:, :, :hh, :ww]


class _LowFormerBlock(torch.nn.Module):
    def __init__(self, c, stride):
        super().__init__()
        attention = _Residual(torch.nn.Sequential(torch.nn.GroupNorm(1, c), _ConvAttention(c, stride)))
        mlp = _Residual(torch.nn.Sequential(torch.nn.GroupNorm(1, c), torch.nn.Conv2d(c, 4 * c, 1), torch.nn.GELU(),
                                            torch.nn.Conv2d(4 * c, c, 1)))
        local = _FusedMBConv(c, c, 4, bias=True) if c < 256 else _MBConv(c, 4)
        self.total = torch.nn.Sequential(torch.nn.Sequential(attention, mlp), _Residual(local))

    def forward(self, x):
        return self.total(x)


class _LinearLayer(torch.nn.Module):
    def __init__(self, cin, cout, bias, norm):
        super().__init__()
        self.linear = torch.nn.Linear(cin, cout, bias)
        self.norm = torch.nn.LayerNorm(cout) if norm else None
        self.act = torch.nn.Hardswish() if norm else None

    def forward(self, x):
        x = self.linear(torch.flatten(x, 1))
        return self.act(self.norm(x)) if self.norm is not None else x


class _Backbone(torch.nn.Module):
    def __init__(self, widths, depths, stem_ratio, down_ratio):
        super().__init__()
        stem = [_ConvLayer(3, widths[0], 3, 2)] + [_Residual(_FusedMBConv(widths[0], widths[0], stem_ratio))
                                                   for _ in range(depths[0])]
        self.input_stem = _OpSequential(stem)
        stages, cin = [], widths[0]
        for i in (1, 2):
            ops = [_Residual(_FusedMBConv(cin if j == 0 else widths[i], widths[i], down_ratio if j == 0 else 4,
                                          2 if j == 0 else 1), shortcut=j > 0) for j in range(depths[i])]
            stages.append(_OpSequential(ops))
            cin = widths[i]
        for i in (3, 4):
            ops = [_Residual(_FusedMBConv(cin, widths[i], down_ratio, 2), shortcut=False)]
            ops += [_LowFormerBlock(widths[i], 2 if i == 3 else 1) for _ in range(depths[i])]
            stages.append(_OpSequential(ops))
            cin = widths[i]
        self.stages = torch.nn.ModuleList(stages)

    def forward(self, x):
        x = self.input_stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class _OfficialLowFormer(torch.nn.Module):
    def __init__(self, widths, depths, stem_ratio, down_ratio, head=(1536, 1600), classes=1000):
        super().__init__()
        self.backbone = _Backbone(widths, depths, stem_ratio, down_ratio)
        self.head = _OpSequential([_ConvLayer(widths[-1], head[0], 1), torch.nn.AdaptiveAvgPool2d(1),
                                   _LinearLayer(head[0], head[1], False, True), _LinearLayer(head[1], classes, True,
                                                                                              False)])

    def forward(self, x):
        return self.head(self.backbone(x))


@pytest.mark.parametrize("preset, official", [
    ("lowformer_b0", ([16, 32, 64, 128, 256], [0, 1, 1, 3, 4], 2, 4, (1536, 1600))),
    ("lowformer_b15", ([20, 40, 80, 160, 320], [0, 1, 1, 6, 6], 2, 6, (2304, 2560))),
    ("lowformer_b3", ([32, 64, 128, 256, 512], [1, 2, 3, 6, 6], 4, 6, (1536, 1600))),
])
def test_official_lowformer_keys_load_with_equal_outputs(preset, official):
    """The official key layout (backbone.input_stem.op_list.*, backbone.stages.i.op_list.j with .total.*,
    conv_proj.0 / .1, pwise.0, head.op_list.*) maps onto composer's, and the official forward is composer's."""
    widths, depths, stem_ratio, down_ratio, head = official
    torch.manual_seed(0)
    reference = _trained_like(_OfficialLowFormer(widths, depths, stem_ratio, down_ratio, head).eval())
    model = composer.compose({"extends": preset, "input_size": 96}).eval()
    assert sum(p.numel() for p in reference.parameters()) == LOWFORMER[preset][0]
    state = reference.state_dict()
    assert "backbone.stages.3.op_list.1.total.0.0.main.1.conv_proj.0.weight" in state
    load(model, state, source="lowformer")   # strict
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=0)


def test_lowformer_any_mixer_in_the_token_mixer_slot():
    """Attention (channels-last), HyenaPixel and SR attention in the LowFormer block, lowtention elsewhere, and
    conv-block mixers forming the first stages: estimates are the built models', a forward and backward run."""
    for layout in ["FMB-MBConv-Conv-A-A", "FMB-FMB-Hpx-SR-Low", "Low-FMB-FMB-Low-Low"]:
        spec = {"extends": "lowformer_b0", "layout": layout, "input_size": 64, "widths": [16, 32, 64, 128, 256],
                "depths": [1, 1, 1, 1, 1], "mixers": {"Low": {"stride": [2, 2, 2, 2, 1]}}}
        model = composer.compose(spec)
        assert sum(p.numel() for p in model.parameters()) == composer.estimate(spec).params, layout
        assert count_macs(spec).macs == composer.estimate(spec).macs, layout
        out = model(torch.randn(2, 3, 64, 64))
        out.mean().backward()
        assert out.shape == (2, 1000)


def test_lowtention_works_in_other_macros():
    spec = {"extends": "caformer_s18", "layout": "Conv-Conv-Low-Low", "depths": [1, 1, 1, 1], "input_size": 64}
    model = composer.compose(spec)
    assert sum(p.numel() for p in model.parameters()) == composer.estimate(spec).params
    assert count_macs(spec).macs == composer.estimate(spec).macs
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)   # 2: the 1x1 reduced map of stage 3 in BatchNorm
