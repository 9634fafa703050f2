"""Compiling a spec at another resolution, and converting Hyena weights to it.

Hyena filters are sized at the compiled ``input_size``: ``auto`` gives the global size there (Hpx
K = 2F-1, Hb L = 2N-1, causal Hyena L = N), a pinned size stays what it is. So there are two ways to run a
224 model at, say, 384 (docs/hyenapixel.md):

* **keep** the trained filter sizes (the official ``hpx_former_s18_384``): ``at_input_size(spec, 384,
  filters="keep")`` pins every ``auto`` size to its value at the spec's own ``input_size``; the 224 state
  dict loads unchanged, and the filters no longer cover the whole map.
* **resize** them to the new map (the official ``hpx_former_s18_384_interpolate``): ``at_input_size(spec,
  384)`` lets ``auto`` re-size, and :func:`resize_hyena_state_dict` converts the 224 state dict by resampling
  the positional embeddings (Hpx ``long_conv.z`` bicubic with antialias over the K x K grid; Hb / Hyena
  ``pos_emb.z`` linearly over the normalised filter position) and rebuilding the fixed tensors
  (``distance_map``, ``pos_emb.t``) for the new size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F

from .mixers.base import MixerContext
from .mixers.hyena import HyenaPixelConfig, _HyenaConfigBase
from .nn.mixers.hyena import centre_distance, time_coordinate
from .plan import EnsemblePlan, Plan, plan
from .spec import EnsembleSpec, Spec, SpecLike, load_spec
from .weights import WeightsError

_SIZE_FIELD = {"hyena_pixel": "long_kernel_size", "hyena_bidirectional": "filter_size", "hyena": "filter_size"}


def at_input_size(source: SpecLike, input_size: int, filters: Literal["resize", "keep"] = "resize"):
    """``source`` compiled at ``input_size``. ``filters="resize"``: ``auto`` Hyena filter sizes follow the new
    map (pinned ones stay); ``"keep"``: every Hyena filter keeps the size it has at the spec's own input_size
    (``auto`` sizes are pinned per stage), so the original weights load unchanged."""
    spec = load_spec(source)
    if filters not in ("resize", "keep"):
        raise ValueError(f"filters must be 'resize' or 'keep', got {filters!r}")
    if isinstance(spec, EnsembleSpec):
        members = [_spec_data(at_input_size(m, input_size, filters)) for m in spec.members]
        return load_spec({"name": spec.name, "ensemble": members})
    data = _spec_data(spec)
    if filters == "keep":
        p = plan(spec)
        sizes: dict[str, list] = {}
        for prefix, (_, size) in _hyena_blocks(p).items():
            node = p.node(prefix.removesuffix(".token_mixer."))
            sizes.setdefault(node["symbol"], ["auto"] * spec.num_stages)[node["stage"]] = size
        mixers = data.setdefault("mixers", {})
        for symbol, per_stage in sizes.items():
            entry = dict(mixers.get(symbol) or {})
            entry.setdefault("type", spec.symbol_type(symbol))
            entry[_SIZE_FIELD[entry["type"]]] = per_stage
            mixers[symbol] = entry
    data["input_size"] = input_size
    return load_spec(data)


def _spec_data(spec: Spec) -> dict:
    return spec.model_dump(mode="json", exclude_unset=True) | {"name": spec.name}


def _hyena_blocks(p: Plan) -> dict[str, tuple[object, int]]:
    """``token_mixer`` key prefix -> (Hyena mixer config, its filter size) for every Hyena block of the Plan."""
    out = {}
    for name, node in p.graph.nodes(data=True):
        mixer = node.get("mixer")
        if isinstance(mixer, (HyenaPixelConfig, _HyenaConfigBase)):
            ctx = MixerContext.at(p.spec, node["stage"], int(name.rsplit(".", 1)[1]), node["in_shape"])
            out[f"{name}.token_mixer."] = (mixer, mixer.size(ctx))
    return out


def resize_hyena_state_dict(state: Mapping[str, torch.Tensor], from_spec: SpecLike, to_spec: SpecLike,
                            distance: Literal["stretch", "official"] = "stretch") -> dict[str, torch.Tensor]:
    """Convert a state dict of ``from_spec`` to ``to_spec`` (the same network at another input_size with
    re-sized ``auto`` Hyena filters). Tensors whose shape already fits are kept.

    * Hpx ``long_conv.z`` (1, E, K, K): bicubic, antialiased, to the new K (as the official interpolation);
      ``long_conv.distance_map``: the new K's centre distances times K_old / K_new (``stretch``: the decay
      window is stretched with the filter, so the learnt ``deltas`` keep their meaning) or divided by
      (K_new / 2) / K_old (``official``: what the official ``_384_interpolate`` checkpoint stores).
    * Hb / Hyena ``pos_emb.z`` (1, L, E): linear over the normalised position (its bands are functions of
      n / L, so a fresh embedding at the new L is what this gives before training); ``pos_emb.t`` rebuilt.
    """
    p_from, p_to = plan(from_spec), plan(to_spec)
    if isinstance(p_from, EnsemblePlan) or isinstance(p_to, EnsemblePlan):
        if not (isinstance(p_from, EnsemblePlan) and isinstance(p_to, EnsemblePlan)
                and len(p_from.members) == len(p_to.members)):
            raise WeightsError("resize_hyena_state_dict: both specs must be ensembles with the same members")
        out: dict[str, torch.Tensor] = {}
        for i, (a, b) in enumerate(zip(p_from.members, p_to.members)):
            prefix = f"members.{i}."
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            out.update({prefix + k: v for k, v in resize_hyena_state_dict(sub, a.spec, b.spec, distance).items()})
        return out
    targets = _hyena_blocks(p_to)
    if set(targets) != set(_hyena_blocks(p_from)):
        raise WeightsError("resize_hyena_state_dict: the two specs must have the same Hyena blocks "
                           "(compile the same spec at another input_size)")
    out = {}
    for key, value in state.items():
        prefix = next((pre for pre in targets if key.startswith(pre)), None)
        out[key] = value if prefix is None else _resize(key[len(prefix):], value, *targets[prefix], distance)
    return out


def _resize(name: str, value: torch.Tensor, mixer, size: int, distance: str) -> torch.Tensor:
    if isinstance(mixer, HyenaPixelConfig):
        if name not in ("long_conv.z", "long_conv.distance_map"):
            return value
        k_old, k_new = value.shape[-1], size
        if k_new == k_old:
            return value
        if name == "long_conv.z":
            return F.interpolate(value.float(), size=(k_new, k_new), mode="bicubic", align_corners=False,
                                 antialias=True).to(value.dtype)
        scale = k_old / k_new if distance == "stretch" else 2 * k_old / k_new
        return (centre_distance(k_new) * scale)[None, None].to(value.dtype)
    if name not in ("filter_fn.pos_emb.z", "filter_fn.pos_emb.t"):
        return value
    length_new = size
    if length_new == value.shape[1]:
        return value
    if name.endswith(".t"):
        t = time_coordinate(length_new, mixer.causal)
        return (t if mixer.causal else 1 - t)[None, :, None].to(value.dtype)
    z = F.interpolate(value.float().transpose(1, 2), size=length_new, mode="linear", align_corners=True)
    return z.transpose(1, 2).to(value.dtype)


__all__ = ["at_input_size", "resize_hyena_state_dict"]
