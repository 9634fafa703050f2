"""The search loop: Optuna study, hard budget before building, crash-safe storage, several workers.

Every trial samples the space, validates and plans the sample (no tensors), and checks the Plan's MACs and
params against the budget. Only a feasible sample is built and scored; an infeasible one completes at once
with a penalty value and positive constraint values, so the sampler (TPE or NSGA-II with
``constraints_func``) learns the feasible region. The study lives in a storage (default: SQLite in the run
directory) with heartbeats: a trial left RUNNING by a killed process goes stale, is failed and re-queued
(``RetryFailedTrialCallback``), and the loop runs until the study holds ``trials`` finished (complete or
pruned) trials, whichever process finished them. A training trial's retry resumes from the killed trial's
last epoch (composer.search.checkpoints); ``--pruner`` prunes with epochs as the resource; ``warm_start``
designs are enqueued before the first trial.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from ..paths import At, read_bytes, shown, writable_file, writable_folder
from ..registry import OBJECTIVES
from ..spec import SpecError
from ..spec.errors import Problem
from ..spec.units import format_count
from .results import (
    FINISHED,
    SCORE_OBJECTIVES,
    Settings,
    best_trial,
    callable_name,
    feasible_trials,
    is_builtin,
    maximize,
    parse_objectives,
    register_callable,
)
from .settings import SearchSettings
from .space import SearchSpace, load_space, optuna_suggest

PENALTY = 1e9          # the value an infeasible or invalid sample gets (-PENALTY when maximising)
MAX_SAMPLES_PER_TRIAL = 20   # --count-trials feasible: at most this many samples per requested trial


@dataclass
class Counters:
    """What this process did (the log's figures)."""

    sampled: int = 0
    infeasible: int = 0
    invalid: int = 0
    built: int = 0
    over_budget_built: int = 0
    objective_failed: int = 0
    reused: int = 0
    check_seconds: float = 0.0
    build_seconds: list[float] = field(default_factory=list)


class ObjectiveFailed(Exception):
    """A user objective raised: the trial fails (Optuna's FAIL state) and the search goes on."""


class _QuietObjectiveFailures(logging.Filter):
    """Optuna logs a failed trial in two warnings, the first with its traceback; for a user objective's error
    composer has said it in one line already."""

    def __init__(self):
        super().__init__()
        self._quiet: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        number = text.split(" ", 2)[1] if text.startswith("Trial ") else None
        if "following error: ObjectiveFailed(" in text:
            self._quiet.add(number)
            return False
        if number in self._quiet and "failed with value" in text:
            self._quiet.discard(number)
            return False
        return True


logging.getLogger("optuna.study._optimize").addFilter(_QuietObjectiveFailures())


def _where(exc: BaseException) -> str:
    """`` (at file:line)``: the innermost frame of the traceback, where the user's code raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f" (at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})" if tb is not None else ""


_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")   # optuna >= 5: constraints_func is deprecated


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return trial.user_attrs.get("constraints", [1.0, 1.0, 1.0])


def _constrain(trial: optuna.Trial, values: list[float]) -> None:
    """Tell the sampler how far over budget a sample is (<= 0: feasible); kept as a user attr too."""
    trial.set_user_attr("constraints", values)
    if _SET_CONSTRAINT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # a retried trial inherits its constraints
            trial.set_constraint("macs", values[0])
            trial.set_constraint("params", values[1])
            if len(values) > 2:
                trial.set_constraint("latency", values[2])


def database_url(url: str) -> str:
    """``url`` with a PostgreSQL driver SQLAlchemy can import. SQLAlchemy 2.1 reads a plain ``postgresql://``
    as psycopg 3, while composer depends on psycopg2 (``psycopg2-binary``): without psycopg 3 installed, a plain
    URL gets ``postgresql+psycopg2://``. ``postgres://`` (as many hosting services write it) is accepted too. A
    URL that names its driver is kept."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return url
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}"


def shown_url(url: str) -> str:
    """``url`` for logs and messages: a database password is replaced by ``***``."""
    if "://" not in url or url.startswith("sqlite"):
        return url
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


_STORAGE_FORMS = ("sqlite:///path/study.db, postgresql://user@host/database or journal:path/study.log")
_SQLITE_HEADER = b"SQLite format 3\x00"


def _is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith(".log")


def _storage_problem(message: str) -> SpecError:
    return SpecError(Problem(message, ()))


