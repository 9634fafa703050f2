"""``composer train`` and ``composer eval``: one architecture trained with the trial pipeline (same data sources,
recipe and loop as a search's trials) into a bundle (composer.train.bundle), resumable per epoch, on one process
or under ``torchrun`` (DistributedDataParallel); and the bundle evaluated, where a test split is read."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ..spec import SpecError
from ..spec.errors import Problem
from .bundle import EMA_WEIGHTS, WEIGHTS, BundleError, plot_curves, read_bundle, timm_config, write_json, write_metrics
from .recipe import TrainSettings


def _problem(message: str) -> SpecError:
    return SpecError(Problem(message, ()))


def distributed_init() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment, with the process group started (nccl on GPUs,
    gloo on CPUs); (1, 0, 0) when not launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0, 0
    import torch

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    import warnings

    # a 1x1 convolution on a 1x1 map gets its weight's gradient in another (equivalent) memory layout than DDP's
    # bucket; harmless, and said once per step per process otherwise
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return world, rank, local


def _versions() -> dict[str, str]:
    import timm
    import torch

    from .. import __version__

    return {"composer": str(__version__), "torch": str(torch.__version__), "timm": str(timm.__version__),
            "python": platform.python_version()}


class _RunCheckpoint:
    """``DIR/checkpoint.pt``: the loop's state after every epoch, resumed by a rerun when what the run is (spec,
    data, split, recipe, seed, world size) is unchanged; otherwise the differences are listed and nothing is
    touched."""

    def __init__(self, path: Path, identity: dict):
        self.path, self.identity = path, identity
        self.resumed_at_epoch: int | None = None

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        import torch

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file: say so rather than train over it
            raise _problem(f"{self.path}: cannot read the checkpoint ({type(exc).__name__}); move it away to start "
                           "the run anew") from None
        then = state.get("identity", {})
        if then != self.identity:
            keys = sorted({*then, *self.identity})
            diff = [f"{k}: {_short(then.get(k))} then, {_short(self.identity.get(k))} now" for k in keys
                    if then.get(k) != self.identity.get(k)]
            raise _problem(f"{self.path.parent}: the unfinished run there was started with other settings "
                           f"({'; '.join(diff)}); rerun with the same settings to resume it, or give another --out")
        self.resumed_at_epoch = len(state["history"])
        return state

    def save(self, state: dict) -> None:
        import torch

        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        torch.save({**state, "identity": self.identity}, tmp)
        os.replace(tmp, self.path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _out_folder(out: str | None, name: str) -> Path:
    folder = Path(out) if out else Path("runs") / f"train-{name}"
    if folder.exists() and not folder.is_dir():
        raise _problem(f"--out {folder}: a file, not a folder; give a folder for the bundle")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".composer-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise _problem(f"--out {folder}: cannot write there ({exc.strerror or exc})") from None
    return folder


def _run_study(run_dir: str):
    import optuna

    folder = Path(run_dir)
    db = folder / "study.db"
    if not db.is_file():
        raise _problem(f"--from-run {run_dir}: no study.db there (give a run directory of composer search)")
    storage = f"sqlite:///{db.resolve()}"
    names = optuna.get_all_study_names(storage)
    if len(names) != 1:
        raise _problem(f"--from-run {run_dir}: {len(names)} studies in {db}; give the run directory of one search")
    return optuna.load_study(study_name=names[0], storage=storage)


def run_settings_of(run_dir: str) -> tuple[dict, Path | None]:
    """The training settings a search ran with (``--from-run``) and its best spec."""
    folder = Path(run_dir)
    attrs = _run_study(run_dir).user_attrs.get("settings", {})
    if "train" not in attrs:
        raise _problem(f"--from-run {run_dir}: that search did not train (objective {attrs.get('objective')}); "
                       "give the data and recipe as flags")
    recorded = dict(attrs["train"])
    recipe = recorded.pop("recipe", {})
    best = folder / "best.yaml"
    return {**recorded, **recipe}, best if best.is_file() else None


def train_command(spec_source: str | None, flags: dict, *, out: str | None = None, seed: int = 0,
                  from_run: str | None = None, progress: bool = True, log=print):
    """Train one architecture into a bundle; returns (its folder, the trained model, the loop's TrainResult)."""
    from ..composed import compose
    from ..resolution import at_input_size
    from ..spec import load_spec, spec_to_data
    from .loop import resolve_device, train
    from .recipe import merge, problems
    from .trial import prepare

    base: dict = {}
    if from_run:
        base, best = run_settings_of(from_run)
        base.pop("loader_workers", None)
        if spec_source is None:
            spec_source = str(best) if best else None
    if spec_source is None:
        raise _problem("give a SPEC (a file, a preset or a run's best.yaml), or --from-run RUN_DIR")
    for key, message in problems(base, flags):
        raise _problem(f"--{key.replace('_', '-')}: {message}" if key else message)
    settings = TrainSettings.model_validate(merge(base, flags))
    spec = load_spec(spec_source)
    world, rank, local = distributed_init()
    try:
        device = resolve_device(settings.device)
    except ValueError as exc:
        raise _problem(str(exc)) from None
    if world > 1 and device.type == "cuda":
        import torch

        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    try:
        training = prepare(settings, spec, seed)
    except ValueError as exc:
        raise _problem(str(exc)) from None
    source = training.source
    data = dict(spec_to_data(spec), num_classes=source.num_classes, in_chans=source.in_chans)
    built = at_input_size(data, training.size) if training.size != spec.input_size else load_spec(data)
    name = spec.name or Path(str(spec_source)).stem
    folder = _out_folder(out, name) if rank == 0 else Path(out or Path("runs") / f"train-{name}")
    if world > 1:
        import torch

        torch.distributed.barrier()
    recorded = settings.model_copy(update={"train_size": training.size}).recorded()
    # what the run is, key by key (a changed key is named when a rerun refuses to resume)
    identity = {"spec": repr(sorted(spec_to_data(built).items())), "seed": seed, "world_size": world,
                **{k: v for k, v in recorded.items() if k != "recipe"}, **recorded["recipe"]}
    checkpoint = _RunCheckpoint(folder / "checkpoint.pt", identity)
    global_batch = settings.recipe.train_batch * world
    say = log if rank == 0 else (lambda *a: None)
    say(f"training {name} at {training.size} px on {device}{f' x {world} processes' if world > 1 else ''}: "
        f"{training.describe()}; global batch {global_batch} ({settings.recipe.train_batch} per process), "
        f"learning rate {settings.recipe.lr:g} as given (not rescaled by the batch); {settings.recipe.epochs} epochs; "
        f"bundle {folder}")
    import torch

    torch.manual_seed(seed)
    model = compose(built, specialize=settings.specialize)
    t0 = time.perf_counter()
    try:
        result = train(model, source, training.splits, settings, size=training.size, in_chans=built.in_chans,
                       seed=seed, checkpoint=checkpoint, progress=progress and rank == 0, desc=name, log=say,
                       device=device)
    except torch.OutOfMemoryError as exc:
        raise _problem(f"out of memory on {device}: {str(exc).splitlines()[0][:200]}; lower --train-batch") from None
    if checkpoint.resumed_at_epoch:
        say(f"resumed at epoch {checkpoint.resumed_at_epoch} of {settings.recipe.epochs} from {checkpoint.path}")
    if rank == 0:
        _write_bundle(folder, built, model, result, settings, training, seed, world, name)
        last = result.history[-1]
        say(f"done: {name}, validation top-1 {last.top1:.4f} (top-5 {last.top5:.4f}) after {len(result.history)} "
            f"epochs, {last.img_per_s:,.0f} img/s, {time.perf_counter() - t0:.0f} s this run; bundle {folder}")
    if world > 1:
        torch.distributed.barrier()
    return folder, model, result


def train_best(run_dir: str, top: int, flags: dict, *, seed: int = 0, test: bool = False, progress: bool = True,
               log=print) -> Path:
    """Retrain the ``top`` best feasible trials of a finished search (``--from-run RUN --top K``) with the run's
    data and recipe (flags override them: the full schedule's ``--epochs``), each into ``RUN/train/trialN``, and
    write ``RUN/leaderboard.csv``: validation accuracy in the search and retrained, params, MACs, predicted latency,
    and test accuracy only with ``test``."""
    import csv

    from optuna.trial import TrialState

    study = _run_study(run_dir)
    if len(study.directions) != 1:
        raise _problem(f"--top: {run_dir} holds a Pareto study; retrain its front's specs one by one (composer train "
                       "SPEC --from-run RUN)")
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("feasible") and "spec" in t.user_attrs and "reused_from" not in t.user_attrs]
    if not done:
        raise _problem(f"--top: {run_dir} has no complete feasible trial to retrain")
    if test:   # before any training: a data set without a test split cannot fill the column
        from .data import open_source

        recorded, _ = run_settings_of(run_dir)
        data = flags.get("data") or recorded.get("data")
        try:
            has_test = open_source(data).open_test is not None
        except ValueError as exc:
            raise _problem(str(exc)) from None
        if not has_test:
            raise _problem(f"--test: {data} has no test split (fashion-mnist, mnist, cifar and ImageFolders with "
                           "train/ and val/ have one)")
    sign = 1 if study.direction.name == "MAXIMIZE" else -1
    best = sorted(done, key=lambda t: -sign * t.value)[:top]
    rows = []
    for rank, trial in enumerate(best, 1):
        out = Path(run_dir) / "train" / f"trial{trial.number}"
        log(f"[{rank}/{len(best)}] trial {trial.number} (search value {trial.value:.4f}) -> {out}")
        folder, _, result = train_command(dict(trial.user_attrs["spec"]), flags, out=str(out), seed=seed,
                                          from_run=run_dir, progress=progress, log=log)
        row = {"rank": rank, "trial": trial.number, "layout": trial.user_attrs["spec"].get("layout"),
               "params": trial.user_attrs.get("params"), "macs": trial.user_attrs.get("macs"),
               "latency_ms_predicted": trial.user_attrs.get("latency_ms_predicted"),
               "search_val_top1": trial.value, "val_top1": result.history[-1].top1,
               "epochs": len(result.history), "bundle": str(folder)}
        if test:
            row["test_top1"] = eval_command(str(folder), split="test", log=lambda *a: None)["top1"]
        rows.append(row)
    path = Path(run_dir) / "leaderboard.csv"
    keys = list(rows[0])
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    from ..spec.units import GMACS_HEADER, gmacs_cell, params_cell

    test_head = f"{'test':>8}" if test else ""
    log(f"{'rank':>4} {'trial':>5} {'search val':>10} {'val':>7}{test_head} {'params':>12} {GMACS_HEADER:>7}  layout")
    for r in sorted(rows, key=lambda r: -r["val_top1"]):
        test_cell = f"{r['test_top1']:>8.4f}" if test else ""
        log(f"{r['rank']:>4} {r['trial']:>5} {r['search_val_top1']:>10.4f} {r['val_top1']:>7.4f}{test_cell} "
            f"{params_cell(r['params']):>12} {gmacs_cell(r['macs']):>7}  {r['layout']}")
    log(f"leaderboard: {path}")
    return path


