"""One settings object for a search: :class:`SearchSettings`. Its fields carry their help, ``composer search``
builds its flags from them (:func:`add_flags`; ``sweep`` and ``proxy-check`` take the fields they share), and
``run(space, settings)`` takes the one object, as HF's ``TrainingArguments`` / ``HfArgumentParser`` /
``Trainer(args=...)`` do. The training settings (data, split, device, recipe) are composer.train's
:class:`~composer.train.recipe.TrainSettings`, kept under ``train``: the search only carries them to the trials.

    from composer.search import SearchSettings, run
    run("small_images", SearchSettings(trials=16, pruner="hyperband", train={"data": "fashion-mnist"}))

Process-wide switches that are not the study's (``--flush-denormal``, ``--keep-freed-memory``) and how a run talks
(progress bar, log) stay outside it.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..spec import SpecError
from ..spec.errors import Problem

PRUNERS = ("median", "hyperband", "successive-halving", "none")
"""--pruner: Optuna's pruners; epochs (or a reporter's steps) are the resource."""
SAMPLERS = ("auto", "random", "tpe-grouped")
"""--sampler: auto (TPE; NSGA-II for several objectives), random (Optuna's RandomSampler, the baseline) or
tpe-grouped (TPE modelling the parameters jointly, per group of parameters that occur together)."""
COUNTS = ("all", "feasible")
"""--count-trials: what --trials counts."""

_CHOICES = {"pruner": PRUNERS, "sampler": SAMPLERS, "direction": ("maximize", "minimize"), "count_trials": COUNTS}
_AT_LEAST_ONE = ("trials", "workers", "proxy_size", "proxy_batch", "latency_batch")
_LEGACY = {"batch_size": "latency_batch"}
"""Keyword arguments of run() before SearchSettings, still accepted: the old name -> the field."""
TRAIN_SHORTHANDS = ("data", "epochs", "train_size", "device")
"""run()'s shorthands for the same keys of ``train``."""


class SearchSettings(BaseModel):
    """Everything a study is run with: budgets, trials, objective, sampler and pruner, storage, workers, the proxies'
    input, the latency device's batch, and ``train`` (composer.train's settings and recipe keys side by side, as a
    space's ``train:`` section writes them, over that section). Defaults are the command line's."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    budget: str | int | None = Field(None, description="hard MAC budget, e.g. 5GFLOPs (a FLOP is a MAC here); "
                                                       "default: the space's")
    max_params: str | int | None = Field(None, description="hard parameter budget, e.g. 30M; default: the space's "
                                                           "(or none)")
    max_latency: str | float | None = Field(None, description="hard budget on the latency predicted on this device, "
                                                              "e.g. 25ms (composer latency; default: the space's, or "
                                                              "none)")
    min_macs: str | int | None = Field(None, description="MAC floor, e.g. 8M beside --budget 10M: a sample below it "
                                                         "is infeasible like one over the budget (refused before "
                                                         "anything is built), so picks use the budget; default: the "
                                                         "space's budget: {min_macs: ...}, or none")
    latency_batch: int = Field(1, description="latency: the batch size predicted / timed (default 1); --batch-size "
                                              "is its old name (--train-batch sets the training minibatch)")
    gpus: str | None = Field(None, description="GPU indices, e.g. 0,1,2,3: one --workers process per GPU, each "
                                               "seeing only its own (CUDA_VISIBLE_DEVICES), with --device cuda")
    measure_latency: bool = Field(False, description="the latency objective times the built model instead of "
                                                     "predicting it")
    trials: int = Field(20, description="finished trials the study should hold (default 20)")
    objective: Any = Field(None, description="proxy | naswot | gradnorm | train | a plugin's objective | "
                                                    "module:function (your f(model, spec, reporter) -> float), or "
                                                    "several joined by commas with macs | params | latency for a "
                                                    "Pareto search (default: the space's, or proxy)")
    direction: str | None = Field(None, description="whether to maximize or minimize a module:function or plugin "
                                                    "objective (default: the function's direction attribute)")
    seed: int = Field(0, description="the sampler's seed (default 0)")
    storage: str | None = Field(None, description="Optuna storage URL (default: sqlite:///RUN_DIR/study.db)")
    run_dir: str | None = Field(None, description="output folder (default: runs/SPACE-OBJECTIVE)")
    study_name: str | None = Field(None, description="default: SPACE-OBJECTIVE")
    workers: int = Field(1, description="worker processes sharing the study (default 1)")
    pruner: str = Field("median", description="train (and reporting objectives): Optuna's pruner, epochs as the "
                                              "resource (default median)")
    sampler: str = Field("auto", description="auto: TPE (NSGA-II for several objectives); random: Optuna's "
                                             "RandomSampler, the baseline a search must beat; tpe-grouped: TPE with "
                                             "multivariate=True, group=True, for spaces whose parameters exist only "
                                             "with some choices (default auto)")
    count_trials: str = Field("all", description="what --trials counts: all (an over-budget sample is a trial, "
                                                 "refused in milliseconds before anything is built) or feasible (only "
                                                 "samples within the budget, not repeats of one scored before: "
                                                 "--trials 16 scores 16 architectures; at most 20x as many samples "
                                                 "are drawn) (default all)")
    keep_checkpoints: bool = Field(False, description="train: keep finished trials' checkpoints in "
                                                      "RUN_DIR/checkpoints (default: removed)")
    warm_start: str | list[str] | None = Field(None, description="presets or spec paths, comma-separated, tried "
                                                                 "first (they must lie in the space; default: the "
                                                                 "space's warm_start)")
    proxy_size: int = Field(64, description="proxy: input resolution for scoring (default 64)")
    proxy_batch: int = Field(16, description="proxy: minibatch size (default 16)")
    heartbeat: float = Field(5.0, description="seconds between heartbeats; a trial silent for 3x this is failed and "
                                              "retried (default 5)")
    worker_index: int = Field(0, description="this process's index among processes sharing one study (offsets the "
                                             "sampler seed)")
    train: dict[str, Any] | None = Field(None, description="training settings and recipe keys (composer.train), "
                                                           "over the space's train: section")

    @field_validator(*_AT_LEAST_ONE)
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("heartbeat")
    @classmethod
    def _heartbeat(cls, value: float) -> float:
        if not 0.1 <= value <= 86400:   # also refuses nan
            raise ValueError(f"must be a number of seconds between 0.1 and 86400, got {value!r}")
        return value

    @field_validator("pruner", "sampler", "direction", "count_trials")
    @classmethod
    def _choice(cls, value: str | None, info: ValidationInfo) -> str | None:
        options = _CHOICES[info.field_name]
        if value is not None and value not in options:
            raise ValueError(f"{value!r}: not a {info.field_name}; use one of {', '.join(options)}")
        return value

    @field_validator("objective")
    @classmethod
    def _objective(cls, value):
        if value is not None and not isinstance(value, str) and not callable(value):
            raise ValueError(f"{value!r}: give an objective's name, module:function or a function")
        return value

    @field_validator("train", mode="before")
    @classmethod
    def _train(cls, value):
        if isinstance(value, BaseModel):   # a composer.train.TrainSettings: its keys side by side, as a space writes
            return {**value.model_dump(exclude={"recipe"}), **value.recipe.model_dump()}
        return value

    @classmethod
    def of(cls, settings: SearchSettings | dict | None = None, **options) -> SearchSettings:
        """``settings`` (an object or a mapping of its fields) with keyword ``options`` on top: the fields, run()'s
        older keyword names (``batch_size``) and its training shorthands (``data``, ``epochs``, ``train_size``,
        ``device``, which go into ``train``). A refused value raises a SpecError that names the flag."""
        base = settings.model_dump(exclude_unset=True) if isinstance(settings, SearchSettings) else \
            dict(settings or {})
        for old, new in _LEGACY.items():
            if old in options:
                options.setdefault(new, options.pop(old))
        shorthands = {k: options.pop(k) for k in TRAIN_SHORTHANDS if k in options}
        merged = {**base, **options}
        unknown = [k for k in merged if k not in cls.model_fields]
        if unknown:
            raise SpecError(Problem(f"{unknown[0]!r}: not a search setting; use one of "
                                    f"{', '.join(cls.model_fields)}", ()))
        try:
            out = cls.model_validate(merged)
        except ValidationError as exc:
            raise SpecError(Problem(describe_error(exc), ())) from None
        given = {k: v for k, v in shorthands.items() if v is not None}
        if given:
            out.train = {**(out.train or {}), **given}
        return out

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> SearchSettings:
        """The flags :func:`add_flags` declared that the user gave (None: not given), and the training flags
        (composer.train.recipe.add_flags) as ``train``."""
        from ..train.recipe import flag_values

        given = {name: getattr(args, name) for name in cls.model_fields
                 if name != "train" and getattr(args, name, None) is not None}
        return cls.of(given, train=flag_values(args) or None)


def describe_error(exc: ValidationError) -> str:
    """pydantic's first error as one line that names the flag: ``--trials must be at least 1, got 0``."""
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else ""
    flag = "--" + name.replace("_", "-")
    if err["type"] == "value_error":
        message = str(err["ctx"]["error"])
        return f"{flag} {message}"
    return f"{flag}: {err['msg'].lower()}, got {err['input']!r}"


_FLAG_NAMES = {"latency_batch": ("--latency-batch", "--batch-size")}
_HIDDEN = {"train"}


def add_flags(parser: argparse.ArgumentParser, names: list[str] | None = None,
              help: dict[str, str] | None = None) -> None:
    """Declare :class:`SearchSettings`' fields (``names``: a subset, for sweep and proxy-check) as flags, each with its
    field's description (``help`` overrides a few for a command that uses the field otherwise). Every flag defaults
    to None (not given): the field's own default applies, and a space's values are kept."""
    help = help or {}
    for name, info in SearchSettings.model_fields.items():
        if name in _HIDDEN or (names is not None and name not in names):
            continue
        flags = _FLAG_NAMES.get(name, ("--" + name.replace("_", "-"),))
        text = help.get(name, info.description)
        if name == "objective":
            parser.add_argument(*flags, dest=name, default=None, help=text)
        elif info.annotation is bool:
            parser.add_argument(*flags, dest=name, action="store_true", default=None, help=text)
        elif name in _CHOICES:
            parser.add_argument(*flags, dest=name, choices=_CHOICES[name], default=None, help=text)
        else:
            kind = {int: int, float: float}.get(info.annotation, str)
            parser.add_argument(*flags, dest=name, type=kind, default=None, help=text)