def check_storage(url: str) -> None:
    """Refuse, before Optuna touches anything, a storage that cannot be one: not a URL, a file in a missing
    folder, a file that is not an SQLite database (an empty or overwritten study.db would otherwise be taken
    for a new study, and its run's results overwritten). The storage is left untouched. File paths go through
    composer.paths (a name the OS refuses, a folder, a FIFO or a dangling link in the file's place)."""
    at = At("--storage")
    if _is_journal(url):
        writable_file(url.removeprefix("journal:"), at, "study.log")
        return
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise _storage_problem(f"--storage {shown_url(url)}: not a storage URL; use {_STORAGE_FORMS}") from None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return
    path = writable_file(parsed.database, at, "study.db")
    if not os.path.exists(path):
        return
    header = read_bytes(path, at, len(_SQLITE_HEADER))[:len(_SQLITE_HEADER)]
    # another worker starting on the same new study may have created the file a moment ago and not yet written its
    # first page: an empty file younger than a few seconds is waited for, an old one is refused
    deadline = time.monotonic() + 10
    while not header and time.monotonic() < deadline and time.time() - _mtime(path) < 10:
        time.sleep(0.05)
        header = read_bytes(path, at, len(_SQLITE_HEADER))[:len(_SQLITE_HEADER)]
    if header != _SQLITE_HEADER:
        what = "empty (0 bytes)" if not header else "not an SQLite database"
        raise _storage_problem(f"--storage {url}: {path} is {what}, so it holds no study; it is left as it is: "
                               "move it away (or give another --run-dir) to start a new study")


