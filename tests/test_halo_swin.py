"""Halo attention (``Halo``, U-HaloNet) and shifted-window attention (``Swin``, U-Swin): parity with timm's
HaloAttn / Swin block on copied weights, the padding mask against a loop-by-loop reference, exact parameter
counts and closed forms equal to the counted cross-check in several macros, and the rejections."""

import math

import pytest
import torch
from timm.layers.halo_attn import HaloAttn
from timm.models.swin_transformer import SwinTransformerBlock

import composer
from composer.cost import count_macs, count_module
from composer.mixers import MixerCheckError, MixerContext
from composer.mixers.halo import HaloAttentionConfig
from composer.mixers.swin import WindowAttentionConfig
from composer.nn.mixers.halo import HaloAttention
from composer.nn.mixers.swin import ShiftedWindowAttention

from conftest import SPECS

SMALL = """
macro: {macro}
input_size: {size}
num_classes: 10
widths: [32, 64, 96, 128]
depths: [1, 1, 2, 1]
layout: {layout}
"""


def small_spec(layout, size=224, macro="metaformer", extra=""):
    return SMALL.format(macro=macro, size=size, layout=layout) + extra


# ---------------------------------------------------------------------------------------------- Halo


def halo_reference(module: HaloAttention, x: torch.Tensor, mask_padding: bool) -> torch.Tensor:
    """Halo attention one query pixel at a time, straight from the definition: the query at (y, x) of block
    (y // b, x // b) sees the keys at map rows by·b - h + ky and columns bx·b - h + kx (ky, kx < w); keys off the
    map are zeros, and with ``mask_padding`` they are left out of the softmax altogether."""
    bsz, height, width, c = x.shape
    heads, d, b, h, w = module.heads, module.head_dim, module.block, module.halo, module.win
    q = module.q(x).view(bsz, height, width, heads, d)
    kv = module.kv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(bsz, height, width, heads, 2, d)
    rel_h, rel_w = module.pos_embed.height_rel, module.pos_embed.width_rel
    out = torch.zeros(bsz, height, width, heads, d, dtype=x.dtype)
    for y in range(height):
        for xx in range(width):
            qy, qx, top, left = y % b, xx % b, (y // b) * b - h, (xx // b) * b - h
            logits, values = [], []
            for ky in range(w):
                for kx in range(w):
                    row, col = top + ky, left + kx
                    inside = 0 <= row < height and 0 <= col < width
                    if mask_padding and not inside:
                        continue
                    key = kv[:, row, col, :, 0] if inside else torch.zeros(bsz, heads, d, dtype=x.dtype)
                    value = kv[:, row, col, :, 1] if inside else torch.zeros(bsz, heads, d, dtype=x.dtype)
                    qv = q[:, y, xx]  # (B, heads, d)
                    position = qv @ rel_h[w - 1 + ky - qy] + qv @ rel_w[w - 1 + kx - qx]  # not scaled
                    logits.append((qv * key).sum(-1) * d ** -0.5 + position)
                    values.append(value)
            weights = torch.stack(logits, -1).softmax(-1)  # (B, heads, keys)
            out[:, y, xx] = (weights.unsqueeze(-1) * torch.stack(values, -2)).sum(-2)
    return module.proj(out.reshape(bsz, height, width, c))


def halo(dim=64, heads=2, block=7, halo_size=3, mask_padding=True, dtype=torch.float32):
    torch.manual_seed(0)
    module = HaloAttention(dim, heads, block, halo_size, False, mask_padding, 0.0, 0.0).to(dtype)
    with torch.no_grad():  # non-zero proj bias so that it takes part in the comparison
        module.proj.bias.normal_()
    return module


def test_halo_unmasked_equals_timm_halo_attn():
    # timm's HaloAttn is the original HaloNet (no padding mask, no output projection, q as a 1x1 conv);
    # mask_padding: false is that original, so with copied weights the two agree (after our proj)
    ours = halo(mask_padding=False)
    ref = HaloAttn(64, num_heads=2, block_size=7, halo_size=3)
    with torch.no_grad():
        ref.q.weight.copy_(ours.q.weight[:, :, None, None])
        ref.kv.weight.copy_(ours.kv.weight)
        ref.pos_embed.height_rel.copy_(ours.pos_embed.height_rel)
        ref.pos_embed.width_rel.copy_(ours.pos_embed.width_rel)
    x = torch.randn(2, 14, 21, 64)
    expected = ours.proj(ref(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
    torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_padding", [True, False])
def test_halo_equals_the_per_pixel_definition(mask_padding):
    module = halo(dim=8, heads=2, block=3, halo_size=1, mask_padding=mask_padding, dtype=torch.float64)
    x = torch.randn(2, 6, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(module(x), halo_reference(module, x, mask_padding))


def test_halo_pads_maps_the_block_does_not_divide_and_masks_the_padding():
    # an 8 x 7 map with 3 x 3 blocks is padded to 9 x 9; every real query still sees exactly its real neighbours
    module = halo(dim=8, heads=2, block=3, halo_size=1, dtype=torch.float64)
    x = torch.randn(1, 8, 7, 8, dtype=torch.float64)
    torch.testing.assert_close(module(x), halo_reference(module, x, mask_padding=True))


class CaptureWeights(torch.nn.Module):
    def forward(self, attn):
        self.weights = attn
        return attn


@pytest.mark.parametrize("hw", [(14, 14), (7, 7), (10, 12)])
def test_halo_padded_keys_get_exactly_zero_weight(hw):
    module = halo()
    module.attn_drop = CaptureWeights()  # sees the softmax output (B, heads, blocks, b², w²)
    height, width = hw
    module(torch.randn(1, height, width, 64))
    weights = module.attn_drop.weights
    nh, nw = -(-height // 7), -(-width // 7)
    pos_y = torch.arange(nh)[:, None] * 7 - 3 + torch.arange(13)  # (blocks along H, w): map row of each key
    pos_x = torch.arange(nw)[:, None] * 7 - 3 + torch.arange(13)
    inside = (((pos_y >= 0) & (pos_y < height))[:, None, :, None]
              & ((pos_x >= 0) & (pos_x < width))[None, :, None, :]).reshape(nh * nw, 1, 169)
    assert torch.all(weights.masked_select(~inside.expand_as(weights[0, 0])) == 0)
    assert torch.all(weights.masked_select(inside.expand_as(weights[0, 0])) > 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))


def test_halo_params_and_state_dict_keys():
    # U-HaloNet-Tiny stage 1: C = 96, 3 heads of 32, w = 13: q 96², kv 2·96², proj 96² + 96, two (25, 32) tables
    module = HaloAttentionConfig().build(MixerContext(96, 56, 56))
    assert sum(p.numel() for p in module.parameters()) == 4 * 96 * 96 + 96 + 2 * 25 * 32 == 38560
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {
        "q.weight": (96, 96), "kv.weight": (192, 96, 1, 1), "pos_embed.height_rel": (25, 32),
        "pos_embed.width_rel": (25, 32), "proj.weight": (96, 96), "proj.bias": (96,)}
    assert HaloAttentionConfig().cost(MixerContext(96, 56, 56)).params == 38560


@pytest.mark.parametrize("dim, hw", [(64, (14, 14)), (96, (7, 7)), (32, (10, 12))])
def test_halo_cost_equals_the_counter(dim, hw):
    config = HaloAttentionConfig()
    ctx = MixerContext(dim, *hw)
    module = config.build(ctx)
    counted = count_module(module, torch.randn(1, *hw, dim))
    n, padded = hw[0] * hw[1], -(-hw[0] // 7) * 7 * -(-hw[1] // 7) * 7
    # q, kv, proj on the real tokens; q·kᵀ, attn·v (13² keys) and both relative logits (25 each) on the padded blocks
    assert counted.macs == config.cost(ctx).macs == 4 * n * dim * dim + padded * dim * (2 * 169 + 2 * 25)
    assert counted.unknown_ops == {}


def test_halo_init_follows_the_reference():
    model = composer.compose(small_spec("Conv-Conv-Halo-Halo"))
    attn = model.stages[3].blocks[0].token_mixer
    rel = torch.cat([attn.pos_embed.height_rel, attn.pos_embed.width_rel]).detach()
    assert abs(rel.std().item() - 32 ** -0.5) < 0.03  # N(0, d^-1/2), not overwritten by the generic init
    assert abs(attn.q.weight.std().item() - 0.02) < 0.003  # trunc-normal 0.02 from the macro


# ---------------------------------------------------------------------------------------------- Swin


def swin(dim=64, heads=2, window=7, shift=0):
    torch.manual_seed(0)
    module = ShiftedWindowAttention(dim, heads, window, shift, True, 0.0, 0.0)
    with torch.no_grad():
        module.qkv.bias.normal_()
        module.proj.bias.normal_()
    return module


def timm_swin_attention(module: ShiftedWindowAttention, resolution: int, shift: int) -> SwinTransformerBlock:
    ref = SwinTransformerBlock(module.qkv.in_features, (resolution, resolution), num_heads=module.heads, window_size=7,
                               shift_size=shift)
    ref.attn.load_state_dict(module.state_dict())  # qkv, proj, relative_position_bias_table
    return ref


@pytest.mark.parametrize("size, shift", [(14, 0), (14, 3), (21, 3)])
def test_swin_equals_timm_block_attention(size, shift):
    # timm's SwinTransformerBlock._attn: roll, window_partition, WindowAttention with its -100 mask, reverse, roll
    module = swin(shift=shift)
    x = torch.randn(2, size, size, 64)
    assert torch.equal(module(x), timm_swin_attention(module, size, shift)._attn(x))


def test_swin_clamps_the_window_on_small_maps_like_timm():
    config = WindowAttentionConfig()
    module = config.build(MixerContext(64, 5, 5, block=1))  # odd block, but the map is not larger than 7
    assert (module.window, module.shift) == (5, 0)
    assert module.relative_position_bias_table.shape == (81, 2)
    ref = SwinTransformerBlock(64, (5, 5), num_heads=2, window_size=7, shift_size=3)
    assert ref.window_size == (5, 5) and ref.shift_size == (0, 0)
    ref.attn.load_state_dict(module.state_dict())
    x = torch.randn(2, 5, 5, 64)
    assert torch.equal(module(x), ref._attn(x))


@pytest.mark.parametrize("shift", [0, 3])
def test_swin_pads_before_shifting_as_the_official_detection_code(shift):
    # official Swin (and STM-Evaluation's detection backbone) pad the 10 x 12 map to 14 x 14 first, then shift
    # and mask on the padded map, then crop: timm's block at the padded resolution on the padded input
    module = swin(shift=shift)
    x = torch.randn(2, 10, 12, 64)
    padded = torch.nn.functional.pad(x, (0, 0, 0, 2, 0, 4))
    expected = timm_swin_attention(module, 14, shift)._attn(padded)[:, :10, :12]
    assert torch.equal(module(x), expected)


def test_swin_shift_mask_changes_only_the_wrapped_windows():
    plain, shifted = swin(shift=0), swin(shift=3)
    x = torch.randn(1, 14, 14, 64)
    rolled_back = torch.roll(plain(torch.roll(x, (-3, -3), (1, 2))), (3, 3), (1, 2))  # shift without the mask
    out = shifted(x)
    # the window at the top-left of the shifted map holds one region only: no mask, same result
    torch.testing.assert_close(out[:, 3:10, 3:10], rolled_back[:, 3:10, 3:10], rtol=1e-5, atol=1e-6)
    # the windows that wrap around mix regions, which the -100 mask keeps apart
    assert (out[:, 10:, 10:] - rolled_back[:, 10:, 10:]).abs().max() > 1e-3


def test_swin_shifts_odd_blocks_of_a_stage_only():
    model = composer.compose(small_spec("Swin-Swin-Swin-Swin", extra="depths: [2, 2, 2, 2]\n").replace(
        "depths: [1, 1, 2, 1]\n", ""))
    # maps 56, 28, 14, 7: window 7 everywhere, shifted on blocks 1, except in stage 4 (7 x 7: clamped, no shift)
    shifts = [[block.token_mixer.shift for block in stage.blocks] for stage in model.stages]
    assert shifts == [[0, 3], [0, 3], [0, 3], [0, 0]]
    assert all(block.token_mixer.window == 7 for stage in model.stages for block in stage.blocks)


def test_swin_params_and_state_dict_keys():
    # U-Swin-Tiny stage 1: qkv 96·288 + 288, proj 96² + 96, a (13², 3) bias table
    module = WindowAttentionConfig().build(MixerContext(96, 56, 56, block=1))
    assert sum(p.numel() for p in module.parameters()) == 4 * 96 * 96 + 4 * 96 + 169 * 3 == 37755
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {
        "qkv.weight": (288, 96), "qkv.bias": (288,), "relative_position_bias_table": (169, 3),
        "proj.weight": (96, 96), "proj.bias": (96,)}
    assert WindowAttentionConfig().cost(MixerContext(96, 56, 56)).params == 37755
    assert abs(module.relative_position_bias_table.std().item() - 0.02) < 0.004


@pytest.mark.parametrize("dim, hw, block", [(64, (14, 14), 1), (96, (7, 7), 0), (32, (10, 12), 1), (32, (4, 4), 1)])
def test_swin_cost_equals_the_counter(dim, hw, block):
    config = WindowAttentionConfig()
    ctx = MixerContext(dim, *hw, block=block)
    counted = count_module(config.build(ctx), torch.randn(1, *hw, dim))
    m = min(7, *hw)
    padded = math.ceil(hw[0] / m) * m * math.ceil(hw[1] / m) * m
    assert counted.macs == config.cost(ctx).macs == 4 * padded * dim * dim + 2 * padded * m * m * dim
    assert counted.unknown_ops == {}


# ---------------------------------------------------------------------------------------------- both


@pytest.mark.parametrize("macro, size, layout", [
    ("metaformer", 224, "Halo-Halo-Halo-Halo"), ("metaformer", 224, "Swin-Swin-Swin-Swin"),
    ("metaformer", 96, "Swin-Halo-Swin-Halo"), ("pvt", 224, "Halo-Swin-Halo-Swin"),
    ("hornet", 160, "Conv-Halo-Swin-Halo")])
def test_estimate_equals_the_counted_cross_check(macro, size, layout):
    if macro == "hornet":  # HorNet's conventions want its own mixer symbols around; any symbol works in any macro
        layout = layout.replace("Conv", "gnConv")
    spec = small_spec(layout, size=size, macro=macro)
    counted, est = count_macs(spec), composer.estimate(spec)
    assert counted.macs == est.macs and counted.unknown_ops == {}
    with torch.device("meta"):
        model = composer.compose(spec)
    assert sum(p.numel() for p in model.parameters()) == est.params


@pytest.mark.parametrize("layout", ["Halo-Swin-Halo-Swin", "Swin-Halo-Swin-Halo"])
def test_forward_and_backward_reach_every_parameter(layout):
    model = composer.compose(small_spec(layout, size=64))
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []
    for stage in model.stages:
        mixer = stage.blocks[0].token_mixer
        table = mixer.pos_embed.height_rel if isinstance(mixer, HaloAttention) else mixer.relative_position_bias_table
        assert table.grad.abs().sum() > 0


REJECTIONS = {
    "halo heads do not divide": (HaloAttentionConfig(num_heads=5), MixerContext(64, 14, 14),
                                 "num_heads", "width 64 is not divisible by num_heads 5"),
    "halo head_dim does not divide": (HaloAttentionConfig(), MixerContext(48, 14, 14), None,
                                      "width 48 is not divisible by head_dim 32"),
    "halo block does not divide, padding off": (
        HaloAttentionConfig(pad_to_blocks=False), MixerContext(64, 16, 16), "block_size",
        "block_size 7 does not divide the 16x16 map; choose a block_size dividing it"),
    "halo block does not divide, mask off": (
        HaloAttentionConfig(mask_padding=False), MixerContext(64, 12, 14), "mask_padding",
        "without mask_padding the queries would attend to the zeros padded up to whole blocks"),
    "swin heads do not divide": (WindowAttentionConfig(num_heads=3), MixerContext(64, 14, 14), "num_heads",
                                 "width 64 is not divisible by num_heads 3"),
    "swin head_dim does not divide": (WindowAttentionConfig(head_dim=24), MixerContext(64, 14, 14), None,
                                      "width 64 is not divisible by head_dim 24"),
    "swin shift not smaller than window": (WindowAttentionConfig(shift_size=7), MixerContext(64, 14, 14),
                                           "shift_size", "shift_size 7 must be smaller than window_size 7"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejections_name_the_field_and_the_fix(case):
    config, ctx, field, message = REJECTIONS[case]
    with pytest.raises(MixerCheckError, match=message) as err:
        config.check(ctx)
    assert err.value.field == field


def test_unmasked_halo_and_divisible_maps_are_accepted():
    HaloAttentionConfig(pad_to_blocks=False).check(MixerContext(64, 14, 14))
    HaloAttentionConfig(mask_padding=False).check(MixerContext(64, 7, 7))


def test_spec_level_rejection_points_at_the_mixer_field(write_spec):
    path = write_spec(small_spec("Conv-Conv-Halo-Halo", size=256, extra="mixers:\n  Halo: {pad_to_blocks: false}\n"))
    with pytest.raises(composer.SpecError) as err:
        composer.estimate(path)
    text = str(err.value)
    assert "mixers.Halo.block_size: stage 2 (Halo, width 96, 16x16 map): block_size 7 does not divide" in text


# ---------------------------------------------------------------------------------------------- u_* specs

# targets.md, "Unified architecture", code-measured (fvcore, 224): (params, GMACs). The params are also the exact
# counts of the official STM-Evaluation models (unified_{halo,swin}_*), which these specs reproduce to the unit.
U_TARGETS = {
    "u_halo_micro": (4.39e6, 0.87, 4_389_672), "u_halo_tiny": (31.52e6, 5.32, 31_523_176),
    "u_halo_small": (52.83e6, 9.84, 52_831_336), "u_halo_base": (93.33e6, 17.07, 93_327_336),
    "u_swin_micro": (4.38e6, 0.71, 4_381_042), "u_swin_tiny": (31.54e6, 4.91, 31_540_546),
    "u_swin_small": (52.87e6, 9.17, 52_867_666), "u_swin_base": (93.39e6, 16.17, 93_388_576),
}


@pytest.mark.parametrize("name", sorted(U_TARGETS))
def test_unified_specs_match_the_official_code(name):
    params, gmacs, exact = U_TARGETS[name]
    est = composer.estimate(SPECS / f"{name}.yaml")
    assert est.params == exact and abs(est.params - params) / params < 0.005
    # fvcore also counts the LayerNorms (5 per element); ours is the convention's matmul count, 0.2-1.5% below
    assert -0.02 < (est.macs - gmacs * 1e9) / (gmacs * 1e9) < 0
    assert est.fft_macs == 0


@pytest.mark.parametrize("name", ["u_halo_micro", "u_swin_micro"])
def test_unified_micro_estimate_equals_the_counted_cross_check(name):
    counted = count_macs(SPECS / f"{name}.yaml")
    assert counted.macs == composer.estimate(SPECS / f"{name}.yaml").macs and counted.unknown_ops == {}


def test_unified_specs_differ_only_in_scale():
    for family in ("halo", "swin"):
        specs = {scale: composer.load_spec(f"u_{family}_{scale}").model_dump() for scale in ("micro", "tiny", "small",
                                                                                             "base")}
        for scale, spec in specs.items():
            differ = {k for k in spec if spec[k] != specs["tiny"][k]}
            assert differ <= {"name", "widths", "depths", "drop_path_rate"}, (family, scale, differ)
    assert composer.load_spec("u_halo_tiny").norm.eps == 1e-5  # nn.LayerNorm in the Halo blocks
    assert composer.load_spec("u_swin_tiny").norm.eps == 1e-6  # LayerNorm2d in the Swin blocks
