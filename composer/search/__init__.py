"""Budgeted architecture search over YAML search spaces (``composer search``); see docs/search.md."""

from .space import Check, Choice, Domain, SearchSpace, load_space
from .study import SearchResult, Settings, best_trial, open_storage, pareto_front, run

__all__ = ["Check", "Choice", "Domain", "SearchResult", "SearchSpace", "Settings", "best_trial", "load_space",
           "open_storage", "pareto_front", "run"]