def _mtime(path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def open_storage(url: str, heartbeat: float):
    """An Optuna storage for ``url``; RDB storages get heartbeats and the retry of stale trials. A storage that
    cannot be opened or read is a SpecError naming it (the storage is not changed)."""
    check_storage(url)
    if _is_journal(url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        except (OSError, ValueError, RuntimeError) as exc:
            raise _storage_problem(f"--storage {url}: cannot open the journal ({exc})") from None
    url = database_url(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if retry is not None:
            kwargs["heartbeat_stale_trial_callback"] = retry(max_retry=3)
        else:
            kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=3)
        for attempt in range(8):
            try:
                return optuna.storages.RDBStorage(url, heartbeat_interval=max(1, round(heartbeat)),
                                                  grace_period=max(2, round(3 * heartbeat)), **kwargs)
            except ImportError as exc:   # no driver for this database: a usage error, not a crash
                raise SpecError(Problem(f"--storage {shown_url(url)}: {exc} ({exc.__cause__ or 'no driver'}); install "
                                        "the database's Python driver (psycopg2-binary for PostgreSQL)", ())) from None
            except sqlalchemy.exc.SQLAlchemyError as exc:
                # several workers starting on a new database race to create its schema; the losers retry
                # once the winner has made it. A server that refuses the connection or a damaged file will
                # not get better: say so at once.
                text = str(exc).lower()
                hopeless = isinstance(exc, sqlalchemy.exc.DatabaseError) and any(word in text for word in (
                    "connection refused", "could not connect", "could not translate host", "password",
                    "does not exist", "malformed", "not a database", "file is encrypted", "unable to open"))
                if hopeless or attempt == 7:
                    first = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
                    raise _storage_problem(f"--storage {shown_url(url)}: cannot open the study storage ({first}); "
                                           "it is left as it is") from None
                time.sleep(0.25 * (attempt + 1))
            except (optuna.exceptions.StorageInternalError, RuntimeError, ValueError) as exc:
                # Optuna's own checks of an existing schema (a damaged or foreign database)
                raise _storage_problem(f"--storage {shown_url(url)}: cannot read the study storage ({exc}); it is "
                                       "left as it is") from None


class Searcher:
    """One worker process's view of a study."""

    def __init__(self, space: SearchSpace, settings: Settings, study: optuna.Study, log=print,
                 run_dir: Path | None = None, training=None, progress: bool = False):
        self.space, self.settings, self.study, self.log = space, settings, study, log
        self.run_dir = Path(run_dir) if run_dir is not None else Path("runs") / space.name
        self.counters = Counters()
        self.progress = progress
        self.device = (training.device if training is not None and training.device else
                       settings.train.device if settings.train is not None else "cpu")
        self.training = training   # composer.train.trial.TrainingData: the data, split and size, opened once
        if "train" in settings.objectives and training is None:
            from ..train.trial import prepare

            self.training = prepare(settings.train, space.base, settings.seed)
        self.predictor = None
        self.latency_ms: dict[int, float] = {}   # trial number -> predicted ms (this process's trials)
        if settings.predicts_latency:
            from ..latency import predictor

            self.predictor = predictor(settings.latency_device, settings.latency_batch)
            if settings.budget_latency_ms is not None:
                # a latency budget's table is checked before the first trial, on the space's base (whose parts
                # most samples share), not on whichever sample comes first: once per table, since a network whose
                # last check agreed is not measured again (latency.Predictor.self_check)
                self.predictor.checked_predict(space.base)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    # -- one trial ------------------------------------------------------------------------------------------
    def objective(self, trial: optuna.Trial):
        s, c = self.settings, self.counters
        self._trial = trial  # the trial being evaluated (_build records on it)
        t0 = time.perf_counter()
        data, drawn = self.space.sample(optuna_suggest(trial))
        data["name"] = f"{self.space.name}_t{trial.number}"
        check = self.space.check(data)  # the Plan's estimate decides what may be built
        c.sampled += 1
        c.check_seconds += time.perf_counter() - t0
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("spec", data)
        latency_budget = s.budget_latency_ms is not None
        if check.error is not None:
            c.invalid += 1
            trial.set_user_attr("feasible", False)
            trial.set_user_attr("error", check.error)
            _constrain(trial, [1.0, 1.0, 1.0] if latency_budget else [1.0, 1.0])
            return self._penalty(None)
        est = check.estimate
        over_macs = est.macs / s.budget_macs - 1.0
        if s.budget_min_macs is not None:
            # below the floor is as infeasible as over the budget: one MAC constraint, how far outside the band
            over_macs = max(over_macs, 1.0 - est.macs / s.budget_min_macs)
        over_params = est.params / s.budget_params - 1.0 if s.budget_params else -1.0
        feasible = over_macs <= 0 and over_params <= 0
        trial.set_user_attr("macs", est.macs)
        trial.set_user_attr("params", est.params)
        trial.set_user_attr("fft_macs", est.fft_macs)
        trial.set_user_attr("slack_macs", s.budget_macs - est.macs)
        if s.budget_params:
            trial.set_user_attr("slack_params", s.budget_params - est.params)
        constraints = [over_macs, over_params]
        if self.predictor is not None and feasible:
            # only now: predicting may time a part the table lacks (that part alone is built, not the model)
            predicted = self.predictor.checked_predict(check.spec).ms  # self-checked before the first trial
            trial.set_user_attr("latency_ms_predicted", predicted)
            self.latency_ms[trial.number] = predicted
            if latency_budget:
                over_latency = predicted / s.budget_latency_ms - 1.0
                trial.set_user_attr("slack_latency_ms", s.budget_latency_ms - predicted)
                constraints.append(over_latency)
                feasible = over_latency <= 0
        elif latency_budget:
            constraints.append(max(over_macs, over_params))  # not predicted: as far over as the other budgets
        _constrain(trial, constraints)
        trial.set_user_attr("feasible", feasible)
        if not feasible:
            c.infeasible += 1
            return self._penalty(est)
        if s.dedupe:
            twin = self._twin(trial, drawn)
            if twin is not None:
                c.reused += 1
                trial.set_user_attr("reused_from", twin.number)
                for key in ("naswot", "gradnorm", "zico", "latency_ms", "accuracy", "objective_value"):
                    if key in twin.user_attrs:
                        trial.set_user_attr(key, twin.user_attrs[key])
                return twin.values[0] if len(twin.values) == 1 else list(twin.values)
        return self._evaluate(trial, check)

    def _twin(self, trial, drawn: dict):
        for other in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if other.params == drawn and other.user_attrs.get("feasible") and other.number != trial.number:
                return other
        return None

    def _penalty(self, est):
        values = []
        for name in self.settings.objectives:
            if name == "macs" and est is not None:
                values.append(est.macs / 1e9)
            elif name == "params" and est is not None:
                values.append(est.params / 1e6)
            else:
                values.append(-PENALTY if maximize(name) else PENALTY)
        return values[0] if len(values) == 1 else values

    def _build(self, data: dict, check) -> Any:
        """The only place a model is built: after the budget check passed."""
        from ..composed import compose

        s, c = self.settings, self.counters
        est = check.estimate
        predicted = self.latency_ms.get(self._trial.number)
        over_latency = s.budget_latency_ms is not None and (predicted is None or predicted > s.budget_latency_ms)
        if s.macs_outside(est.macs) or (s.budget_params and est.params > s.budget_params) or over_latency:
            c.over_budget_built += 1   # cannot happen: infeasible samples return before this
        t0 = time.perf_counter()
        model = compose(data)
        self._trial.set_user_attr("built", True)
        c.built += 1
        c.build_seconds.append(time.perf_counter() - t0)
        return model

    def _evaluate(self, trial: optuna.Trial, check):
        import torch

        s = self.settings
        spec = check.spec
        t0 = time.perf_counter()
        torch.manual_seed(s.seed)
        results: dict[str, float] = {}
        if "train" in s.objectives:
            results["train"] = self._train(trial, check, spec)
        user = [n for n in s.objectives if not is_builtin(n)]
        if user:
            results[user[0]] = self._user_objective(trial, user[0], self._build(check.data, check), spec)
        if "latency" in s.objectives:
            if s.measure_latency:
                from ..latency import measure

                results["latency"] = measure(check.data, s.latency_device, s.latency_batch)
                trial.set_user_attr("latency_ms", results["latency"])
            else:
                results["latency"] = self.latency_ms[trial.number]
        needs_proxy = any(n in SCORE_OBJECTIVES for n in s.objectives)
        if needs_proxy:
            from .objectives import proxy_scores

            # at --proxy-size, or larger where the architecture needs a larger map (as proxy-check scores it)
            data, size = self.space.at_size(dict(check.data, drop_path_rate=0.0), min(s.proxy_size, spec.input_size))
            model = self._build(data, check)
            trial.set_user_attr("proxy_size", size)
            scores = proxy_scores(model, size, s.proxy_batch, spec.in_chans, spec.num_classes, s.seed,
                                  zico="zico" in s.objectives, device=self.device)
            for key in ("naswot", "gradnorm", "zico"):
                if key in scores:
                    trial.set_user_attr(key, scores[key])
                    results[key] = scores[key]
            results["proxy"] = scores["naswot"]
        results["macs"] = check.estimate.macs / 1e9
        results["params"] = check.estimate.params / 1e6
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        trial.set_user_attr("evaluated", True)  # also when nothing had to be built (macs, params, predicted latency)
        values = [results[n] for n in s.objectives]
        return values[0] if len(values) == 1 else values

    def _train(self, trial: optuna.Trial, check, spec) -> float:
        """Validation accuracy after ``--epochs`` of training, checkpointed after every epoch; a retry of a
        killed trial resumes from its checkpoint (composer.search.checkpoints)."""
        from .checkpoints import trial_checkpoint

        s = self.settings
        data, size = self._at_train_size(check, spec)
        trial.set_user_attr("train_size", size)
        trial.set_user_attr("val_split", self.training.split_name)
        trial.set_user_attr("train_images", len(self.training.splits.train))
        model = self._build(data, check)
        single = len(s.objectives) == 1
        checkpoint = trial_checkpoint(self.run_dir / "checkpoints", self.study, trial, data)
        state = checkpoint.load()   # a retry of a killed trial: its state (the training loop resumes from it)
        if state is not None:
            done = checkpoint.resumed_at_epoch
            trial.set_user_attr("resumed_at_epoch", done)
            self.log(f"trial {trial.number}: resuming the training of trial {checkpoint.source.stem[5:]} at epoch "
                     f"{done} of {s.epochs} ({checkpoint.path})")
            for row in state["history"]:   # the killed attempt's epochs: the pruner sees a whole curve
                trial.set_user_attr(f"accuracy_epoch{row['epoch']}", row["top1"])
                if single:
                    trial.report(row["top1"], row["epoch"] + 1)
        trained = 0

        def report(epoch: int, acc: float) -> None:
            nonlocal trained
            trained += 1
            trial.set_user_attr("epochs_trained", trained)
            trial.set_user_attr(f"accuracy_epoch{epoch}", acc)
            if single:
                trial.report(acc, epoch + 1)   # the resource: epochs trained (Hyperband's min_resource is 1)
                # never after the last epoch: the trial's cost is spent, and pruning it then would only hide a
                # finished result from the pick (Hyperband's top rung does this to all but 1/3 of its trials)
                if epoch + 1 < s.epochs and trial.should_prune():   # before this epoch's checkpoint is saved
                    trial.set_user_attr("accuracy", acc)
                    checkpoint.finish(s.keep_checkpoints)
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} at accuracy {acc:.3f}")

        from ..train.trial import train_spec

        try:
            result = train_spec(data, self.training, model=model, size=size, report=report, checkpoint=checkpoint,
                                progress=self.progress, desc=f"trial {trial.number}", log=self.log)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            import torch

            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
                del model
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                message = f"out of memory while training on {s.train.device}: {str(exc).splitlines()[0][:200]}"
            elif isinstance(exc, FloatingPointError):
                message = str(exc)
            else:
                raise
            self._fail(trial, "train", message)   # this architecture only: the search goes on
            raise ObjectiveFailed(message) from None
        trial.set_user_attr("epochs_trained", trained)   # 0 when the checkpoint held every epoch already
        checkpoint.finish(s.keep_checkpoints)
        last = result.history[-1]
        fresh = result.history[result.resumed_at_epoch or 0:]
        if fresh:
            trial.set_user_attr("img_per_s", round(sum(h.img_per_s for h in fresh) / len(fresh), 1))
            trial.set_user_attr("peak_mem_mb", round(max(h.peak_mem_mb for h in fresh), 1))
        if last.top1_ema is not None:
            trial.set_user_attr("accuracy_ema", last.top1_ema)
        if result.skipped_files:
            trial.set_user_attr("skipped_images", len(result.skipped_files))
        trial.set_user_attr("accuracy", last.top1)
        return last.top1

    def _user_objective(self, trial: optuna.Trial, name: str, model, spec) -> float:
        """A plugin's or the user's ``function(model, spec, reporter)``. Whatever it raises (but a prune) fails
        this trial only: the message is recorded (user attribute ``error``) and logged in one line, and the
        search goes on."""
        from .objectives import Reporter

        objective = OBJECTIVES[name]
        reporter = Reporter(trial, prune=len(self.settings.objectives) == 1)
        try:
            value = objective.function(model, spec, reporter)
            value = float(value)
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # the user's code: its error is the trial's, not the search's
            message = f"{type(exc).__name__}: {exc}{_where(exc)}"
            self._fail(trial, name, message)
            raise ObjectiveFailed(message) from None
        if not math.isfinite(value):
            self._fail(trial, name, f"returned {value!r}, not a finite number")
            raise ObjectiveFailed(f"returned {value!r}")
        trial.set_user_attr("objective_value", value)
        return value

    def _fail(self, trial, name: str, message: str) -> None:
        self.counters.objective_failed += 1
        trial.set_user_attr("error", message)
        trial.set_user_attr("objective_error", True)
        self.log(f"trial {trial.number} failed in objective {name}: {message}; the search goes on")

    def _at_train_size(self, check, spec) -> tuple[dict, int]:
        """The sample compiled at ``--train-size`` (budgets were checked at the spec's own input_size)."""
        return self.space.at_size(check.data, self.settings.train_size or spec.input_size)

    # -- the loop -------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        trials = self.study.get_trials(deepcopy=False)
        out = {state.name: 0 for state in TrialState}
        for t in trials:
            out[t.state.name] += 1
        # a trial whose objective raised is done too: the same architecture would raise again
        out["finished"] = out["COMPLETE"] + out["PRUNED"] + sum(
            1 for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("objective_error"))
        out["feasible"] = sum(1 for t in trials if t.state in FINISHED and t.user_attrs.get("feasible"))
        # --count-trials feasible: only architectures scored count toward --trials: samples within the budget (a
        # failed objective's trial was built, so feasible), not a repeat of one scored before (TPE re-draws a point
        # now and then; its twin's value is reused, no architecture is scored: follow-up 6's composer-s0 had 3 in 16)
        out["counted"] = out["finished"] if self.settings.count_trials == "all" else out["finished"] - sum(
            1 for t in trials if t.state in FINISHED and (not t.user_attrs.get("feasible")
                                                          or "reused_from" in t.user_attrs))
        return out

    def best_text(self) -> str:
        if len(self.settings.objectives) > 1:
            front = [t for t in feasible_trials(self.study) if t.state == TrialState.COMPLETE]
            return f"{len(front)} feasible"
        best = best_trial(self.study, self.settings)
        return "-" if best is None else f"{best.value:.4g} (#{best.number})"

    def _beat_unbeaten(self) -> None:
        """Give every RUNNING trial one heartbeat. A worker killed between creating a trial and its first
        heartbeat leaves a trial that Optuna never sees as stale (no heartbeat row); after this beat it goes
        stale one grace period later and is retried. A live worker's own beats keep its trial alive."""
        storage = self.study._storage
        if not getattr(storage, "get_heartbeat_interval", lambda: None)():
            return
        seen = self.__dict__.setdefault("_beaten", set())
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial._trial_id not in seen:
                seen.add(trial._trial_id)
                storage.record_heartbeat(trial._trial_id)

    def loop(self, progress: bool = True, poll: float = 1.0) -> None:
        n = self.settings.trials
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, initial=min(self.counts()["counted"], n), desc=f"search {self.space.name}",
                       unit="trial", file=sys.stderr, dynamic_ncols=True)

        def update(study, trial) -> None:
            if bar is None:
                return
            counts = self.counts()
            bar.n = min(counts["counted"], n)
            frac = counts["feasible"] / max(counts["finished"], 1)
            bar.set_postfix_str(f"best {self.best_text()}, feasible {counts['feasible']}/{counts['finished']} "
                                f"({frac:.0%})")
            bar.refresh()

        try:
            while True:
                counts = self.counts()
                if counts["counted"] >= n:
                    break
                if counts["finished"] >= MAX_SAMPLES_PER_TRIAL * n:   # --count-trials feasible in a space that
                    self.log(f"--count-trials feasible: {counts['finished']} samples drawn, {counts['counted']} "
                             f"within the budget; stopping ({MAX_SAMPLES_PER_TRIAL}x --trials at most)")
                    break
                if counts["counted"] + counts["RUNNING"] >= n and counts["WAITING"] == 0:
                    # the remaining trials run elsewhere, or belong to a dead worker and will go stale
                    self._beat_unbeaten()
                    optuna.storages.fail_stale_trials(self.study)
                    time.sleep(poll)
                    continue
                self.study.optimize(self.objective, n_trials=1, callbacks=[update], gc_after_trial=False,
                                    catch=(ObjectiveFailed,))
        finally:
            if bar is not None:
                bar.close()


