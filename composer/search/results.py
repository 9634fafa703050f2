"""Reading a study: the settings it was run with, its objectives and their directions, the best trial, the
Pareto front, the table of trials. Shared by the search loop (study.py) and its reports (report.py), which
import this module and not each other.

The objectives a study can name live in :data:`composer.registry.OBJECTIVES`: the built-ins below (evaluated by
the search itself), plugins' (entry-point group ``composer.objectives``) and, on the command line only,
``module:function`` (imported here; never from a spec or space file, which stay data).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from ..registry import OBJECTIVES, Objective, RegistryError, load_plugins, objective_direction

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SCORE_OBJECTIVES = ("proxy", "naswot", "gradnorm", "zico")
"""Training-free scores of one forward + backward pass (one pass gives the first three; zico takes a second)."""
COST_OBJECTIVES = ("macs", "params", "latency")
"""Partners for a Pareto search: from the Plan (macs, params) or timed on the built model (latency)."""

_BUILTINS = {
    "proxy": (True, "NASWOT log|K| on one random minibatch (= naswot)"),
    "naswot": (True, "NASWOT (Mellor et al., 2021): log|K| of the activation patterns' Hamming kernel"),
    "gradnorm": (True, "sum of gradient L2 norms at initialisation (Abdelfattah et al., 2021)"),
    "zico": (True, "ZiCo (Li et al., 2023): log-summed inverse coefficient of variation of the gradients"),
    "train": (True, "validation accuracy after --epochs of training on --data"),
    "macs": (False, "GMACs from the Plan"),
    "params": (False, "M parameters from the Plan"),
    "latency": (False, "ms of one forward at --batch-size on --device, predicted from the latency table "
                       "(--measure-latency: timed on the built model)"),
}
for _name, (_maximize, _doc) in _BUILTINS.items():
    if _name not in OBJECTIVES:
        OBJECTIVES.register(_name, Objective(_name, _maximize, doc=_doc, builtin=True))


def maximize(name: str) -> bool:
    return OBJECTIVES[name].maximize


def is_builtin(name: str) -> bool:
    return OBJECTIVES[name].builtin


def import_objective(text: str, direction: str | None) -> Objective:
    """``module:function`` (as uvicorn and gunicorn take apps) imported and registered under ``text``. The
    current folder is importable, as it is for ``python -m``."""
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--objective {text!r}: write module:function, e.g. my_pkg.evals:accuracy")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module: any error in it is theirs, reported before any trial
        raise ValueError(f"--objective {text}: cannot import {module_name} ({type(exc).__name__}: {exc})") from None
    function = module
    for part in attr.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise ValueError(f"--objective {text}: {module_name} has no {attr!r}")
    if not callable(function):
        raise ValueError(f"--objective {text}: {attr} is a {type(function).__name__}, not a function")
    return register_callable(text, function, direction)


def register_callable(name: str, function, direction: str | None) -> Objective:
    try:
        maximize_it = objective_direction(function, direction, name) == "maximize"
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    objective = Objective(name, maximize_it, function, (function.__doc__ or "").strip().split("\n")[0])
    OBJECTIVES.register(name, objective, replace=True, origin=getattr(function, "__module__", None) or name)
    return objective


def callable_name(function) -> str:
    """``module:qualname`` of a function given to ``run(objective=...)``, the name a study records."""
    return f"{getattr(function, '__module__', None) or 'objective'}:{getattr(function, '__qualname__', 'function')}"


def parse_objectives(text: str, direction: str | None = None, *, from_file: bool = False) -> list[str]:
    """The objective names of ``--objective`` (comma-separated), each registered (``module:function`` is
    imported unless ``from_file``: a space file names registered objectives only)."""
    load_plugins()
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    known = ", ".join(sorted(OBJECTIVES))
    if not names:
        raise ValueError(f"give an objective: {known}, module:function, or several joined by commas (e.g. "
                         "proxy,macs)")
    for name in names:
        if ":" in name and from_file:
            raise ValueError(f"objective {name!r}: a module:function objective is a command-line argument "
                             "(--objective), not a field of a space file (spaces are data)")
        if ":" in name and name not in OBJECTIVES:
            import_objective(name, direction)
        elif name not in OBJECTIVES:
            try:
                OBJECTIVES.lookup(name)
            except RegistryError as exc:
                raise ValueError(f"{exc}; or module:function (join several with commas)") from None
        elif direction is not None and not OBJECTIVES[name].builtin:  # --direction overrides a plugin's own
            register_callable(name, OBJECTIVES[name].function, direction)
    if len(set(names)) != len(names):
        raise ValueError(f"objective {text!r} repeats a name")
    evaluators = [n for n in names if n not in COST_OBJECTIVES and n not in SCORE_OBJECTIVES]
    if len(evaluators) > 1 or (evaluators and any(n in SCORE_OBJECTIVES for n in names)):
        raise ValueError(f"objective {text!r}: one model-evaluating objective at a time ({', '.join(evaluators)}"
                         f"{' and a proxy score' if len(evaluators) == 1 else ''}); combine it with macs, params "
                         "or latency for a Pareto search")
    return names


@dataclass
class Settings:
    objectives: list[str]
    budget_macs: int
    budget_params: int | None
    trials: int
    seed: int = 0
    proxy_size: int = 64
    proxy_batch: int = 16
    data: str = "digits"
    epochs: int = 3
    dedupe: bool = True
    train_size: int | None = None
    """--objective train: the resolution models are compiled and trained at (None: the spec's input_size)."""
    budget_latency_ms: float | None = None
    """--max-latency: predicted ms of one forward at ``latency_batch`` on ``latency_device`` (composer.latency)."""
    latency_device: str = "cpu"
    latency_batch: int = 1
    measure_latency: bool = False
    """--measure-latency: the latency objective times the built model instead of predicting it."""
    latency_flush_denormal: bool = False
    """Whether the process flushed denormals to zero (--flush-denormal) when the study started: the latency table's."""
    latency_allocator: str = "default"
    """The CPU allocator when the study started (--keep-freed-memory, MALLOC_* variables, a preloaded allocator)."""
    pruner: str = "median"
    """--pruner: median | hyperband | successive-halving | none (epochs, or a reporter's steps, as resource)."""
    keep_checkpoints: bool = False
    """--keep-checkpoints: keep a finished training trial's checkpoint (RUN_DIR/checkpoints)."""
    sampler: str = "auto"
    """--sampler: auto (TPE / NSGA-II), random or tpe-grouped."""
    count_trials: str = "all"
    """--count-trials: all or feasible (what --trials counts)."""
    budget_min_macs: int | None = None
    """--min-macs: the MAC floor (None: none); a sample below it is infeasible."""
    train: Any = None
    """composer.train.TrainSettings: data, split, device, precision and recipe (--objective train)."""

    def macs_outside(self, macs: int) -> bool:
        """Whether ``macs`` lies over the MAC budget or under the floor."""
        return macs > self.budget_macs or (self.budget_min_macs is not None and macs < self.budget_min_macs)

    def budget_text(self) -> str:
        """``10M MACs`` or, with a floor, ``8M-10M MACs``."""
        from ..spec.units import format_count

        floor = f"{format_count(self.budget_min_macs)}-" if self.budget_min_macs is not None else ""
        return f"{floor}{format_count(self.budget_macs)} MACs"

    @property
    def predicts_latency(self) -> bool:
        return self.budget_latency_ms is not None or ("latency" in self.objectives and not self.measure_latency)

    def study_attrs(self) -> dict:
        attrs = {"objectives": ",".join(self.objectives), "budget_macs": self.budget_macs,
                 "budget_params": self.budget_params, "proxy_size": self.proxy_size,
                 "proxy_batch": self.proxy_batch, "data": self.data, "epochs": self.epochs}
        if "train" in self.objectives:  # only then: proxy studies of earlier versions continue unchanged
            attrs["train_size"] = self.train_size
            if self.train is not None:   # the data, split, device, precision and recipe: a change refuses to continue
                attrs["train"] = self.train.recorded()
        if self.pruner != "median":  # likewise: studies run before --pruner existed used the median pruner
            attrs["pruner"] = self.pruner
        if self.sampler != "auto":  # likewise
            attrs["sampler"] = self.sampler
        if self.count_trials != "all":  # likewise
            attrs["count_trials"] = self.count_trials
        if self.budget_min_macs is not None:  # likewise
            attrs["budget_min_macs"] = self.budget_min_macs
        if self.budget_latency_ms is not None or "latency" in self.objectives:  # likewise
            attrs.update(budget_latency_ms=self.budget_latency_ms, latency_device=self.latency_device,
                         latency_batch=self.latency_batch, measure_latency=self.measure_latency)
            if self.latency_flush_denormal:  # likewise: studies before --flush-denormal ran with it off
                attrs["latency_flush_denormal"] = True
            if self.latency_allocator != "default":  # likewise: the allocator was not recorded before
                attrs["latency_allocator"] = self.latency_allocator
        return attrs


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("feasible") and (t.user_attrs.get("built") or t.user_attrs.get("evaluated")
                                                 or "reused_from" in t.user_attrs)]


