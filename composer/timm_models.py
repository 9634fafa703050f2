"""Every preset spec as a timm model: ``timm.create_model("composer_caformer_s18", num_classes=10)``.

Importing ``composer`` registers one entrypoint per spec file in the preset folders (``specs/`` and
``$COMPOSER_SPECS_PATH``) under ``composer_<file name>``. Registration only lists the folders; a spec is
read, planned and built when its model is created. Call :func:`register_presets` again after adding a folder
to ``$COMPOSER_SPECS_PATH``.

``create_model`` keyword arguments:

* timm's usual ones: ``num_classes`` (0: pooled features), ``in_chans``, ``drop_path_rate``, ``drop_rate``
  (the head's dropout before the classifier), ``img_size`` (the resolution the spec is compiled at; Hyena
  filters are re-sized with it), ``global_pool`` (``"avg"`` only, the macros' pooling);
* any top-level spec field (``depths=[2, 2, 6, 2]``, ``layout="Conv-Conv-Conv-A"``, ``mixers={...}``),
  merged over the preset as ``extends`` would;
* ``pretrained=True`` is refused: composer registers no weights (load a checkpoint with
  ``composer.weights.load``). ``features_only`` is not supported; use ``model.forward_stages``.
"""

from __future__ import annotations

import sys
import warnings
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from typing import Any

PREFIX = "composer_"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")  # create_model always passes these
_ENSEMBLE_FIELDS = ("num_classes", "input_size")


def _spec_data(preset: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Spec overrides from create_model's keyword arguments (timm names mapped to spec fields)."""
    from .spec import Spec

    kwargs = dict(kwargs)
    data: dict[str, Any] = {"extends": preset, "name": preset}
    if "img_size" in kwargs:
        data["input_size"] = kwargs.pop("img_size")
    pool = kwargs.pop("global_pool", "avg")
    if pool not in ("avg", ""):
        raise ValueError(f"{PREFIX}{preset}: global_pool={pool!r} is not supported; composer heads average-pool "
                         f"(global_pool='avg')")
    if "drop_rate" in kwargs:
        data["head"] = {"drop": kwargs.pop("drop_rate")}
    for key in list(kwargs):
        if key in Spec.model_fields and key not in ("name",):
            data[key] = kwargs.pop(key)
    if kwargs:
        allowed = sorted({*Spec.model_fields, "img_size", "drop_rate", "global_pool"} - {"name"})
        raise TypeError(f"{PREFIX}{preset}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}; allowed: "
                        f"{', '.join(allowed)}")
    return data


def create(preset: str, pretrained: bool = False, **kwargs: Any):
    """Build preset ``preset`` with timm-style keyword arguments (see the module docstring)."""
    from .composed import compose
    from .spec import EnsembleSpec, load_spec

    if pretrained:
        raise ValueError(f"{PREFIX}{preset}: composer registers no pretrained weights; create it with "
                         f"pretrained=False and load a checkpoint with composer.weights.load(model, path, source=...)")
    for key in _TIMM_ONLY:
        if kwargs.get(key) is not None:
            raise ValueError(f"{PREFIX}{preset}: {key} is not supported (composer registers no pretrained weights)")
        kwargs.pop(key, None)
    if kwargs.pop("features_only", False):
        raise ValueError(f"{PREFIX}{preset}: features_only is not supported; use model.forward_stages(x), which "
                         "returns every stage's map (model.feature_info describes them)")
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    data = _spec_data(preset, kwargs)
    base = load_spec(preset)
    if isinstance(base, EnsembleSpec):
        extra = set(data) - {"extends", "name", *_ENSEMBLE_FIELDS}
        if extra:
            raise TypeError(f"{PREFIX}{preset} is an ensemble; it takes only num_classes and img_size, got "
                            f"{', '.join(sorted(extra))}")
    # img_size is the spec's input_size: ``auto`` sizes (Hyena filters, pool sizes) follow it, as
    # composer.resolution.at_input_size(..., filters="resize") does
    spec = load_spec(data) if set(data) - {"extends", "name"} else base
    model = compose(spec)
    model.pretrained_cfg = pretrained_cfg(preset, spec)
    model.default_cfg = model.pretrained_cfg
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def pretrained_cfg(preset: str, spec) -> dict[str, Any]:
    """timm's data config for a spec (ImageNet normalisation, bicubic, crop 0.9 as MetaFormer's)."""
    size = spec.input_size
    in_chans = spec.in_chans
    return {"architecture": PREFIX + preset, "input_size": (in_chans, size, size), "interpolation": "bicubic",
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "crop_pct": 0.9 if size <= 224 else 1.0,
            "num_classes": spec.num_classes, "first_conv": "stem", "classifier": "head", "license": "apache-2.0"}


def _entrypoint(preset: str):
    def entrypoint(pretrained: bool = False, **kwargs: Any):
        return create(preset, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = PREFIX + preset
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"composer preset {preset!r} (specs/{preset}.yaml) as a timm model."
    return entrypoint


_REGISTERED: set[str] = set()


def register_presets() -> list[str]:
    """Register every preset not yet registered; returns the timm names registered by this call."""
    from timm.models import register_model

    from .spec.source import preset_names

    done = _REGISTERED
    new = []
    for preset in preset_names():
        name = PREFIX + preset
        if name in done or "." in preset:  # timm reads "a.b" as model a with pretrained tag b
            continue
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
