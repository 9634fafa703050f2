"""Loading checkpoints into compiled models: ``load(model, path_or_state_dict, source=...)``.

A source names a key layout. ``timm`` is our own layout (composer keeps timm's MetaFormer keys) and also
accepts the original sail-sg MetaFormer names (``downsample_layers.*``, ``stages.i.j``, ``norm``, ``head.fc1``),
which the official HorNet (``hornet``) and HyenaPixel (``hyenapixel``) checkpoints share, renamed and reshaped
(sail-sg stores 1x1 convs as linears) the way timm's checkpoint filter documents.
Loading is strict: a mismatch raises :class:`WeightsError` listing the missing and unexpected keys.
An ensemble (``ComposedEnsemble``) is loaded member by member: ``load(model.members[i], checkpoint_i, ...)``.
A 224 HyenaPixel checkpoint for a model compiled at another input_size with re-sized filters goes through
:func:`composer.resolution.resize_hyena_state_dict` first (docs/hyenapixel.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .registry import WEIGHT_SOURCES as SOURCES
from .registry import RegistryError, load_plugins, register_weight_source

if TYPE_CHECKING:  # annotations only: the key mappings are plain string work, torch is imported to load
    import torch
    from torch import nn


class WeightsError(ValueError):
    pass


def _sail_sg_to_timm(key: str) -> str:
    key = re.sub(r"^downsample_layers\.0\.", "stem.", key)
    key = re.sub(r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample.", key)
    key = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", key)
    # sail-sg names the stem / downsampling norms pre_norm / post_norm; mixers may use those names too (HorNet's GF)
    key = re.sub(r"^(stem|stages\.\d+\.downsample)\.(pre|post)_norm\.", r"\1.norm.", key)
    key = re.sub(r"^head\.", "head.fc.", key)  # sail-sg's head is timm's head.fc (MlpHead or Linear)
    return re.sub(r"^norm\.", "head.norm.", key)


def _timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "stem.0.conv.weight" in state and any(".local.main." in k for k in state):
        return lowformer_state_dict(state)  # timm's LowFormer
    if any(k.startswith("head.fc1.") for k in state) and any(k.startswith("stem.") for k in state):
        # timm's layout (stem.*) with its MlpClassifierHead (InceptionNeXt): head.fc1 / head.norm / head.fc2 are
        # composer's MLP head, head.fc (the classifier, as in timm's MetaFormer); sail-sg's layout also has
        # head.fc1 but no stem.*
        return {re.sub(r"^head\.(fc1|norm|fc2)\.", r"head.fc.\1.", k): v for k, v in state.items()}
    if any(k.startswith("layers.0.") for k in state) and any(k.startswith("stem.proj.") for k in state):
        # timm's FocalNet: layers.i are composer's stages.i, its final map norm is the last stage's norm
        last = max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
        return {re.sub(r"^norm\.", f"stages.{last}.norm.", re.sub(r"^layers\.", "stages.", k)): v
                for k, v in state.items()}
    if any(k.startswith("stem.") for k in state):
        return dict(state)
    return {_sail_sg_to_timm(k): v for k, v in state.items()}


# The official HorNet and HyenaPixel repositories use the same outer layout as sail-sg's MetaFormer
# (downsample_layers.*, stages.i.j, norm, head; HyenaPixel's MetaFormer is a copy of sail-sg's, channels-last, so
# its SepConv / MLP 1x1 layers are Linears), and their mixer keys are composer's (Hpx: pointwise_conv,
# depthwise_conv, long_conv.*; Hb: in_proj, short_filter, filter_fn.*), so one mapping serves all three.
for _name in ("timm", "hornet", "hyenapixel"):
    register_weight_source(_name, _timm)


# -- official checkpoints (DaiShiResearch/TransNeXt): patch_embed{i}, block{i}.{j}, norm{i}, head ------------

def _transnext_key(key: str) -> str:
    key = re.sub(r"^patch_embed1\.", "stem.", key)
    key = re.sub(r"^patch_embed(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.", key)
    key = re.sub(r"^block(\d+)\.(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.", key)
    key = re.sub(r"^norm(\d+)\.", lambda m: f"stages.{int(m[1])}.downsample.pre_norm.", key)
    return re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", key)


def transnext_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official TransNeXt keys -> composer's (``pvt`` macro); composer's own keys pass through. The final
    norm is ``norm4`` in the four-stage models (the last ``norm{i}`` always maps to the head)."""
    if any(k.startswith("stem.") for k in state):
        return dict(state)
    last = max((int(m[1]) for k in state if (m := re.match(r"^norm(\d+)\.", k))), default=4)
    out = {}
    for key, value in state.items():
        if re.match(rf"^norm{last}\.", key):
            key = "head.global_pool.norm." + key.split(".", 1)[1]
        out[_transnext_key(key)] = value
    return out


