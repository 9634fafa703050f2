"""A composed model is a timm model: the interface timm's own models have, for every macro.

Small variants of one preset per macro (one block per stage, a small input) keep this fast; timm's own
tests/test_models.py is run against every preset outside the repository (docs/toolbox.md has the count).
"""

import pytest
import torch
from torch import nn

import composer

timm = pytest.importorskip("timm")

# one preset per macro, shrunk: (preset, create_model kwargs, input size)
MACROS = {
    "metaformer": ("caformer_s18", {"depths": [1, 1, 2, 1], "img_size": 64}, 64),
    "hornet": ("hornet_tiny_gf", {"depths": [1, 1, 2, 1], "img_size": 64}, 64),
    "pvt": ("transnext_micro", {"depths": [1, 1, 1, 1], "img_size": 64}, 64),
    "unified": ("u_swin_micro", {"depths": [1, 1, 1, 1], "img_size": 64}, 64),
    "metanext": ("inception_next_atto", {"depths": [1, 1, 1, 1], "img_size": 64}, 64),
    "focalnet": ("focalnet_tiny_srf", {"depths": [1, 1, 1, 1], "img_size": 64}, 64),
    "lowformer": ("lowformer_b0", {"depths": [0, 1, 0, 1, 1], "img_size": 64}, 64),
}


def _create(macro, **extra):
    preset, kwargs, size = MACROS[macro]
    torch.manual_seed(0)
    return timm.create_model(f"composer_{preset}", **{**kwargs, **extra}), size


@pytest.mark.parametrize("macro", MACROS)
def test_features_only_gives_timms_feature_wrapper(macro):
    full, size = _create(macro)
    info = full.feature_info
    last = [len(info) - 3, len(info) - 2, len(info) - 1]   # the stride-8, 16 and 32 stages (LowFormer has 5)
    model, size = _create(macro, features_only=True, out_indices=tuple(last))
    assert type(model).__name__ == "FeatureGetterNet"
    assert model.feature_info.channels() == [info[i]["num_chs"] for i in last]
    assert model.feature_info.reduction() == [8, 16, 32]
    assert model.feature_info.module_name() == [f"stages.{i}" for i in last]
    x = torch.randn(2, 3, size, size)
    feats = model.eval()(x)
    assert [tuple(f.shape) for f in feats] == [(2, info[i]["num_chs"], size // r, size // r)
                                               for i, r in zip(last, (8, 16, 32))]
    # the wrapper pruned what it does not need: no head and nothing after the last stage
    assert not [n for n, _ in model.named_parameters() if ".head." in n]


@pytest.mark.parametrize("macro", MACROS)
def test_forward_intermediates_as_timm(macro):
    model, size = _create(macro)
    model.eval()
    n = len(model.feature_info)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x)) and len(maps) == n
        assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [torch.equal(a, b) for a, b in zip(last_two, maps[n - 2:])] == [True, True]
        picked = model.forward_intermediates(x, indices=[0, -1], intermediates_only=True)
        assert torch.equal(picked[0], maps[0]) and torch.equal(picked[1], maps[n - 1])
        early, first = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert torch.equal(early, maps[1]) and torch.equal(first[0], maps[1])
        assert [torch.equal(a, b) for a, b in zip(model.forward_stages(x), maps)] == [True] * n
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[n])
    with pytest.raises(ValueError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("macro", MACROS)
def test_prune_intermediate_layers_keeps_only_what_is_used(macro):
    model, size = _create(macro)
    taken = model.prune_intermediate_layers([0, 2])
    assert taken == [0, 2] and len(model.stages) == 3 and model.num_classes == 0
    assert model.num_features == model.feature_info[2]["num_chs"]
    x = torch.randn(1, 3, size, size)
    maps = model.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
    sum(m.sum() for m in maps).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


@pytest.mark.parametrize("macro", MACROS)
def test_classifier_reset_and_sizes(macro):
    model, size = _create(macro, num_classes=7)
    model.eval()
    x = torch.randn(2, 3, size, size)
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.head_hidden_size)
    assert model(x).shape == (2, 7) and model.get_classifier() is model.head.fc
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0, "")
    out = model(x)
    assert out.shape == (2, model.head_hidden_size, *feats.shape[2:])   # no pooling: the map
    model.reset_classifier(0, "avg")
    assert model(x).shape == (2, model.head_hidden_size)
    with pytest.raises(ValueError, match="global_pool='max' is not supported"):
        model.reset_classifier(0, "max")
    model = model.to(torch.float64)
    model.reset_classifier(4)
    assert model.get_classifier().weight.dtype == torch.float64 if isinstance(model.get_classifier(), nn.Linear) \
        else next(model.get_classifier().parameters()).dtype == torch.float64


