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

