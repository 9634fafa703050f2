"""composer: vision backbones from short YAML specs.

>>> from composer import compose, estimate
>>> est = estimate("caformer_s18")
>>> est.params
26341656

Importing composer imports no torch: specs, Plans and estimates are plain Python (the modules live in
``composer.nn`` and are imported when a model is built). ``compose`` / ``build`` / ``ComposedModel`` load lazily,
and the presets become timm models (``composer_<name>``) as soon as timm is imported.
"""

from importlib import import_module

from .plan import EnsemblePlan, Estimate, Plan, estimate, plan
from .spec import EnsembleSpec, Spec, SpecError, dump_spec, load_spec, parse_count
from .timm_models import register_presets_with_timm

__version__ = "0.2.0"

register_presets_with_timm()  # now if timm is imported, else the moment it is (an import hook)

_LAZY = {name: ".composed" for name in ("ComposedEnsemble", "ComposedModel", "build", "compose")}
_LAZY["register_presets"] = ".timm_models"  # imports timm: call it after adding to $COMPOSER_SPECS_PATH


def __getattr__(name: str):
    if name in _LAZY:  # torch is imported here, on first use, not by ``import composer``
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'composer' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})


__all__ = ["ComposedEnsemble", "ComposedModel", "EnsemblePlan", "EnsembleSpec", "Estimate", "Plan", "Spec",
           "SpecError", "build", "compose", "dump_spec", "estimate", "load_spec", "parse_count", "plan"]