def _write_bundle(folder: Path, spec, model, result, settings: TrainSettings, training, seed: int, world: int,
                  name: str) -> None:
    from safetensors.torch import save_file

    from ..spec import dump_spec

    (folder / "spec.yaml").write_text(dump_spec(spec))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", "composer_spec": name})
    ema = result.ema_state
    if ema is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()}, str(folder / EMA_WEIGHTS),
                  metadata={"format": "pt"})
    source = training.source
    data_info = {"data": settings.data, "classes": source.classes, "mean": list(source.mean),
                 "std": list(source.std), "train_images": len(training.splits.train),
                 "val_images": len(training.splits.val), "val_fraction": settings.val_fraction,
                 "subset": settings.subset, "input_size": training.size, "in_chans": spec.in_chans,
                 "test_split": source.test_name}
    info = {"name": name, "seed": seed, "world_size": world, "global_batch": settings.recipe.train_batch * world,
            "data": data_info, "settings": settings.model_copy(update={"train_size": training.size}).recorded(),
            "final": {"epoch": result.history[-1].epoch, "val_top1": result.history[-1].top1,
                      "val_top5": result.history[-1].top5},
            "versions": _versions(), "command": " ".join(sys.argv)}
    (folder / "train.yaml").write_text(yaml.safe_dump(info, sort_keys=False))
    write_metrics(folder / "metrics.csv", result.history)
    plot_curves(folder / "curves.png", result.history, f"{name} on {settings.data}")
    write_json(folder / "config.json", timm_config(spec, data_info))
    (folder / "checkpoint.pt").unlink(missing_ok=True)


