"""One process's training data, opened once and shared by every architecture it trains (search trials,
proxy-check samples, sweep points): the source, its held-out validation split and the resolution to train at."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .data import DataError, DataSource, Splits, describe_split, open_source, split_indices
from .recipe import TrainSettings


@dataclass
class TrainingData:
    settings: TrainSettings
    source: DataSource
    splits: Splits
    size: int
    """The resolution models are compiled and trained at."""
    seed: int
    device: str | None = None
    """Where this process trains (default: ``settings.device``; a ``--gpus`` worker's own GPU)."""

    @property
    def split_name(self) -> str:
        """What a search's accuracy is measured on (``trials.csv``, the log)."""
        return f"val ({len(self.splits.val)} images held out of {self.source.name}'s training split)"

    def describe(self) -> str:
        return describe_split(self.source, self.splits)


def default_train_size(natural: int, stride: int, input_size: int) -> int:
    """The dataset's natural size rounded up to a multiple of the network's total stride (``stride``), so that
    every stage keeps a map of at least 1 x 1; never above the spec's own ``input_size``."""
    return min(-(-natural // stride) * stride, input_size)


def resolve_train_size(given: int | None, natural: int, base) -> int:
    """``--train-size``, checked against the spec's ``input_size``, or the data's size rounded up to the stride."""
    from ..plan import estimate

    top = base.input_size
    if given is not None:
        if not 1 <= given <= top:
            raise DataError(f"--train-size must be between 1 and the spec's input_size {top}, got {given}")
        return given
    last = estimate(base).stages[-1].feature_map[0]
    return default_train_size(natural, max(top // max(last, 1), 1), top)


def prepare(settings: TrainSettings, base, seed: int = 0) -> TrainingData:
    """Open ``settings.data``, hold out the validation split and resolve the training size for specs like
    ``base`` (a Spec). Raises :class:`DataError` (a ValueError) with a one-line message."""
    source = open_source(settings.data)
    splits = split_indices(source.train.targets, settings.val_fraction, seed, settings.subset)
    size = resolve_train_size(settings.train_size, source.natural_size, base)
    return TrainingData(settings, source, splits, size, seed)


def train_spec(data: dict | Any, training: TrainingData, *, report: Callable[[int, float], None] | None = None,
               checkpoint: Any = None, progress: bool = False, desc: str = "train", log=None, model=None,
               size: int | None = None):
    """Build ``data`` (a spec compiled at ``size``, by default ``training.size``) unless ``model`` is given, and
    train it at that size."""
    from .loop import resolve_device, train

    if model is None:
        import torch

        from ..composed import compose

        torch.manual_seed(training.seed)   # initial weights from the seed, not from whatever ran before in the process
        model = compose(data, specialize=training.settings.specialize)
    in_chans = getattr(model, "in_chans", training.source.in_chans)
    return train(model, training.source, training.splits, training.settings, size=size or training.size,
                 in_chans=in_chans, seed=training.seed, report=report, checkpoint=checkpoint, progress=progress,
                 desc=desc, log=log, device=resolve_device(training.device or training.settings.device))


__all__ = ["TrainingData", "default_train_size", "prepare", "resolve_train_size", "train_spec"]
