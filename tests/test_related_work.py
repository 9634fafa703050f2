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
