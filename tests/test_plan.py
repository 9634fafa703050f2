"""The spec language end to end: sources, broadcasting, per-block layouts, extends, the Plan graph."""

import pytest
import torch

import composer
from composer import Spec, compose, dump_spec, estimate, load_spec, plan
from composer.cost import count_macs
from composer.mixers import MIXERS, SYMBOLS

from conftest import SPECS

TINY = {"name": "tiny", "input_size": 64, "num_classes": 10, "widths": [32, 64, 96, 128], "depths": [1, 1, 2, 1],
        "layout": "Conv-Conv-A-A"}


def test_compose_accepts_path_preset_yaml_dict_and_spec():
    text = (SPECS / "caformer_s18.yaml").read_text()
    sources = [SPECS / "caformer_s18.yaml", str(SPECS / "caformer_s18.yaml"), "caformer_s18", text,
               load_spec("caformer_s18")]
    for source in sources:
        assert estimate(source).params == 26_341_656
    assert sum(p.numel() for p in compose(dict(TINY)).parameters()) == estimate(dict(TINY)).params


def test_plan_nodes_are_the_built_modules_with_shapes_and_cost():
    p = plan(dict(TINY))
    model = composer.build(p)
    modules = dict(model.named_modules())
    leaves = [n for n, d in p.graph.nodes(data=True) if "part" in d]
    assert leaves[0] == "stem" and leaves[-1] == "head"
    for name in leaves:
        module = modules[name]
        assert sum(t.numel() for t in module.parameters()) == p.node(name)["cost"].params, name
    assert p.node("stem")["out_shape"] == (32, 16, 16)
    assert p.node("stages.2.blocks.1")["in_shape"] == (96, 4, 4)
    assert p.node("stages.3")["out_shape"] == (128, 2, 2)
    assert [name for name, _ in p.parts()] == ["stem", "stages.0.blocks.0", "stages.1.downsample",
                                               "stages.1.blocks.0", "stages.2.downsample", "stages.2.blocks.0",
                                               "stages.2.blocks.1", "stages.3.downsample", "stages.3.blocks.0",
                                               "head"]
    est = p.estimate()
    assert est.params == sum(d["cost"].params for _, d in p.graph.nodes(data=True) if "part" in d)
    assert est.stem.params + sum(s.cost.params for s in est.stages) + est.head.params == est.params


