"""The MetaFormer baselines compile to the published models: exact params, MACs within 1% of the targets,
timm's state dicts load strictly, and outputs equal timm's."""

import pytest
import timm
import torch

import composer
from composer.cost import count_macs

from conftest import SPECS

# From shared/reference/targets.md: exact params of the official code, fvcore MACs (which also count
# LayerNorm, 0.3-0.7% above our convention). None: the model has no published MAC figure there.
TARGETS = {
    "convformer_s18": (26_774_448, 3.959), "caformer_s18": (26_341_656, 4.125),
    "convformer_s36": (40_012_152, 7.673), "caformer_s36": (39_297_102, 8.005),
    "convformer_m36": (57_051_640, 12.888), "caformer_m36": (56_204_878, 13.286),
    "convformer_b36": (99_882_616, 22.690), "caformer_b36": (98_753_614, 23.221),
    "poolformerv2_s12": (11_891_712, 1.825), "poolformerv2_s24": (21_341_464, 3.416),
    "identityformer_s12": (11_891_712, None), "randformer_s12": (12_127_010, None),
}
# Paper figures (rounded to 0.1 G) for the two sail-sg-only models.
PAPER_GMACS = {"identityformer_s12": 1.8, "randformer_s12": 1.9}
TIMM_NAMES = [n for n in TARGETS if n.startswith(("convformer", "caformer", "poolformerv2"))]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_params_and_macs_match_targets(name):
    params, gmacs = TARGETS[name]
    est = composer.estimate(SPECS / f"{name}.yaml")
    assert est.params == params
    if gmacs is not None:
        assert abs(est.macs / 1e9 - gmacs) / gmacs < 0.01
    else:
        assert round(est.macs / 1e9, 1) == PAPER_GMACS[name]
    assert est.fft_macs == 0


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_analytic_macs_equal_the_counted_cross_check(name):
    counted = count_macs(SPECS / f"{name}.yaml")  # strict: fails on any op without a formula
    est = composer.estimate(SPECS / f"{name}.yaml")
    assert counted.unknown_ops == {}
    assert abs(counted.macs - est.macs) <= 0.005 * est.macs
    assert counted.macs == est.macs  # the closed forms are exact for these mixers


def test_randformer_frozen_matrix_is_counted_as_params():
    model = composer.compose(SPECS / "randformer_s12.yaml")
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert frozen == 6 * 196 ** 2 + 2 * 49 ** 2 == 235_298


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_state_dict_keys_and_shapes_equal_timm(name):
    with torch.device("meta"):
        ref = timm.create_model(name).state_dict()
        ours = composer.compose(SPECS / f"{name}.yaml").state_dict()
    assert list(ours) == list(ref)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


@pytest.mark.parametrize("name", ["convformer_s18", "caformer_s18", "poolformerv2_s12"])
def test_timm_weights_load_strictly_and_outputs_match(name):
    torch.manual_seed(0)
    ref = timm.create_model(name).eval()
    ours = composer.compose(SPECS / f"{name}.yaml").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
        assert got.shape == (2, 1000)
        assert (expected - got).abs().max().item() <= 1e-4
        ref_feats = ref.forward_intermediates(x, intermediates_only=True)
        for a, b in zip(ref_feats, ours.forward_stages(x)):
            assert (a - b).abs().max().item() <= 1e-4


def test_drop_path_ramp_matches_timm():
    ref = timm.create_model("caformer_s18", drop_path_rate=0.15)
    ours = composer.compose(SPECS / "caformer_s18.yaml")
    ref_rates = [getattr(b.drop_path1, "drop_prob", 0.0) for s in ref.stages for b in s.blocks]
    our_rates = [getattr(b.drop_path1, "drop_prob", 0.0) for s in ours.stages for b in s.blocks]
    assert our_rates == pytest.approx(ref_rates)
    assert our_rates[0] == 0 and our_rates[-1] == pytest.approx(0.15)


def test_init_follows_the_reference():
    torch.manual_seed(0)
    model = composer.compose(SPECS / "caformer_s18.yaml")
    w = model.stages[2].blocks[0].token_mixer.qkv.weight
    # timm's trunc_normal_(std=.02) truncates at +-2 absolute, i.e. effectively a plain normal(0, .02)
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert torch.all(model.stem.conv.bias == 0)
    assert model.stages[0].blocks[0].mlp.act.scale.item() == 1.0
    assert model.stages[0].blocks[0].mlp.act.bias.item() == 0.0
    assert torch.all(model.stages[3].blocks[0].res_scale1.scale == 1.0)