def eval_command(folder: str, *, data: str | None = None, split: str = "val", device: str | None = None,
                 batch: int | None = None, ema: bool = False, out: str | None = None, log=print) -> dict:
    """Evaluate a bundle on its validation split (as training measured it) or on a test split."""

    from ..composed import compose
    from .data import make_loader, open_source, split_indices
    from .loop import evaluate, resolve_device

    try:
        bundle = read_bundle(folder)
    except BundleError as exc:
        raise _problem(str(exc)) from None
    info = bundle.train
    recorded = info.get("settings", {})
    data = data or recorded.get("data")
    try:
        dev = resolve_device(device or "cpu")
        source = open_source(data)
    except ValueError as exc:
        raise _problem(str(exc)) from None
    if split == "test":
        if source.open_test is None:
            raise _problem(f"--split test: {source.name} has no test split (use --split val, or a data set with "
                           "one: fashion-mnist, mnist, cifar, an ImageFolder with train/ and val/)")
        try:
            part, indices = source.open_test(), None
        except ValueError as exc:
            raise _problem(str(exc)) from None
        what = f"the test split of {source.name} ({len(part)} images)"
    else:
        splits = split_indices(source.train.targets, recorded.get("val_fraction", 0.1), info.get("seed", 0),
                               recorded.get("subset"))
        part, indices = source.train, splits.val
        what = f"the validation split held out of {source.name}'s training split ({len(indices)} images)"
    weights = bundle.folder / (EMA_WEIGHTS if ema else WEIGHTS)
    if ema and not weights.is_file():
        raise _problem(f"{bundle.folder}: no EMA weights ({EMA_WEIGHTS}); the run trained without --ema")
    try:
        model = compose(bundle.spec, weights=weights)
    except BundleError as exc:
        raise _problem(str(exc)) from None
    model.to(dev)
    spec = bundle.spec
    batch = batch or 2 * recorded.get("recipe", {}).get("train_batch", 128)
    loader = make_loader(source, part, indices, size=spec.input_size, batch=batch, train=False, seed=0, workers=None)
    from .data import BatchPrep

    prep = BatchPrep(source, spec.input_size, spec.in_chans, dev, "none")
    t0 = time.perf_counter()
    amp = recorded.get("amp", "off")   # as training validated (bf16 runs on a CPU too; fp16 does not)
    if amp == "fp16" and dev.type == "cpu":
        amp = "off"
    result = evaluate(model, loader, prep, amp, num_classes=spec.num_classes, confusion=True)
    seconds = time.perf_counter() - t0
    matrix = result["confusion"]
    per_class = (matrix.diag().double() / matrix.sum(1).clamp(min=1).double()).tolist()
    names = source.classes or [str(i) for i in range(spec.num_classes)]
    log(f"{bundle.folder}{' (EMA weights)' if ema else ''} on {what}:")
    log(f"top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  loss {result['loss']:.4f}  "
        f"{result['images'] / max(seconds, 1e-9):,.0f} img/s on {dev}")
    width = max(len(n) for n in names)
    for n, acc in zip(names, per_class):
        log(f"  {n:<{width}}  {acc:.4f}")
    target = Path(out) if out else bundle.folder / f"confusion_{split}.png"
    _plot_confusion(target, matrix, names, f"{spec.name or bundle.folder.name}: {split} top-1 {result['top1']:.4f}")
    log(f"confusion matrix: {target}")
    return {"top1": result["top1"], "top5": result["top5"], "per_class": dict(zip(names, per_class)),
            "images": result["images"], "img_per_s": result["images"] / max(seconds, 1e-9), "confusion": target}


def _plot_confusion(path: Path, matrix, names: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["distributed_init", "eval_command", "train_command"]
