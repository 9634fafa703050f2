"""TransNeXt (aggregated attention, its full attention, ConvGLU, the pvt macro): the published specs and the
Table 9 layout ablations compile to the official counts, the closed forms equal the counted cross-check, and
aggregated attention masks the padding and shares one softmax between its two paths."""

import math
import re

import pytest
import torch

import composer
from composer.cost import count_macs
from composer.mixers import MixerContext
from composer.mixers.transnext import AggregatedAttentionConfig, cpb_table_size
from composer.nn.mixers.transnext import AggregatedAttention
from composer.weights import load

from conftest import SPECS

# shared/reference/targets.md: (params, exact?, fvcore GMACs, which count LayerNorm and so sit 0.3-0.6% above ours)
TARGETS = {
    "transnext_micro": (12_809_304, True, 2.664), "transnext_tiny": (28_258_960, True, 5.734),
    "transnext_small": (49_741_564, True, 10.330), "transnext_base": (89_721_496, True, 18.354),
    "transnext_micro_aamm": (12.22e6, False, 2.655), "transnext_micro_ammm": (12.20e6, False, 2.857),
    "transnext_micro_mmmm": (12.19e6, False, 4.699), "transnext_micro_aaaa_256": (13.114e6, False, 3.345),
}

SMALL = """
macro: pvt
input_size: {size}
num_classes: 10
widths: [24, 48, 72, 96]
depths: [1, 1, 2, 1]
layout: {layout}
channel_mixer: {{type: conv_glu, ratio: [8, 8, 4, 4]}}
"""


def small_spec(size=64, layout="A-A-A-M", mixers=""):
    return SMALL.format(size=size, layout=layout) + mixers


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_params_and_macs_equal_the_targets(name):
    params, exact, gmacs = TARGETS[name]
    est = composer.estimate(SPECS / f"{name}.yaml")
    if exact:
        assert est.params == params
    else:
        assert abs(est.params - params) / params < 0.001
    assert abs(est.macs - gmacs * 1e9) / (gmacs * 1e9) < 0.01
    assert est.fft_macs == 0


def test_ablations_differ_from_micro_only_in_layout():
    micro = composer.load_spec("transnext_micro").model_dump()
    for name in ("transnext_micro_aamm", "transnext_micro_ammm", "transnext_micro_mmmm", "transnext_micro_aaaa_256"):
        spec = composer.load_spec(name).model_dump()
        differ = {k for k in spec if spec[k] != micro[k]}
        assert differ <= {"name", "layout", "input_size"}, (name, differ)


@pytest.mark.parametrize("source", [
    SPECS / "transnext_micro.yaml", SPECS / "transnext_micro_aaaa_256.yaml",
    small_spec(), small_spec(128, "A-A-A-A"), small_spec(80, "A-M-A-M", "mixers: {A: {pool_size: 2}}\n"),
    small_spec(64, "A-A-M-M", "mixers: {A: {sr_ratio: [4, 2, 1, 1], window_size: 5}}\n"),
])
def test_analytic_cost_equals_the_counted_cross_check(source):
    counted = count_macs(source)  # meta device, strict: fails on any op without a formula
    est = composer.estimate(source)
    assert counted.unknown_ops == {} and counted.macs == est.macs
    with torch.device("meta"):
        model = composer.compose(source)
    assert sum(p.numel() for p in model.parameters()) == est.params


def test_official_layout_of_micro():
    with torch.device("meta"):
        model = composer.compose("transnext_micro")
    assert [model.stages[i].blocks[0].mlp.fc2.in_features for i in range(4)] == [256, 512, 512, 1024]
    attn = [model.stages[i].blocks[0].attn for i in range(4)]
    assert [a.pool_len for a in attn[:3]] == [49, 49, 49] and [a.heads for a in attn] == [2, 4, 8, 16]
    assert type(attn[3]).__name__ == "CosineAttention" and attn[3].cpb_coords.shape == (169, 2)
    assert [a.cpb_coords.shape[0] for a in attn[:3]] == [10816, 2704, 676]  # U = (2n - n/p)^2
    assert [cpb_table_size(n, n, 7, 7) for n in (56, 28, 14)] == [10816, 2704, 676]
    with torch.device("meta"):
        aaaa = composer.compose("transnext_micro_aaaa_256")
    assert [aaaa.stages[i].blocks[0].attn.pool for i in range(4)] == [(4, 4)] * 4


def test_length_scale_and_padding_mask_at_the_reference_shape():
    module = AggregatedAttentionConfig(sr_ratio=8).build(MixerContext(48, 56, 56, stage=0))
    scale = module.seq_length_scale.view(56, 56)
    assert scale[28, 28].item() == pytest.approx(math.log(58))  # 9 window positions + 49 pooled
    assert scale[0, 28].item() == pytest.approx(math.log(55))
    assert scale[0, 0].item() == pytest.approx(math.log(53))
    assert module.padding_mask.sum().item() == 4 * 56 * 3 - 4  # the border positions that fall in the padding


def _tiny_attention(seed=0):
    torch.manual_seed(seed)
    module = AggregatedAttention(16, 2, 6, 6, 3, (2, 2), (6, 6), True, 0.0, 0.0).eval()
    return module, torch.randn(1, 6, 6, 16)