register_weight_source("transnext", transnext_state_dict)


# -- LowFormer: the official checkpoints (altair199797/LowFormer, lowformer_model.py) and timm's lowformer.py ---
# official:  backbone.input_stem.op_list.{0: ConvLayer, j: ResidualBlock(main)}, backbone.stages.i.op_list.j
#            (j = 0: the stride-2 block, no residual; then ResidualBlock(main) or LowFormerBlock.total =
#            [[attention residual (main = [GroupNorm, ConvAttention]), MLP residual], local residual]),
#            head.op_list.{0: ConvLayer, 2: LinearLayer(linear, norm), 3: LinearLayer(linear)}
# timm:      stem.{0, j}, stages.i.j with .attn / .mlp / .local, in_conv, pre_classifier.{0, 1}, classifier
# composer:  stem, stages.0.blocks.(j-1), stages.(i+1).downsample / .blocks.(j-1) with norm1, token_mixer, norm2,
#            mlp.fc1 / fc2, local; head.global_pool (conv, norm), head.fc (fc1, norm, fc2)

_LOWFORMER_OFFICIAL = [  # official -> timm, in order
    (r"^backbone\.input_stem\.op_list\.", "stem."),
    (r"^backbone\.stages\.(\d+)\.op_list\.", r"stages.\1."),
    (r"^head\.opseq\.", "head."),  # the official ClsHeadTorchScript
    (r"^head\.op_list\.0\.", "in_conv."),
    (r"^head\.op_list\.2\.linear\.", "pre_classifier.0."),
    (r"^head\.op_list\.2\.norm\.", "pre_classifier.1."),
    (r"^head\.op_list\.3\.linear\.", "classifier."),
    (r"\.total\.0\.0\.", ".attn."),
    (r"\.total\.0\.1\.", ".mlp."),
    (r"\.total\.1\.", ".local."),
    (r"\.conv_proj\.0\.", ".conv_proj.conv."),
    (r"\.conv_proj\.1\.", ".conv_proj.norm."),
    (r"\.pwise\.0\.", ".pwise."),
]

_LOWFORMER_BLOCK = [  # inside a timm LowFormer block -> composer's
    (r"^attn\.main\.0\.", "norm1."),
    (r"^attn\.main\.1\.", "token_mixer."),
    (r"^mlp\.main\.0\.", "norm2."),
    (r"^mlp\.main\.1\.", "mlp.fc1."),
    (r"^mlp\.main\.3\.", "mlp.fc2."),
    (r"^local\.main\.", "local."),
    (r"^main\.", "token_mixer."),   # a conv block (fused MBConv / MBConv with one residual)
]

_LOWFORMER_HEAD = {"in_conv.": "head.global_pool.", "pre_classifier.0.": "head.fc.fc1.",
                   "pre_classifier.1.": "head.fc.norm.", "classifier.": "head.fc.fc2."}


def _rename_first(rules: list[tuple[str, str]], key: str) -> str:
    """``key`` renamed by the first rule whose pattern matches it (unchanged when none does)."""
    for pattern, target in rules:
        if re.match(pattern, key):
            return re.sub(pattern, target, key)
    return key


def _lowformer_key(key: str) -> str:
    for prefix, target in _LOWFORMER_HEAD.items():
        if key.startswith(prefix):
            return target + key[len(prefix):]
    m = re.match(r"^stem\.(\d+)\.(.*)$", key)
    if m:
        if m[1] == "0":
            return "stem." + m[2]
        stage, index, rest = 0, int(m[1]) - 1, m[2]
    else:
        m = re.match(r"^stages\.(\d+)\.(\d+)\.(.*)$", key)
        if not m:
            return key
        stage, index, rest = int(m[1]) + 1, int(m[2]) - 1, m[3]
        if index < 0:   # the stage's stride-2 block: composer's downsampling (no residual, no .main wrapper)
            return f"stages.{stage}.downsample.{re.sub(r'^main[.]', '', rest)}"
    return f"stages.{stage}.blocks.{index}.{_rename_first(_LOWFORMER_BLOCK, rest)}"


def lowformer_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official LowFormer keys (``backbone.*``, ``head.op_list.*``) or timm's LowFormer keys -> composer's
    (``lowformer`` macro); composer's own keys pass through."""
    if not any(k.startswith(("backbone.", "stem.0.")) for k in state):
        return dict(state)
    out = {}
    for key, value in state.items():
        for pattern, target in _LOWFORMER_OFFICIAL:
            key = re.sub(pattern, target, key)
        out[_lowformer_key(key)] = value
    return out


register_weight_source("lowformer", lowformer_state_dict)