def test_plan_allocates_no_tensors(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the Plan must not build modules")

    monkeypatch.setattr(torch.nn.Module, "__init__", refuse)
    assert estimate("caformer_b36").params == 98_753_614


def test_per_stage_broadcasting_of_mixer_parameters():
    spec = dict(TINY, layout="Conv-Conv-Conv-Conv", mixers={"Conv": {"kernel_size": [3, 5, 7, 9]}})
    model = compose(spec)
    assert [s.blocks[0].token_mixer.dwconv.kernel_size for s in model.stages] == [(3, 3), (5, 5), (7, 7), (9, 9)]
    base = estimate(dict(TINY, layout="Conv-Conv-Conv-Conv", mixers={"Conv": {"kernel_size": 3}}))
    # the depthwise conv of stage i (2C channels, k_i^2 taps) is the only difference
    extra = sum(d * 2 * (k * k - 9) * n for d, k, n in zip([32, 64, 96, 128], [3, 5, 7, 9], [1, 1, 2, 1]))
    assert estimate(spec).params - base.params == extra
    assert count_macs(spec).macs == estimate(spec).macs


def test_per_block_layout_mixes_layouts_inside_a_stage():
    spec = dict(TINY, depths=[1, 1, 3, 1], layout=["Conv", "Pool", ["Conv", "A", "Conv"], "M"])
    model = compose(spec)
    mixers = [type(b.token_mixer).__name__ for b in model.stages[2].blocks]
    assert mixers == ["SepConv", "Attention", "SepConv"]
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert count_macs(spec).macs == estimate(spec).macs


def test_user_defined_symbols_and_per_symbol_overrides():
    spec = dict(TINY, layout="C5-C5-A-Wide", mixers={"C5": {"type": "sep_conv", "kernel_size": 5},
                                                     "Wide": {"type": "attention", "head_dim": 64}})
    model = compose(spec)
    assert model.stages[0].blocks[0].token_mixer.dwconv.kernel_size == (5, 5)
    assert model.stages[3].blocks[0].token_mixer.num_heads == 2


def test_extends_with_overrides(write_spec, monkeypatch):
    path = write_spec("extends: caformer_s18\nname: variant\nmixers:\n  Conv: {kernel_size: 5}\n"
                      "head: {hidden_drop: 0.3}\n")
    monkeypatch.chdir(path.parent)
    spec = load_spec(path)
    assert spec.name == "variant" and spec.depths == [3, 3, 9, 3] and spec.layout == "Conv-Conv-A-A"
    assert spec.head.hidden_drop == 0.3 and spec.head.type == "mlp"  # partial override keeps the rest
    base = estimate("caformer_s18")
    fewer = sum(2 * w * (49 - 25) * d for w, d in [(64, 3), (128, 3)])
    assert base.params - estimate(spec).params == fewer


def test_extends_a_relative_path(write_spec, monkeypatch):
    write_spec("name: base\nwidths: [32, 64]\ndepths: [1, 1]\nlayout: Conv-A\ninput_size: 64\n", "base.yaml")
    child = write_spec("extends: base.yaml\ndepths: [2, 2]\n", "child.yaml")
    monkeypatch.chdir("/")
    spec = load_spec(child)
    assert spec.depths == [2, 2] and spec.name == "child"


def test_headless_backbone_and_stage_outputs():
    model = compose(dict(TINY, num_classes=0)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 128)
        shapes = [tuple(t.shape) for t in model.forward_stages(x)]
    assert shapes == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 96, 4, 4), (2, 128, 2, 2)]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    assert estimate(dict(TINY, num_classes=0)).params == sum(p.numel() for p in model.parameters())


def test_layer_scale_and_res_scale_options():
    base = estimate(dict(TINY, res_scale=None))
    scaled = estimate(dict(TINY, res_scale=None, layer_scale=1e-6))
    # one C-vector on each of the two branches of every block
    assert scaled.params - base.params == sum(2 * w * d for w, d in zip(TINY["widths"], TINY["depths"]))
    model = compose(dict(TINY, res_scale=None, layer_scale=1e-6))
    assert torch.all(model.stages[0].blocks[0].layer_scale1.scale == 1e-6)


@pytest.mark.parametrize("name", sorted(p.stem for p in SPECS.glob("*.yaml")))
def test_dumped_specs_round_trip(name):
    spec = load_spec(name)
    again = load_spec(dump_spec(spec))
    assert again == spec
    assert estimate(again).params == estimate(spec).params


def test_round_trip_with_per_stage_and_per_block_values():
    spec = load_spec(dict(TINY, layout=["Conv", "Conv", ["A", "Conv"], "M"],
                          mixers={"Conv": {"kernel_size": [3, 5, 7, 9]}, "X": {"type": "attention"}},
                          res_scale=[None, 1.0, None, 1.0]))
    assert load_spec(dump_spec(spec)) == spec


def test_spec_objects_are_checked_too():
    spec = Spec(widths=[32, 64], depths=[1], layout="Conv-Conv")
    with pytest.raises(composer.SpecError, match="depths"):
        plan(spec)


def test_every_mixer_type_has_a_symbol_and_a_summary():
    symbol_types = {e.type for entries in SYMBOLS.values() for e in entries.values()}
    assert set(MIXERS) <= symbol_types
    assert all(cls.summary for cls in MIXERS.values())


@pytest.mark.parametrize("size", [192, 225, 256, 384])
def test_other_input_sizes_count_exactly(size):
    spec = load_spec("caformer_s18").model_copy(update={"input_size": size})
    assert count_macs(spec).macs == estimate(spec).macs


def test_random_mixing_rejects_another_resolution():
    model = compose(dict(TINY, layout="Id-Id-Rand-Rand"))
    with pytest.raises(ValueError, match="compiled for 16 tokens"):
        model(torch.randn(1, 3, 96, 96))
