import re

import pytest
import timm
import torch

from composer import compose, weights

from conftest import SPECS


def _to_sail_sg(key: str) -> str:
    """The original sail-sg MetaFormer names (the inverse of timm's checkpoint filter)."""
    key = re.sub(r"^stem\.conv\.", "downsample_layers.0.conv.", key)
    key = re.sub(r"^stem\.norm\.", "downsample_layers.0.post_norm.", key)
    key = re.sub(r"^stages\.(\d+)\.downsample\.norm\.", r"downsample_layers.\1.pre_norm.", key)
    key = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
    key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
    key = re.sub(r"^head\.norm\.", "norm.", key)
    return re.sub(r"^head\.fc\.", "head.", key)


def test_loads_timm_and_sail_sg_layouts(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("caformer_s18").eval()
    state = ref.state_dict()
    sail = {_to_sail_sg(k): (v.flatten(1) if v.ndim == 4 and v.shape[-1] == 1 else v) for k, v in state.items()}
    assert "downsample_layers.1.pre_norm.weight" in sail and sail["stages.0.0.mlp.fc1.weight"].ndim == 2
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sail}, path)
    model = weights.load(compose(SPECS / "caformer_s18.yaml"), path, source="timm").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (model(x) - ref(x)).abs().max().item() <= 1e-4


def test_mismatch_lists_missing_and_unexpected_keys():
    state = timm.create_model("caformer_s18").state_dict()
    state.pop("head.fc.fc2.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(weights.WeightsError, match=r"1 missing: head\.fc\.fc2\.bias; 1 unexpected: extra\.weight"):
        weights.load(compose(SPECS / "caformer_s18.yaml"), state)


def test_unknown_source_and_missing_file(tmp_path):
    model = compose(SPECS / "poolformerv2_s12.yaml")
    with pytest.raises(weights.WeightsError, match="unknown weight source 'nope'"):
        weights.load(model, {}, source="nope")
    with pytest.raises(weights.WeightsError, match="no checkpoint file"):
        weights.load(model, tmp_path / "missing.pth")


HPX_SPEC = """
name: tiny_hpx
input_size: 64
widths: [8, 16, 32, 32]
depths: [1, 1, 2, 1]
layout: [Conv, Hpx, [Hb, A], Hpx]
mixers:
  Hpx: {filter_emb_dim: 8, use_layernorm: true}
  Hb: {emb_dim: 5, filter_order: 8}
head: {hidden_norm: {type: layernorm, eps: 1.0e-5}}
"""


def test_loads_official_hyenapixel_layout():
    """The official checkpoints use sail-sg's outer names, Linear-shaped 1x1 layers and composer's mixer keys."""
    torch.manual_seed(0)
    ref = compose(HPX_SPEC).eval()
    linear = re.compile(r"(mlp\.fc[12]|pwconv[12])\.weight$")  # Linears in the channels-last official blocks
    official = {_to_sail_sg(k): (v.flatten(1) if linear.search(k) else v) for k, v in ref.state_dict().items()}
    assert "stages.1.0.token_mixer.long_conv.z" in official and "norm.weight" in official
    assert "stages.2.0.token_mixer.filter_fn.pos_emb.z" in official and "head.fc1.weight" in official
    assert official["stages.0.0.token_mixer.pwconv1.weight"].ndim == 2
    torch.manual_seed(1)
    model = weights.load(compose(HPX_SPEC), {"state_dict": official}, source="hyenapixel").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    official.pop("stages.1.0.token_mixer.long_conv.deltas")
    official["stages.1.0.token_mixer.long_conv.extra"] = torch.zeros(1)
    prefix = r"stages\.1\.blocks\.0\.token_mixer\.long_conv"
    with pytest.raises(weights.WeightsError, match=rf"source='hyenapixel'\): 1 missing: {prefix}\.deltas; "
                                                   rf"1 unexpected: {prefix}\.extra"):
        weights.load(compose(HPX_SPEC), official, source="hyenapixel")
