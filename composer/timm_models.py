"""Every preset spec as a timm model: ``timm.create_model("composer_caformer_s18", num_classes=10)``.

When timm is imported (``import composer`` installs a hook for it), one entrypoint per spec file in the preset
folders (``$COMPOSER_SPECS_PATH`` and the shipped presets) is registered as ``composer_<file name>``, with its
pretrained cfg in this module's ``default_cfgs`` as timm's own model modules have it (input size, pool size,
``first_conv`` / ``classifier`` module names, ``fixed_input_size`` for models whose mixers only run at the size
they were compiled at). Models are built through timm's ``build_model_with_cfg``, so ``features_only=True``,
``out_indices`` and ``feature_cls`` work as for timm's models (the ``getter`` wrapper over
``forward_intermediates``). Call :func:`register_presets` again after adding a folder to ``$COMPOSER_SPECS_PATH``.

``create_model`` keyword arguments:

* timm's usual ones: ``num_classes`` (0: pooled features), ``in_chans``, ``drop_path_rate``, ``drop_rate``
  (the head's dropout before the classifier), ``img_size`` (the resolution the spec is compiled at; Hyena
  filters are re-sized with it), ``global_pool`` (``"avg"``, or ``""`` for no pooling), ``features_only``,
  ``out_indices``;
* any top-level spec field (``depths=[2, 2, 6, 2]``, ``layout="Conv-Conv-Conv-A"``, ``mixers={...}``),
  merged over the preset as ``extends`` would;
* ``pretrained=True`` is refused: composer registers no weights (load a checkpoint with
  ``composer.weights.load``).
"""

from __future__ import annotations

import sys
import warnings
from functools import partial
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from typing import Any

PREFIX = "composer_"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_ENSEMBLE_FIELDS = ("num_classes", "input_size", "in_chans")

default_cfgs: dict[str, dict[str, Any]] = {}
"""timm's pretrained cfg of every registered entrypoint (``register_model`` reads this module's)."""


def _label(preset) -> str:
    """The timm name's tail: a preset's name, or ``spec`` for the generic ``composer_spec`` (a spec mapping)."""
    return preset if isinstance(preset, str) else "spec"


def _spec_data(preset, kwargs: dict[str, Any], base) -> dict[str, Any]:
    """Spec overrides from create_model's keyword arguments (timm names mapped to spec fields); values equal to
    the preset's own are left out, so the default model is the preset itself."""
    from .spec import Spec

    kwargs = dict(kwargs)
    data: dict[str, Any] = {"extends": preset, "name": preset} if isinstance(preset, str) else dict(preset)
    if "img_size" in kwargs:
        size = kwargs.pop("img_size")
        if isinstance(size, (tuple, list)):  # timm passes (H, W) for fixed-size models
            if len(size) != 2 or size[0] != size[1]:
                raise ValueError(f"{PREFIX}{preset}: img_size={tuple(size)}: composer models are square")
            size = size[0]
        data["input_size"] = size
    if "drop_rate" in kwargs:
        data["head"] = {"drop": kwargs.pop("drop_rate")}
    for key in list(kwargs):
        if key in Spec.model_fields and key not in ("name",):
            data[key] = kwargs.pop(key)
    if kwargs:
        allowed = sorted({*Spec.model_fields, "img_size", "drop_rate", "global_pool", "features_only",
                          "out_indices", "feature_cls"} - {"name"})
        raise TypeError(f"{PREFIX}{_label(preset)}: unexpected keyword argument(s) "
                        f"{', '.join(sorted(kwargs))}; allowed: "
                        f"{', '.join(allowed)}")
    for key in ("num_classes", "in_chans", "input_size"):
        if isinstance(preset, str) and key in data and data[key] == getattr(base, key):
            del data[key]   # the preset's own value: the default model is the preset itself
    return data


def _compose(preset: str, global_pool: str = "avg", **kwargs: Any):
    """The model of ``preset`` with ``kwargs`` (what build_model_with_cfg passes: num_classes, in_chans, ...)."""
    from .composed import _POOLS, compose
    from .spec import EnsembleSpec, load_spec

    if global_pool not in _POOLS:
        raise ValueError(f"{PREFIX}{preset}: global_pool={global_pool!r} is not supported; composer heads "
                         "average-pool (global_pool='avg') or pass the map (global_pool='')")
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    base = load_spec(preset)
    data = _spec_data(preset, kwargs, base)
    if isinstance(base, EnsembleSpec):
        extra = set(data) - {"extends", "name", *_ENSEMBLE_FIELDS}
        if extra:
            raise TypeError(f"{PREFIX}{preset} is an ensemble; it takes only num_classes, in_chans and img_size, "
                            f"got {', '.join(sorted(extra))}")
    # img_size is the spec's input_size: ``auto`` sizes (Hyena filters, pool sizes) follow it, as
    # composer.resolution.at_input_size(..., filters="resize") does
    spec = load_spec(data) if set(data) - {"extends", "name"} else base
    model = compose(spec)
    frozen_parameters_as_buffers(model)
    if global_pool != "avg":
        model.reset_classifier(model.num_classes, global_pool)
    model._composer_cfg = pretrained_cfg(_label(preset), spec)  # what this model is, whatever the registry's default
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def frozen_parameters_as_buffers(model) -> int:
    """timm's convention for tensors that are never trained: buffers, not ``nn.Parameter(requires_grad=False)``
    (timm's tests and training scripts expect a gradient for every parameter). HyenaPixel's ``distance_map``
    and RandFormer's ``random_matrix`` are frozen parameters in the official code, and composer.compose keeps
    them so (its parameter counts are the official ones); the timm entry points turn them into persistent
    buffers: the state dict keeps the same keys and values, so the official checkpoints still load strictly.
    Returns the number of elements moved."""
    moved = 0
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if not param.requires_grad:
                del module._parameters[name]
                module.register_buffer(name, param.detach(), persistent=True)
                moved += param.numel()
    return moved


