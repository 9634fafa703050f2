"""What a search leaves behind: best spec(s) as plain spec YAML, trials.csv, a PNG plot, a summary table."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..spec import dump_spec, load_spec
from ..spec.units import GMACS_HEADER, gmacs_cell, params_cell, value_cell
from .results import Settings, best_trial, maximize, pareto_front, trials_table


def _write_spec(trial, path: Path, settings: Settings, space) -> Path:
    spec = load_spec(trial.user_attrs["spec"])
    values = ", ".join(f"{n} {v:.6g}" for n, v in zip(settings.objectives, trial.values))
    header = (f"# found by `composer search {space.file or space.name}` (trial {trial.number}: {values}; "
              f"{trial.user_attrs['macs']:,} MACs, {trial.user_attrs['params']:,} params; "
              f"budget {settings.budget_text()})\n")
    path.write_text(header + dump_spec(spec))
    return path


def write_csv(study: optuna.Study, path: Path) -> None:
    rows = trials_table(study)
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def plot(study: optuna.Study, settings: Settings, path: Path, front) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    feasible = [t for t in done if t.user_attrs.get("feasible")]
    if len(settings.objectives) == 1:
        name = settings.objectives[0]
        sign = 1 if maximize(name) else -1
        ax.scatter([t.number for t in feasible], [t.value for t in feasible], s=16, label="feasible trial")
        xs, ys, best = [], [], None
        for t in sorted(feasible, key=lambda t: t.number):
            best = t.value if best is None or sign * t.value > sign * best else best
            xs.append(t.number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="C1", label="best so far")
        bad = [t.number for t in done if not t.user_attrs.get("feasible")]
        if bad and feasible:
            low = min(t.value for t in feasible)
            ax.scatter(bad, [low] * len(bad), marker="x", color="C3", s=16, label="over budget / invalid (not built)")
        ax.set_xlabel("trial")
        ax.set_ylabel(name)
        ax.set_title(f"{study.study_name}: history")
    else:
        a, b = settings.objectives[:2]
        ax.scatter([t.values[1] for t in feasible], [t.values[0] for t in feasible], s=16, alpha=0.6,
                   label="feasible trial")
        pts = sorted((t.values[1], t.values[0]) for t in front)
        if pts:
            ax.plot(*zip(*pts), "o-", color="C1", label="Pareto front")
        ax.set_xlabel(b + (" (G)" if b == "macs" else " (M)" if b == "params" else " (ms)" if b == "latency" else ""))
        ax.set_ylabel(a)
        ax.set_title(f"{study.study_name}: Pareto front")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _row(t, settings) -> str:
    spec = t.user_attrs.get("spec", {})
    layout = spec.get("layout")
    layout = layout if isinstance(layout, str) else "-".join(map(str, layout or []))
    values = " ".join(f"{value_cell(v):>10}" for v in t.values)
    return (f"{t.number:>5} {values} {gmacs_cell(t.user_attrs['macs']):>7} {params_cell(t.user_attrs['params']):>11} "
            f"{gmacs_cell(t.user_attrs['slack_macs'], sign=True):>7}  {layout:<24} {spec.get('depths')}")


def _keep_earlier(path: Path, rows: int) -> None:
    """An earlier run's results file with more trials than the study now holds is kept as a timestamped copy
    instead of being overwritten (the study's storage was replaced, or another study wrote here)."""
    if not path.is_file():
        return
    try:
        with open(path, newline="") as handle:
            earlier = max(sum(1 for _ in handle) - 1, 0)
    except OSError:
        return
    if earlier > rows:
        import time

        path.rename(path.with_name(f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}"))


def _failed(trials, counts) -> str:
    """``3 failed``, or ``3 failed (2 in the objective: ValueError: ...)`` when a user objective raised."""
    raised = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("objective_error")]
    text = f"{counts[TrialState.FAIL]} failed"
    if raised:
        text += f" ({len(raised)} in the objective; trial {raised[0].number}: {raised[0].user_attrs.get('error')})"
    return text


def write_report(study: optuna.Study, settings: Settings, run_dir: Path, space) -> tuple[list[Path], str]:
    run_dir = Path(run_dir)
    _keep_earlier(run_dir / "trials.csv", len(study.get_trials(deepcopy=False)))
    write_csv(study, run_dir / "trials.csv")
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(1 for t in trials if t.state == s) for s in TrialState}
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    feasible = [t for t in finished if t.user_attrs.get("feasible")]
    built = [t for t in trials if t.user_attrs.get("built")]
    over = [t for t in built if settings.macs_outside(t.user_attrs.get("macs", 0))
            or (settings.budget_params and t.user_attrs.get("params", 0) > settings.budget_params)]
    specs: list[Path] = []
    if len(settings.objectives) == 1:
        best = best_trial(study, settings)
        ranked = sorted((t for t in feasible if t.state == TrialState.COMPLETE), key=lambda t: t.value,
                        reverse=maximize(settings.objectives[0]))
        shown = ranked[:5]
        if best is not None:
            specs.append(_write_spec(best, run_dir / "best.yaml", settings, space))
        front = []
    else:
        front = pareto_front(study, settings)
        folder = run_dir / "pareto"
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.yaml"):
            old.unlink()
        for k, t in enumerate(front):
            specs.append(_write_spec(t, folder / f"{k:02d}_trial{t.number}.yaml", settings, space))
        shown = front[:10]
    if feasible:
        plot(study, settings, run_dir / ("pareto.png" if front else "history.png"), front)
    head = " ".join(f"{n:>10}" for n in settings.objectives)
    lines = [f"study {study.study_name}: {len(finished)} finished trials ({counts[TrialState.COMPLETE]} complete, "
             f"{counts[TrialState.PRUNED]} pruned), {_failed(trials, counts)}, "
             f"{counts[TrialState.RUNNING]} running; {len(feasible)} feasible, {len(built)} models built, "
             f"{len(over)} over-budget models built",
             f"{'trial':>5} {head} {GMACS_HEADER:>7} {'params':>11} {'slack':>7}  {'layout':<24} depths"]
    lines += [_row(t, settings) for t in shown]
    if specs:
        lines.append(f"{'best spec' if len(specs) == 1 else 'Pareto specs'}: "
                     f"{', '.join(str(p) for p in specs[:3])}{' ...' if len(specs) > 3 else ''}")
    lines.append(f"all trials: {run_dir / 'trials.csv'}; plot: "
                 f"{run_dir / ('pareto.png' if front else 'history.png') if feasible else '(none: no feasible trial)'}")
    return specs, "\n".join(lines)


__all__ = ["plot", "write_csv", "write_report"]
