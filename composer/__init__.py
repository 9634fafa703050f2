"""composer: vision backbones from short YAML specs.

>>> from composer import compose, estimate
>>> est = estimate("caformer_s18")
>>> est.params
26341656
"""

from .build import ComposedEnsemble, ComposedModel, build, compose
from .plan import EnsemblePlan, Estimate, Plan, estimate, plan
from .spec import EnsembleSpec, Spec, SpecError, dump_spec, load_spec, parse_count
from .timm_models import register_presets

register_presets()  # every preset as timm.create_model("composer_<name>"); lists spec files, reads none

__version__ = "0.1.0"

__all__ = ["ComposedEnsemble", "ComposedModel", "EnsemblePlan", "EnsembleSpec", "Estimate", "Plan", "Spec",
           "SpecError", "build", "compose", "dump_spec", "estimate", "load_spec", "parse_count", "plan"]