# -- official checkpoints of the unified architecture (OpenGVLab/STM-Evaluation classification/models, MetaArch) --
# MetaArch: downsample_layers.0.stem.k (the stem), downsample_layers.i.reduction.k (stages 1-3), stages.i.j
# (blocks), stage_norms.i, conv_head.{0: conv, 1: BatchNorm}, head. Block parameter names differ per STM block
# class, so one set of rules serves all five: U-DWConv's UnifiedConvNeXtBlock (dw_norm, dw_input_proj, dwconv,
# dw_out_proj, gamma_1, pw_norm, pwconv1 / pwconv2 as Linears, gamma_2) and the attention-style blocks of Halo,
# PVT, Swin and DCNv3 (norm1, attn.*, gamma1 / gamma_1, norm2, mlp.fc1 / fc2, gamma2 / gamma_2; PVT's pos_embed in
# a stage's first block). Layer scales stored as (1, C, 1, 1) / (1, 1, 1, C) and Linear weights for composer's
# 1x1 convs are reshaped by load(). The buffers MetaArch itself skips when loading are dropped: Swin's
# relative_position_index (timm <= 0.6 saved it) and the shifted blocks' attn_mask (composer recomputes both).

_STM_MACRO = [
    (r"^downsample_layers\.0\.stem\.", "stem."),
    (r"^downsample_layers\.(\d+)\.reduction\.", r"stages.\1.downsample."),
    (r"^stage_norms\.(\d+)\.", r"stages.\1.norm."),
    (r"^conv_head\.0\.", "head.global_pool.conv."),
    (r"^conv_head\.1\.", "head.global_pool.norm."),
    (r"^head\.(weight|bias)$", r"head.fc.\1"),
]

_STM_BLOCK = [  # the key after stages.i.j.
    (r"^dw_norm\.", "norm1."),
    (r"^dw_input_proj\.", "token_mixer.pwconv1."),
    (r"^dwconv\.", "token_mixer.dwconv."),
    (r"^dw_out_proj\.", "token_mixer.pwconv2."),
    (r"^pw_norm\.", "norm2."),
    (r"^pwconv([12])\.", r"mlp.fc\1."),
    (r"^gamma_?([12])$", r"layer_scale\1.scale"),
    (r"^attn\.", "token_mixer."),
    (r"^pos_embed$", "token_mixer.pos_embed"),
]


def _stm_key(key: str) -> str:
    m = re.match(r"^stages\.(\d+)\.(\d+)\.(.*)$", key)
    if m is None:
        for pattern, target in _STM_MACRO:
            key = re.sub(pattern, target, key)
        return key
    return f"stages.{m[1]}.blocks.{m[2]}.{_rename_first(_STM_BLOCK, m[3])}"


def stm_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official STM-Evaluation ``unified_*`` keys -> composer's (``unified`` macro: the ``u_*`` presets); a DDP
    ``module.`` prefix is removed; composer's own keys pass through."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    if not any(k.startswith(("downsample_layers.", "conv_head.", "stage_norms.")) for k in state):
        return dict(state)
    return {_stm_key(k): v for k, v in state.items()
            if not k.endswith(".relative_position_index") and not re.match(r"^stages\.\d+\.\d+\.attn_mask$", k)}


register_weight_source("stm", stm_state_dict)


def read_state_dict(source: str | os.PathLike | Mapping) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        state = source
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise WeightsError(f"no checkpoint file at {path}")
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
            break
    return dict(state)


def _fit_shapes(state: dict[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> dict:
    """Reshape tensors whose element count matches (Linear [o, i] <-> 1x1 conv [o, i, 1, 1])."""
    out = {}
    for key, value in state.items():
        target = model_state.get(key)
        if target is not None and value.shape != target.shape and value.numel() == target.numel():
            value = value.reshape(target.shape)
        out[key] = value
    return out


def load(model: nn.Module, checkpoint: str | os.PathLike | Mapping, source: str = "timm") -> nn.Module:
    """Load ``checkpoint`` (a path or a state dict) into ``model`` strictly, mapping keys from ``source``."""
    load_plugins()
    try:
        mapping = SOURCES.lookup(source)
    except RegistryError as exc:
        raise WeightsError(str(exc)) from None
    model_state = model.state_dict()
    state = _fit_shapes(mapping(read_state_dict(checkpoint)), model_state)
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_state[k].shape)}"
             for k, v in state.items() if k in model_state and v.shape != model_state[k].shape]
    if missing or unexpected or wrong:
        def show(keys):
            return ", ".join(keys[:12]) + (f", ... ({len(keys) - 12} more)" if len(keys) > 12 else "")

        parts = [f"{len(missing)} missing: {show(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {show(unexpected)}" if unexpected else "",
                 f"{len(wrong)} with other shapes: {show(wrong)}" if wrong else ""]
        raise WeightsError(f"checkpoint does not fit the model (source={source!r}): "
                           + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)
    return model

