"""The unified macro of "Demystify Transformers & Convolutions" (STM-Evaluation's MetaArch) and U-DWConv."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import composer
from composer.cost import count_macs

SPECS = Path(__file__).resolve().parents[1] / "specs"

# STM-Evaluation's code, measured with fvcore at 224 (targets.md): params, GMACs
U_DWCONV = {"micro": (4.44e6, 0.66), "tiny": (31.91e6, 5.02), "small": (54.39e6, 9.43), "base": (95.87e6, 16.67)}


@pytest.mark.parametrize("size", list(U_DWCONV))
def test_u_dwconv_matches_the_official_code(size):
    params, gmacs = U_DWCONV[size]
    est = composer.estimate(SPECS / f"u_dwconv_{size}.yaml")
    assert abs(est.params - params) / params < 0.005
    # fvcore also counts norms (5 FLOPs per element), which we do not: below, never above
    assert -0.02 < (est.macs - gmacs * 1e9) / (gmacs * 1e9) < 0


def test_u_dwconv_micro_exact_params_and_counted_macs():
    est = composer.estimate(SPECS / "u_dwconv_micro.yaml")
    model = composer.compose(SPECS / "u_dwconv_micro.yaml")
    assert est.params == sum(p.numel() for p in model.parameters()) == 4_439_624
    assert count_macs(SPECS / "u_dwconv_micro.yaml").macs == est.macs == 648_143_616


SMALL = """
macro: unified
input_size: 64
num_classes: 10
widths: [16, 32, 48, 64]
depths: [1, 2, 1, 1]
layout: DW-DW-DW-DW
"""


def _ln2d(x, state, key, eps=1e-6):
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), state[f"{key}.weight"], state[f"{key}.bias"],
                        eps).permute(0, 3, 1, 2)


def _reference_forward(state, x, depths):
    """MetaArch written out with functional ops from the paper's description (hyenapixel-metaformer-stm.md §3.1,
    §3.7): two-conv stem, conv + LN downsampling, layer-scaled pre-norm blocks, LN after every stage, conv-BN-GELU
    head; reads the weights by key."""
    x = F.conv2d(x, state["stem.0.weight"], state["stem.0.bias"], stride=2, padding=1)
    x = F.gelu(_ln2d(x, state, "stem.1"))
    x = _ln2d(F.conv2d(x, state["stem.3.weight"], state["stem.3.bias"], stride=2, padding=1), state, "stem.4")
    for i, depth in enumerate(depths):
        if i:
            x = F.conv2d(x, state[f"stages.{i}.downsample.0.weight"], None, stride=2, padding=1)
            x = _ln2d(x, state, f"stages.{i}.downsample.1")
        for j in range(depth):
            b = f"stages.{i}.blocks.{j}"
            y = _ln2d(x, state, f"{b}.norm1")
            y = F.conv2d(y, state[f"{b}.token_mixer.pwconv1.weight"], state[f"{b}.token_mixer.pwconv1.bias"])
            y = F.conv2d(y, state[f"{b}.token_mixer.dwconv.weight"], state[f"{b}.token_mixer.dwconv.bias"],
                         padding=3, groups=y.shape[1])
            y = F.conv2d(y, state[f"{b}.token_mixer.pwconv2.weight"], state[f"{b}.token_mixer.pwconv2.bias"])
            x = x + state[f"{b}.layer_scale1.scale"].view(-1, 1, 1) * y
            y = _ln2d(x, state, f"{b}.norm2").permute(0, 2, 3, 1)  # MetaArch's MLP: Linears on channels-last
            fc1, fc2 = (state[f"{b}.mlp.fc{k}.weight"].flatten(1) for k in (1, 2))  # ours: 1x1 convs in NCHW
            y = F.linear(F.gelu(F.linear(y, fc1, state[f"{b}.mlp.fc1.bias"])), fc2, state[f"{b}.mlp.fc2.bias"])
            x = x + (state[f"{b}.layer_scale2.scale"] * y).permute(0, 3, 1, 2)
        x = _ln2d(x, state, f"stages.{i}.norm")
    x = F.conv2d(x, state["head.global_pool.conv.weight"])
    x = F.batch_norm(x, state["head.global_pool.norm.running_mean"], state["head.global_pool.norm.running_var"],
                     state["head.global_pool.norm.weight"], state["head.global_pool.norm.bias"], eps=1e-5)
    x = F.gelu(x).mean((2, 3))
    return F.linear(x, state["head.fc.weight"], state["head.fc.bias"])


def test_unified_macro_computes_metaarch():
    torch.manual_seed(0)
    model = composer.compose(SMALL).eval()
    with torch.no_grad():  # give layer scales, norms and BN statistics values that show in the output
        for name, p in model.named_parameters():
            if "scale" in name or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
        model.head.global_pool.norm.running_mean.normal_()
        model.head.global_pool.norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 64)
    state = model.state_dict()
    torch.testing.assert_close(model(x), _reference_forward(state, x, [1, 2, 1, 1]), atol=1e-4, rtol=1e-4)
    # every stage output is normalised: forward_stages gives the maps after stages.i.norm
    outs = model.forward_stages(x)
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 16, 16), (32, 8, 8), (48, 4, 4), (64, 2, 2)]
    assert model.num_features == 64 and model.head_hidden_size == 96   # the map vs the 1.5x pooled width
    assert model.forward_head(outs[-1], pre_logits=True).shape == (2, 96)


def test_unified_init_and_structure():
    model = composer.compose(SMALL)
    assert model.stages[1].downsample[0].bias is None  # bias-free downsampling conv
    assert torch.all(model.stages[0].blocks[0].layer_scale1.scale == 1e-6)
    assert model.stem[0].weight.std().item() == pytest.approx(0.02, rel=0.35)  # trunc-normal 0.02 after building
    assert torch.all(model.stem[0].bias == 0)
    est = composer.estimate(SMALL)
    assert est.params == sum(p.numel() for p in model.parameters())
    assert count_macs(SMALL).macs == est.macs


def test_stage_norm_only_in_unified():
    """The stage-norm hook adds no module to the macros without one (their state-dict keys stay timm's)."""
    caformer = composer.plan(SPECS / "caformer_s18.yaml")
    assert not [n for n in caformer.graph if n.endswith(".norm") and n.startswith("stages.")]
    unified = composer.plan(SMALL)
    assert [n for n in unified.graph if n.startswith("stages.") and n.endswith(".norm")] == [
        f"stages.{i}.norm" for i in range(4)]
