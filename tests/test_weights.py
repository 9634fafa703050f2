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