@pytest.mark.parametrize("macro", MACROS)
def test_num_classes_0_and_global_pool_empty_at_creation(macro):
    model, size = _create(macro, num_classes=0, global_pool="")
    out = model.eval()(torch.randn(1, 3, size, size))
    assert out.ndim == 4 and out.shape[1] == model.head_hidden_size


def test_unified_num_features_is_the_feature_map_width_and_head_hidden_size_the_pooled():
    model, size = _create("unified")
    assert model.num_features == 256 and model.head_hidden_size == 384   # 1.5 x 256 after the extra transform


@pytest.mark.parametrize("macro", MACROS)
def test_grad_checkpointing_gives_the_same_gradients(macro):
    model, size = _create(macro, drop_path_rate=0.0)
    model.train()
    x = torch.randn(2, 3, size, size)
    model(x).sum().backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.stages)
    model(x).sum().backward()
    for name, grad in plain.items():
        # BatchNorm running stats move twice with recomputation; gradients are the same math
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("macro", MACROS)
def test_optimizer_factory_and_layer_decay_use_the_model(macro):
    from timm.optim import create_optimizer_v2
    from timm.optim._param_groups import group_parameters

    model, _ = _create(macro)
    names = {n for n, _ in model.named_parameters()}
    assert model.no_weight_decay() <= names
    groups = group_parameters(model, model.group_matcher(coarse=False))
    assert sum(len(g) for g in groups.values()) == len(names)
    assert len(groups) > model.stages.__len__()   # stem, per-block groups
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)


def test_pretrained_cfg_names_real_modules_and_fixed_sizes():
    for preset, fixed in [("caformer_s18", False), ("transnext_micro", True), ("hbformer_s18", True),
                          ("u_pvt_micro", True), ("randformer_s12", True), ("hornet_tiny_gf", False),
                          ("u_halo_micro", False)]:
        cfg = timm.models.get_pretrained_cfg(f"composer_{preset}")
        assert cfg.fixed_input_size is fixed, preset
        model = timm.create_model(f"composer_{preset}")
        modules = dict(model.named_modules())
        assert isinstance(modules[cfg.first_conv], nn.Conv2d), preset
        assert isinstance(modules[cfg.classifier], nn.Linear), preset
        assert cfg.pool_size == (cfg.input_size[1] // 32,) * 2


@pytest.mark.parametrize("macro", MACROS)
def test_torchscript_equals_eager(macro):
    model, size = _create(macro)
    model.eval()
    x = torch.randn(1, 3, size, size)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["hpxformer_s18", "hbformer_s18", "randformer_s12", "u_halo_micro",
                                    "u_internimage_micro", "u_pvt_micro", "hornet_tiny_gf"])