def _sampler(settings: Settings, seed: int):
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    extra = {} if _SET_CONSTRAINT else {"constraints_func": _constraints}
    if settings.sampler == "random":   # the baseline every NAS result must beat (Li & Talwalkar 2019)
        return optuna.samplers.RandomSampler(seed=seed)
    if len(settings.objectives) > 1:
        pop = max(4, min(50, settings.trials // 4))
        return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed, **extra)
    startup = max(5, min(10, settings.trials // 4))
    if settings.sampler == "tpe-grouped":   # Optuna's advice for conditional spaces (kernel sizes, orders per stage)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True, **extra)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, **extra)


@dataclass
class SearchResult:
    study: optuna.Study
    run_dir: Path
    settings: Settings
    counters: Counters
    best_specs: list[Path]
    seconds: float
    summary: str


def _slug(objectives: list[str]) -> str:
    """The objectives as a folder / study name: ``my_pkg.evals:accuracy`` -> ``my_pkg.evals_accuracy``."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", n) for n in objectives)


def run(space, settings: SearchSettings | dict | None = None, *, progress: bool = True, report: bool = True,
        log=print, argv: list[str] | None = None, enqueue: list[dict] | None = None, **options) -> SearchResult:
    """Run (or continue) a budgeted search; see docs/search.md. Returns the study and what was written.

    ``settings``: a :class:`~composer.search.settings.SearchSettings` (or a mapping of its fields); keyword
    ``options`` on top of it are its fields too (``run(space, trials=16, pruner="hyperband")``), with the shorthands
    ``data``, ``epochs``, ``train_size`` and ``device`` for the same keys of ``settings.train`` and ``batch_size`` for
    ``latency_batch``. ``objective`` may also be a function ``f(model, spec, reporter) -> float`` (see
    ``composer.search.objectives.Reporter``), whose direction is ``direction`` or ``f.direction``. ``enqueue``:
    points tried first (composer sweep's grid). ``argv``: the command line, given to ``--workers`` children."""
    t_start = time.perf_counter()
    s = SearchSettings.of(settings, **options)
    budget, max_params, trials, objective, seed = s.budget, s.max_params, s.trials, s.objective, s.seed
    storage, run_dir, study_name, workers = s.storage, s.run_dir, s.study_name, s.workers
    proxy_size, proxy_batch, heartbeat, worker_index = s.proxy_size, s.proxy_batch, s.heartbeat, s.worker_index
    direction, max_latency, batch_size, measure_latency = s.direction, s.max_latency, s.latency_batch, \
        s.measure_latency
    pruner, keep_checkpoints, warm_start, gpus, sampler = s.pruner, s.keep_checkpoints, s.warm_start, s.gpus, \
        s.sampler
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    space = load_space(space)
    try:
        if callable(objective):
            name = callable_name(objective)
            if workers > 1 and ("<" in name or name.startswith("__main__:")):
                raise ValueError(f"objective {name}: --workers > 1 start processes that import the objective; "
                                 "give a function defined at the top level of an importable module")
            register_callable(name, objective, direction)
            objective = name
        if objective is not None:
            objectives = parse_objectives(objective, direction)
        else:
            objectives = parse_objectives(space.objective or "proxy", direction, from_file=True)
    except ValueError as exc:
        if objective is not None:  # the command line's (or the caller's)
            flag = "" if str(exc).startswith("--objective") else "--objective: "
            raise SpecError(Problem(flag + str(exc), ())) from None
        file, line = space.locations.find(("objective",))
        raise SpecError(Problem(str(exc), ("objective",), file or space.file, line)) from None
    macs = _count(budget, "--budget") if budget is not None else space.budget_macs
    params = _count(max_params, "--max-params") if max_params is not None else space.budget_params
    if macs is None:
        raise SpecError(Problem("no MAC budget: give --budget (e.g. 5GFLOPs) or budget: {macs: 5G} in the space",
                                ("budget",), space.file))
    min_macs = _mac_floor(s.min_macs, space, macs, budget)
    train_settings = _train_settings(space, s.train)
    device = train_settings.device
    settings = Settings(objectives, macs, params, trials, seed, proxy_size, proxy_batch, train_settings.data,
                        train_settings.recipe.epochs)
    settings.train = train_settings
    gpu_list = _check_device(train_settings, gpus, workers)
    if pruner not in ("median", "none") and len(objectives) > 1:
        raise SpecError(Problem(f"--pruner {pruner}: Optuna prunes single-objective studies only; the objective "
                                f"{','.join(objectives)} has {len(objectives)} (use --pruner none)", ()))
    settings.pruner, settings.keep_checkpoints = pruner, keep_checkpoints
    settings.sampler = sampler
    settings.count_trials = s.count_trials
    settings.budget_min_macs = min_macs
    try:
        from ..latency import fingerprint, parse_latency

        settings.budget_latency_ms = parse_latency(max_latency) if max_latency is not None else \
            space.budget_latency_ms
        settings.latency_device, settings.latency_batch = device, batch_size
        settings.measure_latency = measure_latency
        if settings.predicts_latency or measure_latency:
            fp = fingerprint(device, batch_size)  # an unknown device or a bad batch size: refused before any trial
            settings.latency_flush_denormal = fp.flush_denormal
            settings.latency_allocator = fp.allocator
    except ValueError as exc:
        raise SpecError(Problem(str(exc), ())) from None
    training = None
    if "train" in objectives:
        from ..train.trial import prepare

        try:
            training = prepare(train_settings, space.base, seed)
        except ValueError as exc:
            raise SpecError(Problem(str(exc), ())) from None
        settings.train_size = training.size
        settings.train = train_settings.model_copy(update={"train_size": training.size})
        source = training.source
        if report:
            log(f"training at {training.size} px on {device} ({training.describe()}; the budget is checked at the "
                f"spec's {space.base.input_size} px)")
            for note in source.notes[1:]:
                log(f"note: {note}")
        if space.base.num_classes != source.num_classes:
            if report:
                log(f"note: {source.name} has {source.num_classes} classes; the sampled specs use num_classes "
                    f"{source.num_classes} (the base has {space.base.num_classes})")
            space.base_data["num_classes"] = source.num_classes
        if space.base.in_chans != source.in_chans:
            if report:
                log(f"note: {source.name} has {source.in_chans} input channel{'s' if source.in_chans > 1 else ''}; "
                    f"the sampled specs use in_chans {source.in_chans} (the base has {space.base.in_chans})")
            space.base_data["in_chans"] = source.in_chans
    run_path = prepare_run_dir(run_dir or Path("runs") / f"{space.name}-{_slug(objectives)}")
    storage_url = storage or f"sqlite:///{(run_path / 'study.db').resolve()}"
    study_name = study_name or f"{space.name}-{_slug(objectives)}"
    store = open_storage(storage_url, heartbeat)
    directions = ["maximize" if maximize(n) else "minimize" for n in objectives]
    study = optuna.create_study(storage=store, study_name=study_name, directions=directions, load_if_exists=True,
                                pruner=_pruner(settings))
    attrs = settings.study_attrs()
    existing = study.user_attrs
    if existing.get("settings") and existing["settings"] != attrs:
        then = existing["settings"]
        diff = {k: (then.get(k), attrs.get(k)) for k in {**then, **attrs} if then.get(k) != attrs.get(k)}
        raise SpecError(Problem(
            f"study {study_name!r} in {shown_url(storage_url)} was run with other settings "
            f"({', '.join(f'{k}: {a!r} then, {b!r} now' for k, (a, b) in diff.items())}); rerun with the same "
            "settings to continue it, or give --run-dir / --study-name for a new study", ()))
    if not existing.get("settings"):
        study.set_user_attr("settings", attrs)
        study.set_user_attr("space", space.file or space.name)
    already = len(study.get_trials(deepcopy=False))
    study.sampler = _sampler(settings, seed + 7919 * worker_index + already)
    starts = _warm_starts(space, warm_start)
    for point in [*starts, *(enqueue or ())]:
        # warm starts, then (composer sweep) every point of the grid: each once (a rerun skips the queued ones)
        study.enqueue_trial(point, skip_if_exists=True)
    if report:   # every machine's main process says what it joined; --workers children (no report) do not
        done = sum(1 for t in study.get_trials(deepcopy=False) if t.state in FINISHED)
        what = f"continuing study {study_name!r} ({done} of {trials} trials finished)" if already else \
            f"new study {study_name!r}"
        latency = (f", {settings.budget_latency_ms:g} ms predicted on {device} at batch {batch_size}"
                   f"{', denormals flushed' if settings.latency_flush_denormal else ''}"
                   f"{f', allocator {settings.latency_allocator}' if settings.latency_allocator != 'default' else ''}"
                   if settings.budget_latency_ms is not None else "")
        log(f"{what}: objective {','.join(objectives)}, budget {settings.budget_text()}"
            f"{f', {format_count(params)} params' if params else ''}{latency}; storage {shown_url(storage_url)}; "
            f"run dir {run_path}")
    children = []
    if workers > 1 and argv is not None:
        # worker indices worker_index+1 ... worker_index+workers-1, so machines started with --worker-index 0
        # --workers 4 and --worker-index 4 do not share seeds; a child runs alone (--workers 1)
        child_argv = _without_flag(argv, "--gpus") if gpu_list else argv
        for i in range(1, workers):
            cmd = [sys.executable, "-m", "composer.cli", *child_argv, "--storage", storage_url, "--run-dir",
                   str(run_path), "--study-name", study_name, "--worker-index", str(worker_index + i), "--workers", "1",
                   "--no-report", "--no-progress"]
            # Optuna's FAQ: one process per GPU, each seeing only its own (it trains on "cuda", its cuda:0)
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu_list[i]} if gpu_list else None
            children.append(subprocess.Popen(cmd, env=env))
    if training is not None and gpu_list:
        training.device = f"cuda:{gpu_list[0]}"
    searcher = Searcher(space, settings, study, log, run_path, training=training, progress=progress)
    interrupted = False
    try:
        searcher.loop(progress=progress)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for child in children:
            try:
                child.wait()
            except KeyboardInterrupt:
                child.terminate()
                interrupted = True
    c = searcher.counters
    if "train" in objectives and report:
        log(_epochs_line(study, settings))
    log(f"this process: {c.sampled} samples checked ({c.check_seconds / max(c.sampled, 1) * 1e3:.1f} ms each), "
        f"{c.infeasible} {'outside the budget' if min_macs is not None else 'over budget'}, {c.invalid} invalid, "
        f"{c.reused} repeats reused, {c.built} models built, "
        f"{c.over_budget_built} over-budget models built")
    best_specs: list[Path] = []
    summary = ""
    if report:
        from .report import write_report

        best_specs, summary = write_report(study, settings, run_path, space)
        log(summary)
    if interrupted:
        log("interrupted: the study is saved; rerun the same command to continue it")
        raise KeyboardInterrupt
    return SearchResult(study, run_path, settings, c, best_specs, time.perf_counter() - t_start, summary)


def prepare_run_dir(path: str | os.PathLike) -> Path:
    """The run folder, made when missing and proven writable before any trial runs (a read-only folder, a file
    in its place, a name the OS refuses: a located ``--run-dir`` error). Every process probes with a file name of
    its own, so workers starting at once on one new folder never remove each other's probe."""
    return writable_folder(path, At("--run-dir"))


def _pruner(settings: Settings):
    """Epochs are the resource: a trial reports its accuracy after epoch e as step e + 1."""
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=settings.epochs, reduction_factor=3)
    if settings.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def _epochs_line(study: optuna.Study, settings: Settings) -> str:
    """How much training the study cost against running every trial to the end: the pruner's saving."""
    trials = study.get_trials(deepcopy=False)
    trained = sum(int(t.user_attrs.get("epochs_trained", 0)) for t in trials)
    ran = [t for t in trials if t.user_attrs.get("built") and "train_size" in t.user_attrs
           and t.state in FINISHED]
    resumed = sum(1 for t in trials if t.user_attrs.get("resumed_at_epoch"))
    pruned = sum(1 for t in ran if t.state == TrialState.PRUNED)
    full = len(ran) * settings.epochs
    share = f" ({trained / full:.0%})" if full else ""
    return (f"epochs trained: {trained} in all, against {len(ran)} trained trials x {settings.epochs} epochs = "
            f"{full}{share}; pruner {settings.pruner}, {pruned} pruned"
            f"{f', {resumed} resumed from checkpoints' if resumed else ''}")


def _warm_starts(space: SearchSpace, given) -> list[dict]:
    """The parameters of the published designs to try first (``--warm-start`` or the space's ``warm_start``)."""
    from .space import warm_start_params

    if given is None:
        return [params for _, params in space.warm_start]
    names = [n.strip() for n in given.split(",")] if isinstance(given, str) else list(given)
    out = []
    for name in names:
        if not name:
            continue
        try:
            out.append(warm_start_params(space, name))
        except ValueError as exc:
            raise SpecError(Problem(f"--warm-start {shown(name)}: {exc}", ())) from None
    return out


def _train_settings(space: SearchSpace, given, **shorthands):
    """The training settings: the space's ``train:``, then ``given`` (a mapping or a TrainSettings: the command
    line's flags), then the shorthand keyword arguments; refused in one located line."""
    from pydantic import BaseModel

    from ..train.recipe import TrainSettings, merge
    from ..train.recipe import problems as train_problems

    if isinstance(given, BaseModel):
        given = {**given.model_dump(exclude={"recipe"}), **given.recipe.model_dump()}
    overrides = {**(given or {}), **{k: v for k, v in shorthands.items() if v is not None}}
    for key, message in train_problems(space.train, overrides):
        if key is not None and key not in overrides and key in space.train:   # the space file's value
            file, line = space.locations.find(("train", key))
            raise SpecError(Problem(message, ("train", key), file or space.file, line))
        raise SpecError(Problem(f"--{key.replace('_', '-')}: {message}" if key else message, ()))
    return TrainSettings.model_validate(merge(space.train, overrides))


def _check_device(train, gpus: str | None, workers: int) -> list[str]:
    """Refuse a device this process cannot use, and ``--gpus`` that name GPUs that are not there, before any
    trial; the GPU of each worker (``--gpus 0,1``: worker i sees gpus[i % len(gpus)] only)."""
    from ..train.loop import resolve_device

    if gpus is None:
        if train.device.split(":")[0] != "cpu":
            try:
                resolve_device(train.device)
            except ValueError as exc:
                raise SpecError(Problem(str(exc), ())) from None
        return []
    names = [g.strip() for g in str(gpus).split(",")]
    if not names or not all(n.isdigit() for n in names):
        raise SpecError(Problem(f"--gpus {gpus}: expected GPU indices separated by commas, e.g. 0,1,2,3", ()))
    if train.device.split(":")[0] not in ("cuda",):
        raise SpecError(Problem(f"--gpus {gpus}: GPUs train only with --device cuda (got --device {train.device})",
                                ()))
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [n for n in names if int(n) >= count]
    if missing:
        seen = f"GPUs 0-{count - 1}" if count > 1 else ("GPU 0" if count == 1 else "no GPU")
        raise SpecError(Problem(f"--gpus {gpus}: GPU {missing[0]} does not exist; this machine shows {seen}", ()))
    return [names[i % len(names)] for i in range(max(workers, 1))]


def _without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


def _mac_floor(given, space, macs: int | None, budget) -> int | None:
    """The MAC floor: ``given`` (--min-macs) if given, else the space's, which a ``budget`` (--budget) given in its
    place may not cross; checked below the MAC budget ``macs``."""
    if given is not None:
        return _floor(given, macs)
    if space.budget_min_macs is not None and budget is not None:
        _floor(space.budget_min_macs, macs, f"--budget {budget} under the space's min_macs")
    return space.budget_min_macs


def _floor(value, macs: int | None, flag: str = "--min-macs") -> int:
    """--min-macs (or a space's floor) as a count below the MAC budget ``macs`` (if there is one)."""
    from .space import check_floor, mac_floor

    try:
        floor = mac_floor(value)
        check_floor(floor, macs)
        return floor
    except ValueError as exc:
        raise SpecError(Problem(f"{flag}: {exc}", ())) from None


def _count(value, flag: str) -> int:
    from .space import positive_budget

    try:
        return positive_budget(value, "MAC" if flag == "--budget" else "parameter")
    except ValueError as exc:
        raise SpecError(Problem(f"{flag}: {exc}", ())) from None
