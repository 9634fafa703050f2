"""composer: vision backbones from short YAML specs.

>>> from composer import compose, estimate
>>> est = estimate("caformer_s18")
>>> est.params
26341656
"""

from .build import ComposedModel, build, compose
from .plan import Estimate, Plan, estimate, plan
from .spec import Spec, SpecError, dump_spec, load_spec, parse_count

__version__ = "0.1.0"

__all__ = ["ComposedModel", "Estimate", "Plan", "Spec", "SpecError", "build", "compose", "dump_spec",
           "estimate", "load_spec", "parse_count", "plan"]