def test_torchscript_and_fx_of_the_shape_dependent_mixers(preset):
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    torch.manual_seed(0)
    model = timm.create_model(f"composer_{preset}", depths=[1, 1, 1, 1], img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected, rtol=1e-5, atol=1e-5)
        tracer = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}
        _, nodes = get_graph_node_names(model, tracer_kwargs=tracer)
        traced = create_feature_extractor(model, return_nodes=[nodes[-1]], tracer_kwargs=tracer)
        torch.testing.assert_close(next(iter(traced(x).values())), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("macro", MACROS)
def test_models_without_fixed_input_size_run_at_other_sizes(macro):
    model, size = _create(macro)
    if model.pretrained_cfg["fixed_input_size"]:
        with pytest.raises(ValueError, match="compiled for"):
            model.eval()(torch.randn(1, 3, 2 * size, 2 * size))
        return
    out = model.eval()(torch.randn(1, 3, 2 * size, 2 * size))
    assert out.shape == (1, 1000)


def test_ensemble_has_what_an_average_of_logits_means():
    ens = timm.create_model("composer_ensemble_hpx_conv_s18", num_classes=5, img_size=64)
    assert isinstance(ens, composer.ComposedEnsemble)
    ens.reset_classifier(3)
    assert ens.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert len(ens.get_classifier()) == 2


def test_ensemble_features_are_the_members_maps_side_by_side():
    x = torch.randn(2, 3, 64, 64)
    ens = timm.create_model("composer_ensemble_hpx_conv_s18", num_classes=7, img_size=64).eval()
    a, b = ens.members
    with torch.no_grad():
        feats = ens.forward_features(x)
        assert torch.equal(feats, torch.cat([a.forward_features(x), b.forward_features(x)], 1))
        assert feats.shape[1] == ens.num_features == 1024
        # the head splits the channels back: the logits are the mean of the members', as forward gives them
        assert torch.allclose(ens.forward_head(feats), (a(x) + b(x)) / 2, atol=1e-6)
        assert torch.allclose(ens(x), (a(x) + b(x)) / 2, atol=1e-6)
        pre = ens.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, ens.head_hidden_size)
        assert ens.head_hidden_size == a.head_hidden_size + b.head_hidden_size
        last, maps = ens.forward_intermediates(x, indices=(1, 3))
        assert torch.equal(last, feats) and [m.shape[1] for m in maps] == [256, 1024]
    features = timm.create_model("composer_ensemble_hpx_conv_s18", features_only=True, out_indices=(1, 2, 3),
                                 img_size=64)
    assert features.feature_info.channels() == [256, 640, 1024] and features.feature_info.reduction() == [8, 16, 32]
    headless = timm.create_model("composer_ensemble_hpx_conv_s18", num_classes=0, img_size=64).eval()
    assert headless(x).shape == (2, headless.head_hidden_size)


def test_an_ensemble_of_unlike_members_has_logits_but_no_shared_features():
    like = composer.compose({"ensemble": ["caformer_s18", "u_dwconv_micro"], "input_size": 64})
    assert [f["num_chs"] for f in like.feature_info] == [64 + 32, 128 + 64, 320 + 128, 512 + 256]  # same strides
    three = {"extends": "caformer_s18", "widths": [64, 128, 320], "depths": [1, 1, 1], "layout": "Conv-Conv-A",
             "res_scale": None}
    ens = composer.compose({"ensemble": ["caformer_s18", three], "input_size": 64}).eval()
    assert ens.feature_info == []
    assert ens(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(NotImplementedError, match="cannot be put side by side"):
        ens.forward_features(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("preset", ["hpxformer_s18", "randformer_s12"])
def test_timm_models_hold_frozen_tables_as_buffers_with_the_same_state_dict(preset):
    """timm expects a gradient for every parameter: the official code's frozen parameters (distance maps, the
    random mixing matrix) are buffers in timm-created models; the state dict and the outputs are unchanged."""
    kwargs = {"img_size": 64} if preset == "hpxformer_s18" else {}
    model = timm.create_model(f"composer_{preset}", **kwargs)
    reference = composer.compose(composer.load_spec({"extends": preset, **({"input_size": 64} if kwargs else {})}))
    frozen = sum(p.numel() for p in reference.parameters() if not p.requires_grad)
    assert frozen > 0 and all(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters()) - frozen
    assert set(model.state_dict()) == set(reference.state_dict())
    model.load_state_dict(reference.state_dict(), strict=True)
    size = 64 if kwargs else 224
    x = torch.randn(2, 3, size, size)
    model.train()
    model(x).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
