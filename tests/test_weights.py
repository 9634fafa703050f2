import json
import re
from pathlib import Path

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


# The state-dict keys and shapes of the official STM-Evaluation models (classification/models, MetaArch's
# unified_{convnext,halo,pvt,swin,dcn_v3}_micro), read off the official code run outside this repository; Swin's
# include the relative_position_index buffers that timm <= 0.6 (the official code's timm) saves.
STM_KEYS = json.loads((Path(__file__).parent / "data" / "stm_official_keys_micro.json").read_text())
STM_PRESETS = {"dwconv": "u_dwconv_micro", "halo": "u_halo_micro", "pvt": "u_pvt_micro", "swin": "u_swin_micro",
               "internimage": "u_internimage_micro"}
# official key -> composer key, one per block kind, written from the official block classes
STM_SAMPLES = {
    "dwconv": [("stages.0.0.dw_input_proj.weight", "stages.0.blocks.0.token_mixer.pwconv1.weight"),
               ("stages.0.0.pwconv1.weight", "stages.0.blocks.0.mlp.fc1.weight"),
               ("stages.2.3.gamma_1", "stages.2.blocks.3.layer_scale1.scale")],
    "halo": [("stages.1.0.attn.kv.weight", "stages.1.blocks.0.token_mixer.kv.weight"),
             ("stages.3.1.gamma_2", "stages.3.blocks.1.layer_scale2.scale")],
    "pvt": [("stages.0.0.pos_embed", "stages.0.blocks.0.token_mixer.pos_embed"),
            ("stages.0.1.attn.sr.weight", "stages.0.blocks.1.token_mixer.sr.weight")],
    "swin": [("stages.0.1.attn.relative_position_bias_table",
              "stages.0.blocks.1.token_mixer.relative_position_bias_table")],
    "internimage": [("stages.2.0.attn.sampling_offsets.weight",
                     "stages.2.blocks.0.token_mixer.sampling_offsets.weight")],
}


@pytest.mark.parametrize("stm", STM_PRESETS)
def test_official_stm_checkpoints_load_strictly(stm, tmp_path):
    """Every official key maps (the macro's: downsample_layers.0.stem / .i.reduction, stage_norms, conv_head, head;
    the block's per STM), Linear weights and (1, C, 1, 1) / (1, 1, 1, C) layer scales take composer's shapes, the
    buffers MetaArch skips are dropped, and each official tensor lands where it belongs."""
    torch.manual_seed(0)
    official = {key: torch.randn(shape) for key, shape in STM_KEYS[stm]}
    if stm == "swin":
        assert any(k.endswith("relative_position_index") for k in official)
        assert any(k.endswith("attn_mask") for k in official)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {f"module.{k}": v for k, v in official.items()}, "epoch": 3}, path)   # as DDP saves it
    model = compose(STM_PRESETS[stm])
    weights.load(model, path, source="stm")   # strict
    state = model.state_dict()
    for key, ours in STM_SAMPLES[stm] + [("downsample_layers.0.stem.0.weight", "stem.0.weight"),
                                          ("downsample_layers.2.reduction.0.weight", "stages.2.downsample.0.weight"),
                                          ("stage_norms.3.weight", "stages.3.norm.weight"),
                                          ("conv_head.1.running_var", "head.global_pool.norm.running_var"),
                                          ("head.weight", "head.fc.weight")]:
        assert torch.equal(state[ours].flatten(), official[key].flatten()), (key, ours)
