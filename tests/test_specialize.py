"""Shape-specialized convolutions (composer/nn/specialize.py, docs/small-images.md): on the map size the Plan gives
it, a convolution computes with the kernel taps that can meet that map; everything else stays the general
model's (outputs, gradients, state dict, FLOP convention), and another input size takes the general path."""

import copy
import itertools

import pytest
import torch
from torch import nn

import composer
from composer.cost import count_macs
from composer.mixers import MIXERS, MixerCheckError, MixerContext
from composer.nn.specialize import (
    DENSE_MIN_BATCH,
    MapConv2d,
    conv2d_on_map,
    generalize,
    live_taps,
    specialize,
    specialize_conv,
    train_paths,
)
from composer.resolution import at_input_size

MAPS = (1, 2, 3, 4, 7, 8)
KERNELS = (3, 5, 7, 9, 11)


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def test_live_taps_are_exactly_the_taps_a_general_conv_gives_a_gradient():
    """For every size, kernel, stride, padding and dilation up to small bounds: the taps the general convolution
    gives a nonzero weight gradient (those that meet the input) lie in the kept range, its first and last among
    them; the specialized convolution gives the general one's outputs and gradients."""
    torch.manual_seed(0)
    cropped = 0
    for size, kernel, stride, dilation in itertools.product((1, 2, 3, 5), (2, 3, 4, 7), (1, 2, 3), (1, 2)):
        for padding in sorted({0, 1, kernel // 2, dilation * (kernel // 2), dilation * (kernel - 1)}):
            if size + 2 * padding - dilation * (kernel - 1) - 1 < 0:
                continue
            conv = nn.Conv2d(2, 3, (kernel, 1), (stride, 1), (padding, 0), (dilation, 1))
            x = torch.randn(2, 2, size, 3, requires_grad=True)
            ref = conv(x)
            ref_grads = torch.autograd.grad(ref.square().sum(), (conv.weight, x))
            live_rows = (ref_grads[0].abs().sum(dim=(0, 1, 3)) > 0).nonzero().flatten().tolist()
            crop = live_taps(size, kernel, stride, padding, dilation)
            if crop is not None:
                # the kept range is the tightest one around every live tap (with strides, taps between two live
                # ones may be dead, and are kept: a contiguous slice of the weight)
                assert (live_rows[0], live_rows[-1]) == (crop.start, crop.stop - 1)
                assert (crop.start, crop.stop) != (0, kernel)
            if not specialize(conv, size, 3):
                continue
            cropped += 1
            out = conv(x)
            grads = torch.autograd.grad(out.square().sum(), (conv.weight, x))
            assert out.shape == ref.shape
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
            for got, want in zip(grads, ref_grads):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert cropped > 40


@pytest.mark.parametrize("size, kernel, padding, expected", [
    (1, 7, 3, (3, 4, 0)),    # a 1x1 map meets only the centre
    (2, 7, 3, (2, 5, 1)),    # a 2x2 map: the central 3 taps, padding 1
    (3, 11, 5, (3, 8, 2)),   # 'same' padding: the central 2·3 - 1 = 5 taps
    (2, 3, 1, (0, 3, 1)),    # 'same' 3-tap kernel on 2 pixels: every tap meets the map (None below)
])
def test_live_taps_of_same_padding_are_the_central_2n_minus_1(size, kernel, padding, expected):
    crop = live_taps(size, kernel, 1, padding, 1)
    if expected[:2] == (0, kernel):
        assert crop is None
    else:
        assert (crop.start, crop.stop, crop.padding) == expected


def _kernel_configs():
    """(id, mixer type, config fields) for every built-in mixer with a kernel the map can be smaller than."""
    for k in KERNELS:
        yield f"sep_conv-k{k}", "sep_conv", {"kernel_size": k}
        yield f"dw_conv-k{k}", "dw_conv", {"kernel_size": k}
        yield f"gn_conv-k{k}", "gn_conv", {"kernel_size": k, "order": 2}
        yield f"inception_dw-k{k}", "inception_dw", {"square_kernel_size": k, "band_kernel_size": k + 2}
        yield f"mbconv-k{k}", "mbconv", {"kernel_size": k}
        yield f"fused_mbconv-k{k}", "fused_mbconv", {"kernel_size": k}
        yield f"lowtention-s2-k{k}", "lowtention", {"kernel_size": k, "stride": 2, "width_per_head": 4}
        yield f"lowtention-s1-k{k}", "lowtention", {"kernel_size": k, "stride": 1, "width_per_head": 4}
        yield f"focal_modulation-k{k}", "focal_modulation", {"focal_window": k, "focal_level": 2}
        yield f"dcn_v3-k{k}", "dcn_v3", {"dw_kernel_size": k, "groups": 2}
        yield f"hyena_pixel-k{k}", "hyena_pixel", {"kernel_size": k, "filter_emb_dim": 8}


CONFIGS = list(_kernel_configs())


def _inputs(module: nn.Module, layout: str, dim: int, size: int) -> torch.Tensor:
    shape = (2, dim, size, size) if layout == "channels_first" else (2, size, size, dim)
    return torch.randn(shape)


def _assert_fast_path_taken(model: nn.Module, x: torch.Tensor) -> int:
    """Run ``model`` on ``x`` and check that every MapConv2d met the map it was specialized for (the Plan's map
    sizes were right, no silent fallback); returns how many ran."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m.map_size, tuple(args[0].shape[-2:]))))
             for m in model.modules() if isinstance(m, MapConv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    assert all(expected == got for expected, got in seen), seen
    return len(seen)


@pytest.mark.parametrize("size", MAPS)
@pytest.mark.parametrize("name, mixer_type, fields", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_every_mixer_with_a_kernel_specialized_equals_general(name, mixer_type, fields, size):
    config = MIXERS[mixer_type](**fields)
    dim = 8
    ctx = MixerContext(dim, size, size, input_size=4 * size)
    try:
        config.check(ctx)
    except MixerCheckError as exc:
        pytest.skip(f"{name} does not fit a {size}x{size} map: {exc}")
    torch.manual_seed(0)
    general = config.build(ctx).eval()
    special = copy.deepcopy(general)
    count = specialize(special, size, size)
    kernels = [m.kernel_size for m in general.modules() if isinstance(m, nn.Conv2d)]
    if any(max(k) > 2 * size - 1 for k in kernels):
        assert count > 0, f"{name}: a kernel larger than a {size}x{size} map can meet was left general"
    if count == 0:
        return
    sg, ss = general.state_dict(), special.state_dict()
    assert list(sg) == list(ss) and all(sg[k].shape == ss[k].shape for k in sg)
    x = _inputs(general, config.layout, dim, size)
    assert _assert_fast_path_taken(special, x) > 0
    with torch.no_grad():
        assert rel_error(special(x), general(x)) < 1e-5
    out_s, out_g = special(x), general(x)   # gradients on: the training paths (dense operator, channels-last)
    assert rel_error(out_s, out_g) < 1e-5
    out_s.square().sum().backward(), out_g.square().sum().backward()
    for (name, a), b in zip(special.named_parameters(), general.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        assert a.grad is None or rel_error(a.grad, b.grad) < 1e-4, name


def test_every_way_a_convolution_runs_on_its_map_equals_the_general_one(monkeypatch):
    """Depthwise and dense convolutions, square and band kernels, strides and dilations, on maps of 1 to 8 pixels:
    each specialized convolution gives the general one's outputs (no gradient, and with gradients: the training
    paths) and input, weight and bias gradients, and every method and training path occurs."""
    import composer.nn.specialize as sp_module

    calls = {"dense": 0}
    dense = sp_module.dense_depthwise

    def counted(*args):
        calls["dense"] += 1
        return dense(*args)
    monkeypatch.setattr(sp_module, "dense_depthwise", counted)
    torch.manual_seed(0)
    seen = set()
    for size, k, stride, dilation, band, groups in itertools.product(
            (1, 2, 3, 4, 7, 8), (1, 2, 3, 5, 7, 11), (1, 2), (1, 2), (False, True), (6, 1)):
        kernel = (1, k) if band else (k, k)
        padding = (0, 0) if k == 2 else (kernel[0] // 2 * dilation, kernel[1] // 2 * dilation)
        general = nn.Conv2d(6, 6, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
        try:
            general(torch.randn(1, 6, size, size))
        except RuntimeError:   # a kernel the map cannot hold at all
            continue
        special = copy.deepcopy(general)
        if not specialize(special, size, size):
            continue
        seen.add((special.method, special.train_path))
        before = calls["dense"]
        x = torch.randn(DENSE_MIN_BATCH, 6, size, size)
        with torch.no_grad():
            assert rel_error(special(x), general(x)) < 1e-5
        xs, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_s, out_g = special(xs), general(xg)
        assert out_s.shape == out_g.shape and rel_error(out_s, out_g) < 1e-5
        grad = torch.randn_like(out_g)
        (out_s * grad).sum().backward(), (out_g * grad).sum().backward()
        for a, b in ((xs.grad, xg.grad), (special.weight.grad, general.weight.grad),
                     (special.bias.grad, general.bias.grad)):
            assert rel_error(a, b) < 1e-5, (size, kernel, stride, dilation, groups)
        assert calls["dense"] - before == (special.train_path == "dense")   # with gradients only, once
    assert seen == {("scale", ""), ("linear", ""), ("conv", ""), ("conv", "dense"), ("conv", "channels_last")}


def test_every_training_path_a_depthwise_convolution_may_take_equals_the_general_one():
    """What --conv-paths measured may choose (train_paths): each path, forced, gives the general convolution's
    outputs and gradients; the rule's choice comes first, and a path that is not offered is refused."""
    torch.manual_seed(0)
    offered = set()
    for size, k, stride, dilation, band in itertools.product((1, 2, 3, 4, 7, 8), (3, 5, 7, 11), (1, 2), (1, 2),
                                                            (False, True)):
        kernel = (1, k) if band else (k, k)
        padding = (kernel[0] // 2 * dilation, kernel[1] // 2 * dilation)
        general = nn.Conv2d(6, 6, kernel, stride=stride, padding=padding, dilation=dilation, groups=6)
        paths = train_paths(general, size, size)
        rule = copy.deepcopy(general)
        specialize(rule, size, size)
        assert (paths[0] if paths else "") == getattr(rule, "train_path", "")
        offered.add(paths)
        for path in paths:
            special, reference = copy.deepcopy(general), copy.deepcopy(general)
            specialize_conv(special, size, size, train_path=path)
            assert getattr(special, "train_path", "") == path
            x = torch.randn(DENSE_MIN_BATCH, 6, size, size)
            xs, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
            out_s, out_g = special(xs), reference(xg)
            assert rel_error(out_s, out_g) < 1e-5
            grad = torch.randn_like(out_g)
            (out_s * grad).sum().backward(), (out_g * grad).sum().backward()
            for a, b in ((xs.grad, xg.grad), (special.weight.grad, reference.weight.grad),
                         (special.bias.grad, reference.bias.grad)):
                assert rel_error(a, b) < 1e-5, (size, kernel, stride, dilation, path)
            specialize_conv(special, size, size, train_path="")   # and back: the MapConv2d specialized again
            assert getattr(special, "train_path", "") == ""
    assert offered >= {(), ("dense", "", "channels_last"), ("channels_last", "", "dense"),
                       ("", "channels_last", "dense")}
    big = nn.Conv2d(6, 6, 7, padding=3, groups=6)
    assert train_paths(big, 16, 16) == ("channels_last", "")   # a 256 x 256 operator: too large
    dense = nn.Conv2d(6, 6, 3, padding=1)
    with pytest.raises(ValueError, match="not one of"):
        specialize_conv(dense, 2, 2, train_path="channels_last")


def test_the_dense_operator_trains_from_its_batch_on_except_on_2x2_maps(monkeypatch):
    import composer.nn.specialize as sp_module

    calls = []
    dense = sp_module.dense_depthwise
    monkeypatch.setattr(sp_module, "dense_depthwise", lambda *a: calls.append(a[0].shape) or dense(*a))
    for size in (2, 4):
        conv = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        assert specialize(conv, size, size) and conv.train_path == "dense"
        for batch in (1, DENSE_MIN_BATCH - 1, DENSE_MIN_BATCH):
            conv(torch.randn(batch, 8, size, size)).sum().backward()
    assert [shape[0] for shape in calls] == [1, DENSE_MIN_BATCH - 1, DENSE_MIN_BATCH, DENSE_MIN_BATCH]


@pytest.mark.parametrize("size", MAPS)
def test_convglu_channel_mixer_specialized_equals_general(size):
    from composer.channel.convglu import ConvGLUConfig

    torch.manual_seed(0)
    general = ConvGLUConfig(ratio=2.0).build(8, "channels_first").eval()
    special = copy.deepcopy(general)
    # its 3x3 depthwise: one tap on 1x1 maps; all live from 2x2 on, but 4 pixels < 9 taps: a dense operator there
    expected = {1: ("scale", ""), 2: ("conv", "dense")}.get(size)
    assert specialize(special, size, size) == (1 if expected else 0)
    if expected:
        conv = special.dwconv.dwconv
        assert (conv.method, conv.train_path) == expected
    x = torch.randn(2, 8, size, size)
    _assert_fast_path_taken(special, x)
    with torch.no_grad():
        assert rel_error(special(x), general(x)) < 1e-5
    special.train(), general.train()   # gradients on: the training path, the same outputs and gradients
    out_s, out_g = special(x), general(x)
    assert rel_error(out_s, out_g) < 1e-5
    out_s.square().sum().backward(), out_g.square().sum().backward()
    for (name, a), b in zip(special.named_parameters(), general.parameters()):
        assert rel_error(a.grad, b.grad) < 1e-5, name


# every macro family at small widths, at sizes where maps get smaller than the kernels
FAMILIES = {
    "convformer": {"extends": "convformer_s18", "widths": [16, 16, 32, 32], "depths": [1, 1, 1, 1]},
    "caformer": {"extends": "caformer_s18", "widths": [16, 16, 32, 32], "depths": [1, 1, 1, 1],
                 "mixers": {"A": {"head_dim": 16}}},
    "hornet": {"extends": "hornet_tiny_7x7", "widths": [16, 32, 64, 128], "depths": [1, 1, 1, 1]},
    "inception_next": {"extends": "inception_next_atto", "widths": [16, 16, 32, 32], "depths": [1, 1, 1, 1]},
    "focalnet": {"extends": "focalnet_tiny_srf", "widths": [16, 16, 32, 32], "depths": [1, 1, 1, 1]},
    "transnext": {"extends": "transnext_micro", "widths": [16, 16, 32, 32], "depths": [1, 1, 1, 1],
                  "mixers": {"A": {"head_dim": 8, "pretrain_size": 64}, "M": {"head_dim": 8, "pretrain_size": 64}}},
    "lowformer": {"extends": "lowformer_b0", "depths": [0, 1, 0, 1, 1]},
    "u_dwconv": {"extends": "u_dwconv_micro", "depths": [1, 1, 1, 1]},
    "u_internimage": {"extends": "u_internimage_micro", "depths": [1, 1, 1, 1]},
}


def _family(name: str, size: int) -> dict:
    return {**FAMILIES[name], "input_size": size, "num_classes": 10}


@pytest.mark.parametrize("family", FAMILIES)
def test_specialized_model_equals_general_in_outputs_gradients_and_state_dict(family):
    spec = _family(family, 32)
    torch.manual_seed(0)
    special = composer.compose(spec)
    general = composer.compose(spec, specialize=False)
    assert not any(isinstance(m, MapConv2d) for m in general.modules())
    sg, ss = general.state_dict(), special.state_dict()
    assert list(sg) == list(ss) and all(sg[k].shape == ss[k].shape for k in sg)
    general.load_state_dict(ss, strict=True)
    x = torch.randn(2, 3, 32, 32)
    special.eval(), general.eval()
    assert _assert_fast_path_taken(special, x) > 0
    out_s, out_g = special(x), general(x)
    assert rel_error(out_s, out_g) < 1e-5
    out_s.square().mean().backward()
    out_g.square().mean().backward()
    grads_g = dict(general.named_parameters())
    for name, p in special.named_parameters():
        want = grads_g[name].grad
        if want is None:
            assert p.grad is None, name
        else:
            assert rel_error(p.grad, want) < 1e-4, name
    # another input size than compiled: the general path, the general model's result
    y = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        try:
            want = general(y)
        except ValueError as exc:   # TransNeXt: position tables of the compiled map, no other size at all
            assert "compiled for" in str(exc)
            return
        assert rel_error(special(y), want) < 1e-5


def test_nothing_changes_where_no_kernel_is_larger_than_its_map():
    """At 224 px every tap meets its map: nothing is cropped and every convolution computes as built; what is
    left of the specialization is the layout in which a 7x7 depthwise convolution trains on the CPU."""
    model = composer.compose(_family("convformer", 224))
    special = [m for m in model.modules() if isinstance(m, MapConv2d)]
    assert special and all(m.train_path == "channels_last" and m.method == "conv" and m.groups == m.in_channels
                           and (m.rows, m.cols) == ((0, 7), (0, 7)) for m in special)
    assert len(special) == sum(FAMILIES["convformer"]["depths"])   # one SepConv depthwise per block


def test_generalize_undoes_specialize_and_scripting_keeps_the_fast_path():
    model = composer.compose(_family("convformer", 32)).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        scripted = torch.jit.script(model)
        assert rel_error(scripted(x), expected) < 1e-5
        other = torch.randn(1, 3, 48, 48)   # another size: the general path, scripted too
        assert rel_error(scripted(other), model(other)) < 1e-5
    count = sum(isinstance(m, MapConv2d) for m in model.modules())
    assert count > 0 and generalize(model) == count
    assert not any(isinstance(m, MapConv2d) for m in model.modules())
    with torch.no_grad():
        assert rel_error(model(x), expected) < 1e-5


def test_fx_traces_specialized_models_with_timms_tracer_and_plain_torch_fx():
    from timm.layers import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = composer.compose(_family("convformer", 32)).eval()
    x = torch.randn(1, 3, 32, 32)
    tracer = {"leaf_modules": get_notrace_modules(), "autowrap_functions": get_notrace_functions()}
    _, nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    traced = create_feature_extractor(model, return_nodes=[nodes[-1]], tracer_kwargs=tracer)
    plain = torch.fx.symbolic_trace(model)   # MapConv2d traced into: conv2d_on_map is one wrapped call
    assert any(n.target is conv2d_on_map for n in plain.graph.nodes)
    with torch.no_grad():
        expected = model(x)
        assert rel_error(next(iter(traced(x).values())), expected) < 1e-5
        assert rel_error(plain(x), expected) < 1e-5


def test_macs_keep_the_convention_and_the_specialized_count_says_what_runs():
    """``estimate`` and ``count_macs`` count every tap (docs/flop-conventions.md); ``count_macs(specialized=True)``
    counts the taps a specialized model executes: fewer at 32 px, where stage 4's 7x7 kernels meet a 1x1 map."""
    small = _family("convformer", 32)
    est, counted, executed = composer.estimate(small), count_macs(small), count_macs(small, specialized=True)
    assert est.macs == counted.macs
    assert executed.macs < counted.macs
    # stage 4: the SepConv's 7x7 depthwise over 2·32 channels on a 1x1 map runs 1 tap of 49, as a per-channel
    # scale: element-wise, which the convention does not count (so all 49 drop out)
    dw = 2 * 32
    assert counted.by_module["stages.3.blocks.0"] - executed.by_module["stages.3.blocks.0"] == dw * 49
    assert count_macs(at_input_size(small, 224), specialized=True).macs == composer.estimate(
        at_input_size(small, 224)).macs


# torch.compile: one small model of every macro and mixer family (compiling takes ~10-60 s each on 2 cores)
COMPILED = {**FAMILIES,
            "hpxformer": {"extends": "hpxformer_s18", "widths": [16, 16, 32, 32], "depths": [1, 1, 1, 1]},
            "hornet_gf": {"extends": "hornet_tiny_gf", "widths": [16, 32, 64, 128], "depths": [1, 1, 1, 1]},
            "poolformer": {"extends": "poolformerv2_s12", "widths": [16, 16, 32, 32], "depths": [1, 1, 1, 1]},
            "u_swin": {"extends": "u_swin_micro", "depths": [1, 1, 1, 1]},
            "u_halo": {"extends": "u_halo_micro", "depths": [1, 1, 1, 1]},
            "u_pvt": {"extends": "u_pvt_micro", "depths": [1, 1, 1, 1]}}


@pytest.mark.slow
@pytest.mark.parametrize("family", COMPILED)
def test_torch_compile_of_every_family_equals_eager(family):
    spec = {**COMPILED[family], "input_size": 64 if family in ("u_swin", "u_halo") else 32, "num_classes": 10}
    torch._dynamo.reset()   # else, after a few families, dynamo's recompile limit quietly runs the model eagerly
    torch.manual_seed(0)
    model = composer.compose(spec).eval()
    x = torch.randn(2, 3, spec["input_size"], spec["input_size"])
    with torch.no_grad():
        expected = model(x)
        assert rel_error(torch.compile(model, fullgraph=False)(x), expected) < 1e-4


@pytest.mark.slow
def test_torch_compile_of_a_training_step_takes_the_training_paths_and_equals_eager():
    spec = {**FAMILIES["convformer"], "input_size": 32, "num_classes": 10}   # dense operators, channels-last, ...
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = composer.compose(spec).train()
    paths = {m.train_path for m in model.modules() if isinstance(m, MapConv2d)}
    assert {"dense", "channels_last"} <= paths
    compiled = torch.compile(copy.deepcopy(model))
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)   # the same drop-path draws in both
    eager_loss = model(x).square().mean()
    torch.manual_seed(1)
    compiled_loss = compiled(x).square().mean()
    eager_loss.backward(), compiled_loss.backward()
    assert rel_error(compiled_loss, eager_loss) < 1e-4
    for (name, a), b in zip(compiled.named_parameters(), model.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        assert a.grad is None or rel_error(a.grad, b.grad) < 1e-3, name


def test_live_taps_kept_for_inference_follow_every_change_of_the_weight():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    general = copy.deepcopy(conv)
    assert specialize(conv, 2, 2)
    x = torch.randn(2, 8, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), general(x))
        kept = conv.__dict__["_live"]
        conv(x)
        assert conv.__dict__["_live"] is kept        # no copy per call
        for module in (conv, general):
            module.weight.mul_(-2.0)                 # in place: the version counter moves
        torch.testing.assert_close(conv(x), general(x))
    with torch.inference_mode():
        torch.testing.assert_close(conv(x), general(x))
    conv.load_state_dict(nn.Conv2d(8, 16, 3, stride=2, padding=1).state_dict())   # copy_ into the same storage
    general.load_state_dict(conv.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(conv(x), general(x))
    conv.double(), general.double()                   # a new storage and dtype
    with torch.no_grad():
        torch.testing.assert_close(conv(x.double()), general(x.double()))
    out = conv(x.double())                            # gradients on: sliced in the graph, nothing kept is used
    out.sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad[:, :, 0].abs().sum() == 0