def test_border_pixels_give_no_weight_to_padded_positions():
    module, x = _tiny_attention()
    with torch.no_grad():
        win, pool, _, v_win, _ = module.logits(x)
        w_win, w_pool = module.weights(win, pool)
    mask = module.padding_mask  # (N, 9)
    corner = mask[0].nonzero().flatten().tolist()
    assert corner == [0, 1, 2, 3, 6]  # offsets above or left of pixel (0, 0)
    assert mask[7].sum() == 0  # interior pixel (1, 1)
    assert torch.isinf(win[..., mask]).all() and (win[..., mask] < 0).all()  # masked logits
    assert (w_win[..., mask] == 0).all() and (w_win[..., ~mask] > 0).all()
    assert (v_win[:, :, mask] == 0).all()  # padded values are zeros: the QLV term adds nothing there either
    torch.testing.assert_close(w_win.sum(-1) + w_pool.sum(-1), torch.ones(1, 2, 36))


def test_one_softmax_spans_both_paths():
    module, x = _tiny_attention()
    with torch.no_grad():
        win, pool, _, _, _ = module.logits(x)
        w_win, _ = module.weights(win, pool)
        module.sr.weight.mul_(-2.0)  # changes only the pooled keys / values
        win2, pool2, _, _, _ = module.logits(x)
        w_win2, _ = module.weights(win2, pool2)
    assert torch.equal(win, win2) and not torch.allclose(pool, pool2)
    assert (w_win - w_win2).abs().max() > 1e-4  # the window-path weights moved with the pooled keys


def test_a_a_a_a_builds_at_256_and_is_rejected_where_the_last_pool_is_degenerate():
    spec = composer.load_spec("transnext_micro_aaaa_256")
    assert composer.estimate(spec).input_size == 256
    for size, needle in ((224, "7x7 map"), (32, "1x1 map")):
        with pytest.raises(composer.SpecError) as info:
            composer.estimate(spec.model_copy(update={"input_size": size}))
        message = str(info.value)
        assert "stage 3" in message and needle in message
        assert ("degenerate" in message) if size == 224 else ("empty pool" in message)
    # the official transnext_micro_AAAA at 224 (sr 16, 8, 4, 2 -> 3x3 pools) stays reachable explicitly
    explicit = composer.estimate(spec.model_copy(update={"input_size": 224}).model_dump(exclude_unset=True)
                                 | {"input_size": 224, "mixers": {"A": {"sr_ratio": [16, 8, 4, 2]}}})
    assert explicit.params == composer.estimate(spec).params


def test_linear_mode_keeps_the_pool_fixed():
    normal = composer.plan(small_spec(128))
    linear = composer.plan(small_spec(128, mixers="mixers: {A: {pool_size: 2}}\n"))
    big = composer.plan(small_spec(256, mixers="mixers: {A: {pool_size: 2}}\n"))
    assert normal.node("stages.0.blocks.0")["mixer"].pool(MixerContext(24, 32, 32)) == (4, 4)  # follows the input
    for p in (linear, big):
        assert p.node("stages.0.blocks.0")["mixer"].pool_size == 2
    with pytest.raises(composer.SpecError, match=r"stage 2 .*pool_size"):
        composer.estimate(small_spec(64, mixers="mixers: {A: {pool_size: 4}}\n"))  # stage 2 map is 4x4


def test_per_stage_ratio_count_is_checked():
    with pytest.raises(composer.SpecError, match=r"channel_mixer\.ratio.*3 per-stage values"):
        composer.estimate(small_spec().replace("[8, 8, 4, 4]", "[8, 8, 4]"))


def test_forward_backward_of_a_tiny_spec():
    torch.manual_seed(0)
    model = composer.compose(small_spec(64, "A-A-A-A"))
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with torch.no_grad():
        assert [tuple(f.shape[1:]) for f in model.forward_stages(torch.randn(1, 3, 64, 64))] == [
            (24, 16, 16), (48, 8, 8), (72, 4, 4), (96, 2, 2)]
        model.eval()
        feats = model.forward_features(torch.randn(1, 3, 64, 64))
        assert model.forward_head(feats, pre_logits=True).shape == (1, 96)


def _to_official(key: str) -> str:
    """composer -> DaiShiResearch/TransNeXt names (the inverse of the ``transnext`` source)."""
    key = re.sub(r"^stem\.", "patch_embed1.", key)
    key = re.sub(r"^stages\.(\d+)\.downsample\.pre_norm\.", lambda m: f"norm{int(m[1])}.", key)
    key = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", key)
    key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}.", key)
    key = re.sub(r"^head\.global_pool\.norm\.", "norm4.", key)
    return re.sub(r"^head\.fc\.", "head.", key)


def test_official_key_names_load_through_the_transnext_source():
    model = composer.compose(small_spec())
    official = {_to_official(k): v + 1 for k, v in model.state_dict().items()}
    assert {"patch_embed1.proj.weight", "norm1.weight", "norm4.bias", "head.weight", "block3.1.attn.kv.weight",
            "block1.0.attn.learnable_tokens", "block4.0.attn.qkv.weight", "block2.0.mlp.dwconv.dwconv.weight",
            "block3.0.attn.cpb_fc2.weight"} <= set(official)
    load(model, official, source="transnext")
    torch.testing.assert_close(model.stages[2].blocks[1].attn.kv.weight, official["block3.1.attn.kv.weight"])
    torch.testing.assert_close(model.head.global_pool.norm.bias, official["norm4.bias"])