def _pretrained_file(kwargs: dict[str, Any]) -> str | None:
    """The weights file timm's ``pretrained_cfg_overlay=dict(file=...)`` or a ``local-dir:`` config names (a folder
    means its ``model.safetensors``)."""
    import os

    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    cfg = kwargs.get("pretrained_cfg") or {}
    if not isinstance(cfg, dict):
        cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(vars(cfg))
    file = overlay.get("file") or cfg.get("file")
    if file and os.path.isdir(file):
        file = os.path.join(file, "model.safetensors")
    return file


def create(preset, pretrained: bool = False, **kwargs: Any):
    """Build preset ``preset`` (or, for ``composer_spec``, a spec mapping) with timm-style keyword arguments (see
    the module docstring). ``pretrained=True`` loads the file that ``pretrained_cfg_overlay=dict(file=...)`` (or a
    ``local-dir:`` bundle's config) names, strictly: composer registers no downloadable weights."""
    from timm.models import build_model_with_cfg

    from .spec import EnsembleSpec, load_spec

    name = PREFIX + _label(preset)
    file = _pretrained_file(kwargs) if pretrained else None
    if pretrained and not file:
        raise ValueError(f"{name}: composer registers no downloadable weights; give the file, "
                         "pretrained_cfg_overlay=dict(file='.../model.safetensors') (a composer train bundle), or "
                         "create it with pretrained=False and load a checkpoint with composer.weights.load(model, "
                         "path, source=...)")
    if kwargs.get("cache_dir") is not None:
        raise ValueError(f"{name}: cache_dir is not supported (composer downloads nothing)")
    kwargs.pop("cache_dir", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("pretrained_model_args", None)   # timm's record of a local-dir config's model_args
    base = load_spec(preset)
    stages = len(base.members[0].widths) if isinstance(base, EnsembleSpec) else base.num_stages
    if isinstance(preset, str) and name not in default_cfgs:  # registered before its cfg could be computed
        default_cfgs[name] = pretrained_cfg(preset, base)
    if not kwargs.get("pretrained_cfg"):   # timm passes None when the caller gave none
        kwargs["pretrained_cfg"] = default_cfgs.get(name) or pretrained_cfg(_label(preset), base)
    model = build_model_with_cfg(partial(_compose, preset), name, False,
                                 feature_cfg={"out_indices": tuple(range(stages)), "feature_cls": "getter"},
                                 **kwargs)
    inner = getattr(model, "model", model)  # the features_only wrapper holds the model
    cfg = getattr(inner, "_composer_cfg", None)
    if cfg is not None:
        for target in {id(inner): inner, id(model): model}.values():
            target.pretrained_cfg = dict(target.pretrained_cfg, **cfg)
            target.default_cfg = target.pretrained_cfg
    if file:
        from .train.bundle import BundleError, load_strict, read_weights

        try:
            load_strict(inner, read_weights(file), str(file))
        except BundleError as exc:
            raise ValueError(f"{name}: {exc}") from None
        trained = _bundle_cfg(file)   # how the bundle was trained: its normalisation, not ImageNet's
        for target in {id(inner): inner, id(model): model}.values():
            target.pretrained_cfg = dict(target.pretrained_cfg, **trained, file=str(file))
            target.default_cfg = target.pretrained_cfg
    return model


def _bundle_cfg(file) -> dict[str, Any]:
    """The data settings of the ``config.json`` beside a weights file (a ``composer train`` bundle), if any."""
    import json
    from pathlib import Path

    path = Path(file).parent / "config.json"
    try:
        cfg = json.loads(path.read_text()).get("pretrained_cfg", {})
    except (OSError, ValueError, AttributeError):
        return {}
    keys = ("mean", "std", "crop_pct", "crop_mode", "interpolation", "label_names")
    return {k: tuple(v) if isinstance(v, list) and k in ("mean", "std") else v for k, v in cfg.items()
            if k in keys and v is not None}


def create_from_spec(pretrained: bool = False, spec: Any = None, **kwargs: Any):
    """timm's ``composer_spec``: any spec (a mapping, a path or a preset name, ``spec=...``), as the
    ``config.json`` of a ``composer train`` bundle names it (``timm.create_model("local-dir:BUNDLE")``)."""
    from .spec import load_spec, spec_to_data

    if spec is None:
        raise TypeError(f"{PREFIX}spec needs spec=... (a spec mapping, a spec file or a preset name)")
    return create(spec_to_data(load_spec(spec)), pretrained=pretrained, **kwargs)


def pretrained_cfg(preset: str, spec) -> dict[str, Any]:
    """timm's pretrained cfg for a spec: ImageNet normalisation, bicubic, crop 0.9 as MetaFormer's; the final
    map's ``pool_size``; the module names of the first conv and the classifier weights; ``fixed_input_size``
    when a mixer only runs at the compiled size. No weights: ``url`` and ``hf_hub_id`` stay empty."""
    from .macro import MACROS
    from .spec import EnsembleSpec

    size, in_chans = spec.input_size, spec.in_chans
    cfg = {"architecture": PREFIX + preset, "url": "", "input_size": (in_chans, size, size),
           "interpolation": "bicubic", "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
           "crop_pct": 0.9 if size <= 224 else 1.0, "num_classes": spec.num_classes, "license": "apache-2.0"}
    if isinstance(spec, EnsembleSpec):
        members = [pretrained_cfg(preset, member) for member in spec.members]
        cfg["first_conv"] = tuple(f"members.{i}.{m['first_conv']}" for i, m in enumerate(members))
        cfg["classifier"] = tuple(f"members.{i}.{m['classifier']}" for i, m in enumerate(members))
        cfg["fixed_input_size"] = any(m["fixed_input_size"] for m in members)
        if len({m["pool_size"] for m in members}) == 1:   # the shared (side by side) final map
            cfg["pool_size"] = members[0]["pool_size"]
        return cfg
    from .plan import walk

    parts = walk(spec, costs_only=True)
    side = parts.stages[-1].out_shape[1:]
    mixers = [part.info["mixer"] for stage in parts.stages for _, part, _ in stage.members if "mixer" in part.info]
    cfg.update(pool_size=tuple(side), first_conv=MACROS[spec.macro].first_conv,
               classifier="head.fc" if spec.head.type == "linear" else "head.fc.fc2",
               fixed_input_size=any(m.fixed_input_size for m in mixers))
    return cfg


def _entrypoint(preset: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any):
        return create(preset, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = PREFIX + preset
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"composer preset {preset!r} (specs/{preset}.yaml) as a timm model."
    return entrypoint


_REGISTERED: set[str] = set()


def register_presets() -> list[str]:
    """Register every preset not yet registered, with its pretrained cfg; returns the timm names registered by
    this call. A preset that does not validate is registered without a cfg (creating it reports why)."""
    from timm.models import register_model

    from .spec import SpecError, load_spec
    from .spec.source import preset_names

    done = _REGISTERED
    new = []
    for preset in preset_names():
        name = PREFIX + preset
        if name in done or "." in preset:  # timm reads "a.b" as model a with pretrained tag b
            continue
        try:
            default_cfgs[name] = pretrained_cfg(preset, load_spec(preset))
        except SpecError:
            default_cfgs.pop(name, None)
        fn = _entrypoint(preset)
        globals()[name] = fn  # timm looks the entrypoint's module up in sys.modules and lists it in __all__
        register_model(fn)
        done.add(name)
        new.append(name)
    generic = PREFIX + "spec"
    if generic not in done:
        def composer_spec(pretrained: bool = False, **kwargs: Any):
            return create_from_spec(pretrained=pretrained, **kwargs)

        composer_spec.__module__ = __name__
        globals()[generic] = composer_spec
        register_model(composer_spec)
        done.add(generic)
        new.append(generic)
    return new


class _RegisterWhenTimmLoads(MetaPathFinder):
    """A one-shot import hook: when ``timm`` is first imported, register the presets right after its package
    has run, so that ``import composer`` needs no timm (it costs ~2 s with torchvision) and
    ``timm.create_model("composer_<preset>")`` works whenever timm comes."""

    def find_spec(self, name: str, path=None, target=None) -> ModuleSpec | None:
        if name != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; the lookup below must not find this finder again
        from importlib.util import find_spec

        spec = find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _register_quietly()

        spec.loader.exec_module = exec_module
        return spec


def _register_quietly() -> None:
    try:
        register_presets()
    except Exception as exc:  # never break ``import timm`` for a problem of composer's
        warnings.warn(f"composer: could not register its presets with timm: {exc}", stacklevel=2)


def register_presets_with_timm() -> None:
    """Register every preset with timm now if timm is imported, else as soon as it is."""
    if "timm" in sys.modules and hasattr(sys.modules["timm"], "create_model"):
        _register_quietly()
    elif not any(isinstance(f, _RegisterWhenTimmLoads) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenTimmLoads())


__all__ = ["PREFIX", "create", "create_from_spec", "pretrained_cfg", "register_presets", "register_presets_with_timm"]
