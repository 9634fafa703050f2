"""Training checkpoints of search trials: a killed training trial resumes where it stopped.

With ``--objective train`` every trial saves its training state (model, optimizer, scheduler, RNG, the epochs'
accuracies) to ``RUN_DIR/checkpoints/trial<N>.pt`` after every epoch. A worker killed mid-trial leaves that
trial RUNNING; its heartbeat goes stale, Optuna fails it and enqueues one retry with the same parameters
(``RetryFailedTrialCallback``, whose retry names the failed trial). The retry takes over the failed trial's
checkpoint by renaming it to its own name: a rename succeeds for one process only, so two workers can never
resume the same checkpoint, and the chain continues when a retry is killed in turn. The retry trains the
remaining epochs only and records ``resumed_at_epoch``. A finished (complete or pruned) trial's checkpoint is
removed unless ``--keep-checkpoints``.

Checkpoints hold tensors and plain data only and are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna


@dataclass
class TrialCheckpoint:
    """The checkpoint of one trial: ``load()`` (the state it resumes from, or None) and ``save(state)``."""

    path: Path
    identity: dict            # what must match for a checkpoint to be resumed: study, parameters, spec
    source: Path | None = None  # the failed trial's checkpoint this retry may take over
    resumed_at_epoch: int | None = None
    _state: dict | None = None
    _loaded: bool = False

    def load(self) -> dict | None:
        """The failed predecessor's state, taken over (once; later calls return the same state)."""
        if self._loaded:
            return self._state
        self._loaded = True
        if self.source is None:
            return None
        try:
            os.rename(self.source, self.path)   # atomic: only one process takes a given checkpoint over
        except FileNotFoundError:   # none was saved (killed in its first epoch), or it was taken already
            return None
        import torch

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable (the writes are atomic, so not a kill mid-write): train from epoch 0
            return None
        if not isinstance(state, dict) or state.get("identity") != self.identity:
            return None
        self.resumed_at_epoch = len(state["history"])
        self._state = state
        return state

    def save(self, state: dict[str, Any]) -> None:
        import torch

        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save({**state, "identity": self.identity}, tmp)
        os.replace(tmp, self.path)   # a kill during the write leaves the previous epoch's checkpoint intact

    def finish(self, keep: bool) -> None:
        if not keep:
            self.path.unlink(missing_ok=True)


def _retried_number(study: optuna.Study, trial: optuna.Trial) -> int | None:
    frozen = study._storage.get_trial(trial._trial_id)
    return optuna.storages.RetryFailedTrialCallback.retried_trial_number(frozen)


def trial_checkpoint(folder: Path, study: optuna.Study, trial: optuna.Trial, spec: dict) -> TrialCheckpoint:
    """The checkpoint ``trial`` saves to, and the one it may resume: its failed predecessor's."""
    folder.mkdir(parents=True, exist_ok=True)
    identity = {"study": study.study_name, "params": {k: repr(v) for k, v in sorted(trial.params.items())},
                "spec": repr(sorted((k, repr(v)) for k, v in spec.items() if k != "name"))}
    failed = _retried_number(study, trial)
    source = folder / f"trial{failed}.pt" if failed is not None else None
    return TrialCheckpoint(folder / f"trial{trial.number}.pt", identity, source)


__all__ = ["TrialCheckpoint", "trial_checkpoint"]
