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


def _spec_data(preset: str, kwargs: dict[str, Any], base) -> dict[str, Any]:
    """Spec overrides from create_model's keyword arguments (timm names mapped to spec fields); values equal to
    the preset's own are left out, so the default model is the preset itself."""
    from .spec import Spec

    kwargs = dict(kwargs)
    data: dict[str, Any] = {"extends": preset, "name": preset}
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
        raise TypeError(f"{PREFIX}{preset}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}; allowed: "
                        f"{', '.join(allowed)}")
    for key in ("num_classes", "in_chans", "input_size"):
        if key in data and data[key] == getattr(base, key):
            del data[key]
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
    model._composer_cfg = pretrained_cfg(preset, spec)  # what this model is, whatever the registry's default
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


def create(preset: str, pretrained: bool = False, **kwargs: Any):
    """Build preset ``preset`` with timm-style keyword arguments (see the module docstring)."""
    from timm.models import build_model_with_cfg

    from .spec import EnsembleSpec, load_spec

    if pretrained:
        raise ValueError(f"{PREFIX}{preset}: composer registers no pretrained weights; create it with "
                         f"pretrained=False and load a checkpoint with composer.weights.load(model, path, source=...)")
    for key in ("pretrained_cfg_overlay", "cache_dir"):
        if kwargs.get(key) is not None:
            raise ValueError(f"{PREFIX}{preset}: {key} is not supported (composer registers no pretrained weights)")
        kwargs.pop(key, None)
    base = load_spec(preset)
    stages = len(base.members[0].widths) if isinstance(base, EnsembleSpec) else base.num_stages
    if PREFIX + preset not in default_cfgs:  # registered before its cfg could be computed, or a new preset
        default_cfgs[PREFIX + preset] = pretrained_cfg(preset, base)
    kwargs.setdefault("pretrained_cfg", default_cfgs[PREFIX + preset])
    model = build_model_with_cfg(partial(_compose, preset), PREFIX + preset, False,
                                 feature_cfg={"out_indices": tuple(range(stages)), "feature_cls": "getter"},
                                 **kwargs)
    inner = getattr(model, "model", model)  # the features_only wrapper holds the model
    cfg = getattr(inner, "_composer_cfg", None)
    if cfg is not None:
        for target in {id(inner): inner, id(model): model}.values():
            target.pretrained_cfg = dict(target.pretrained_cfg, **cfg)
            target.default_cfg = target.pretrained_cfg
    return model


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


__all__ = ["PREFIX", "create", "pretrained_cfg", "register_presets", "register_presets_with_timm"]
