"""Training: data sources, the recipe, the loop and its checkpoints, used by the search's ``train`` objective,
``composer proxy-check`` and ``composer sweep`` (and, later, ``composer train``).

:mod:`composer.train.recipe` is plain pydantic (a search space's ``train:`` section validates without torch);
:mod:`composer.train.data` and :mod:`composer.train.loop` import torch, timm and torchvision.
"""

from .recipe import Recipe, TrainSettings

__all__ = ["Recipe", "TrainSettings"]
