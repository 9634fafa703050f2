"""Ensembles: one module averaging member logits, costs summed, the paper's shorthand, errors with file:line."""

import pytest
import torch

import composer
from composer import ComposedEnsemble, EnsembleSpec, compose, dump_spec, estimate, load_spec
from composer.cost import count_macs

from conftest import SPECS

# targets.md: sums of the members' fvcore MACs (which also count LayerNorms: ours are ~0.5% lower)
TARGETS = {"ensemble_hpx_conv_s18": (56.12e6, 8.74e9), "ensemble_hpx_hb_conv_ca_s18": (110.71e6, 17.27e9)}

MEMBER = "{{name: {name}, input_size: 32, num_classes: 5, widths: [8, 32], depths: [1, 1], layout: {layout}}}"
TINY = f"""name: tiny_ens
ensemble:
  - {MEMBER.format(name="a", layout="Conv-Conv")}
  - {MEMBER.format(name="b", layout="Pool-A")}
"""


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_ensemble_cost_is_the_sum_of_its_members(name):
    est = estimate(name)
    params, macs = TARGETS[name]
    assert est.params == sum(m.params for m in est.members)
    assert est.macs == sum(m.macs for m in est.members) and est.fft_macs == sum(m.fft_macs for m in est.members)
    assert abs(est.params - params) / params < 0.001 and abs(est.macs - macs) / macs < 0.01
    assert est.members[0].name == "hpxformer_s18"
    assert est.params == sum(estimate(m.name).params for m in est.members)


def test_shorthand_and_list_give_the_same_members():
    short = load_spec("ensemble: Hpx/Hb/Conv/CA\nsize: s18\n")
    listed = load_spec("ensemble: [hpxformer_s18, hbformer_s18, convformer_s18, caformer_s18]\n")
    assert isinstance(short, EnsembleSpec)
    assert short.members == listed.members
    assert [m.name for m in short.members] == ["hpxformer_s18", "hbformer_s18", "convformer_s18", "caformer_s18"]


def test_one_module_averages_the_member_logits():
    torch.manual_seed(0)
    model = compose(TINY)
    assert isinstance(model, ComposedEnsemble) and len(model.members) == 2
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = (model.members[0](x) + model.members[1](x)) / 2
        assert torch.allclose(model(x), expected)
    assert sum(p.numel() for p in model.parameters()) == estimate(TINY).params
    assert count_macs(TINY).macs == estimate(TINY).macs
    assert next(iter(model.state_dict())).startswith("members.0.stem.")


def test_built_on_meta_matches_the_estimate():
    with torch.device("meta"):
        model = compose(SPECS / "ensemble_hpx_conv_s18.yaml")
    assert sum(p.numel() for p in model.parameters()) == estimate("ensemble_hpx_conv_s18").params


def test_overrides_apply_to_every_member_and_round_trip():
    spec = load_spec("ensemble: [convformer_s18, caformer_s18]\ninput_size: 192\nnum_classes: 10\n")
    assert [(m.input_size, m.num_classes) for m in spec.members] == [(192, 10), (192, 10)]
    assert load_spec(dump_spec(spec)) == spec
    assert estimate(spec).input_size == 192


def test_errors_point_at_the_member(write_spec):
    path = write_spec("name: e\nensemble:\n  - convformer_s18\n  - convformer_s81\n")
    with pytest.raises(composer.SpecError, match=r"spec\.yaml:4: ensemble\[1\]: unknown preset 'convformer_s81'"):
        load_spec(path)
    path = write_spec("ensemble:\n  - convformer_s18\n  - {widths: [8], depths: [1],\n     layout: Cnv}\n")
    with pytest.raises(composer.SpecError, match=r"spec\.yaml:4: layout: .*unknown mixer symbol 'Cnv'"):
        load_spec(path)
    with pytest.raises(composer.SpecError, match=r":1: ensemble: unknown shorthand member 'Hbb'; did you mean 'Hb'"):
        load_spec("ensemble: Hpx/Hbb\nsize: s18\n")
    with pytest.raises(composer.SpecError, match="needs a size"):
        load_spec("ensemble: Hpx/Conv\n")
    with pytest.raises(composer.SpecError, match=r"member 1 \(b\) has num_classes 7 .* set num_classes"):
        load_spec(TINY.replace("num_classes: 5, widths: [8, 32], depths: [1, 1], layout: Pool-A",
                               "num_classes: 7, widths: [8, 32], depths: [1, 1], layout: Pool-A"))
    with pytest.raises(composer.SpecError, match="two or more members"):
        load_spec("ensemble: [convformer_s18]\n")


def test_cli_build_prints_member_totals(run_cli):
    code, out, _ = run_cli("build", SPECS / "ensemble_hpx_conv_s18.yaml")
    assert code == 0
    assert out.splitlines()[0].startswith("ensemble_hpx_conv_s18  (ensemble of 2")
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line[:1].isdigit()}
    assert rows["hpxformer_s18"][3] == "29,344,686" and rows["convformer_s18"][3] == "26,774,448"
    assert "56,119,134 parameters (matches the plan)" in out
