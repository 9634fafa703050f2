"""Budgeted architecture search over YAML search spaces (``composer search``); see docs/search.md.

Search spaces (``composer.search.space``) need no Optuna; the study runner (``composer.search.study``, with
``run``) imports it when first used, so ``composer list`` and ``composer validate`` start without it."""

from importlib import import_module

from .settings import SearchSettings
from .space import DEFAULT_SPACE, Check, Choice, Domain, SearchSpace, load_space, space_path

_STUDY = ("SearchResult", "Settings", "best_trial", "open_storage", "pareto_front", "run")


def __getattr__(name: str):
    if name in _STUDY:
        value = getattr(import_module(".study", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'composer.search' has no attribute {name!r}")


__all__ = ["DEFAULT_SPACE", "Check", "Choice", "Domain", "SearchResult", "SearchSettings", "SearchSpace", "Settings",
           "best_trial", "load_space", "open_storage", "pareto_front", "run", "space_path"]