def best_trial(study: optuna.Study, settings: Settings):
    trials = feasible_trials(study)
    if not trials:
        return None
    sign = 1 if maximize(settings.objectives[0]) else -1
    return max(trials, key=lambda t: sign * t.value)


def pareto_front(study: optuna.Study, settings: Settings) -> list[optuna.trial.FrozenTrial]:
    trials = feasible_trials(study)
    signs = [1 if maximize(n) else -1 for n in settings.objectives]

    def dominates(a, b) -> bool:
        av = [s * v for s, v in zip(signs, a.values)]
        bv = [s * v for s, v in zip(signs, b.values)]
        return all(x >= y for x, y in zip(av, bv)) and any(x > y for x, y in zip(av, bv))

    front = [t for t in trials if not any(dominates(o, t) for o in trials)]
    return sorted(front, key=lambda t: t.values[0], reverse=signs[0] > 0)


def trials_table(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name}
        if t.values is not None:
            for i, v in enumerate(t.values):
                row[f"value_{i}" if len(t.values) > 1 else "value"] = v
        for key in ("feasible", "macs", "params", "fft_macs", "slack_macs", "slack_params", "latency_ms_predicted",
                    "naswot", "gradnorm", "zico", "accuracy", "accuracy_ema", "val_split", "train_images",
                    "img_per_s", "peak_mem_mb", "skipped_images", "epochs_trained", "resumed_at_epoch",
                    "objective_value", "latency_ms", "seconds", "proxy_size", "train_size",
                    "reused_from", "worker", "error"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        row.update({f"param:{k}": v for k, v in t.params.items()})
        if "spec" in t.user_attrs:
            row["layout"] = t.user_attrs["spec"].get("layout")
            row["depths"] = json.dumps(t.user_attrs["spec"].get("depths"))
        rows.append(row)
    return rows
