"""``composer proxy-check SPACE``: do the training-free objectives rank this space's architectures the way
training on the user's data does?

N seeded random samples of the space (valid, within the budget if one is given, no two alike) are scored with
every proxy exactly as ``composer search`` scores a trial (naswot, gradnorm and zico on the search's random
minibatch at ``--proxy-size``; params and MACs from the Plan; the latency predicted on this CPU with
``--latency``), then trained for ``--epochs`` on ``--data`` at the training resolution, as ``--objective train``
trains them. Kendall's tau and Spearman's rho of each proxy against the trained accuracy say which objective to
search with on this data. Results: ``samples.csv`` (one row per architecture, written as each finishes: a rerun
of the same command continues where a killed one stopped), ``correlations.csv`` and ``proxy_check.png``.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..spec import SpecError
from ..spec.errors import Problem
from ..spec.units import gmacs_cell, params_cell
from .space import SearchSpace, load_space

PROXIES = ("naswot", "gradnorm", "zico", "params", "macs", "latency_ms")
_TRIES_PER_SAMPLE = 200


@dataclass
class ProxyCheck:
    rows: list[dict]
    correlations: list[dict]
    run_dir: Path
    seconds: float
    files: list[Path] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{'proxy':<12}{'kendall tau':>12}{'spearman rho':>14}{'samples':>9}"]
        for c in self.correlations:
            lines.append(f"{c['proxy']:<12}{_fmt(c['kendall_tau']):>12}{_fmt(c['spearman_rho']):>14}"
                         f"{c['samples']:>9}")
        return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.3f}"


def draw_samples(space: SearchSpace, n: int, seed: int, budget_macs: int | None,
                 budget_params: int | None, min_macs: int | None = None) -> list[tuple[dict, dict]]:
    """``n`` distinct valid samples (data, drawn) within the budgets (and at or above the MAC floor ``min_macs``),
    from ``random.Random(seed)``."""
    rng = random.Random(seed)
    out, seen = [], set()
    for _ in range(n * _TRIES_PER_SAMPLE):
        if len(out) == n:
            break
        data, drawn = space.sample_random(rng)
        key = json.dumps(drawn, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        check = space.check(data)
        if check.error is not None:
            continue
        if budget_macs and check.estimate.macs > budget_macs:
            continue
        if min_macs and check.estimate.macs < min_macs:
            continue
        if budget_params and check.estimate.params > budget_params:
            continue
        out.append((check.data, drawn))
    return out


def _correlations(rows: list[dict], proxies: list[str]) -> list[dict]:
    from scipy import stats

    out = []
    for name in proxies:
        pairs = [(r[name], r["accuracy"]) for r in rows
                 if r.get(name) is not None and r.get("accuracy") is not None and math.isfinite(float(r[name]))]
        tau = rho = float("nan")
        if len(pairs) >= 3 and len({p for p, _ in pairs}) > 1 and len({a for _, a in pairs}) > 1:
            xs, ys = zip(*pairs)
            tau = float(stats.kendalltau(xs, ys).statistic)
            rho = float(stats.spearmanr(xs, ys).statistic)
        out.append({"proxy": name, "kendall_tau": tau, "spearman_rho": rho, "samples": len(pairs)})
    return out


def _plot(rows: list[dict], correlations: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in correlations if c["samples"]]
    cols = 3
    fig, axes = plt.subplots(math.ceil(len(shown) / cols), cols, figsize=(4 * cols, 3.2 * math.ceil(len(shown) / cols)),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, c in zip(axes.flat, shown):
        ax.set_visible(True)
        xs = [r[c["proxy"]] for r in rows if r.get(c["proxy"]) is not None]
        ys = [r["accuracy"] for r in rows if r.get(c["proxy"]) is not None]
        ax.scatter(xs, ys, s=14)
        ax.set_xlabel(c["proxy"])
        ax.set_ylabel("accuracy")
        ax.set_title(f"tau {_fmt(c['kendall_tau'])}, rho {_fmt(c['spearman_rho'])}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _read_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = {}
        for row in csv.DictReader(handle):
            for key in (*PROXIES, "accuracy", "seconds", "sample"):
                if row.get(key) not in (None, ""):
                    row[key] = float(row[key])
                else:
                    row[key] = None
            rows[row["drawn"]] = row
        return rows


def proxy_check(space, *, train=None, data: str | None = None, samples: int = 20, epochs: int | None = None,
                seed: int = 0, train_size: int | None = None, proxy_size: int = 64, proxy_batch: int = 16,
                budget=None, max_params=None, min_macs=None, latency: bool = False, run_dir: str | None = None,
                log=print) -> ProxyCheck:
    """Score and train ``samples`` random architectures of ``space``; see the module docstring. ``train``: the
    training settings and recipe (as ``composer search`` takes them); ``data``, ``epochs`` and ``train_size`` are
    shorthands for its keys."""
    import torch

    from ..composed import compose
    from ..train.trial import prepare, train_spec
    from .objectives import proxy_scores
    from .study import _count, _mac_floor, _train_settings, prepare_run_dir

    t_start = time.perf_counter()
    space = load_space(space)
    for flag, value in (("--samples", samples), ("--proxy-size", proxy_size), ("--proxy-batch", proxy_batch)):
        if value < 1:
            raise SpecError(Problem(f"{flag} must be at least 1, got {value}", ()))
    macs = _count(budget, "--budget") if budget is not None else space.budget_macs
    params = _count(max_params, "--max-params") if max_params is not None else space.budget_params
    floor = _mac_floor(min_macs, space, macs, budget)
    settings = _train_settings(space, train, data=data, epochs=epochs, train_size=train_size)
    try:
        training = prepare(settings, space.base, seed)
    except ValueError as exc:
        raise SpecError(Problem(str(exc), ())) from None
    size, epochs, data = training.size, settings.recipe.epochs, settings.data
    space.base_data["num_classes"] = training.source.num_classes
    space.base_data["in_chans"] = training.source.in_chans
    run_path = prepare_run_dir(run_dir or Path("runs") / f"{space.name}-proxy-check")
    drawn_samples = draw_samples(space, samples, seed, macs, params, floor)
    if len(drawn_samples) < samples:
        log(f"note: only {len(drawn_samples)} distinct valid samples within the budget were found")
    predictor = None
    if latency:
        from ..latency import predictor as make_predictor

        predictor = make_predictor("cpu", 1)
    csv_path = run_path / "samples.csv"
    done = _read_rows(csv_path)
    keys = ["sample", "drawn", "name", *PROXIES, "accuracy", "train_size", "proxy_size", "seconds"]
    log(f"proxy-check {space.name}: {len(drawn_samples)} samples, {epochs} epochs each on {data} at {size} px, "
        f"accuracy on {training.split_name} "
        f"(proxies at {proxy_size} px, batch {proxy_batch}, seed {seed}); {len(done)} done before; run dir {run_path}")
    rows = []
    new_file = not csv_path.is_file()
    with csv_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        for i, (sample, drawn) in enumerate(drawn_samples):
            key = json.dumps(drawn, sort_keys=True, default=str)
            if key in done:
                rows.append(done[key])
                continue
            t0 = time.perf_counter()
            check = space.check(sample)
            spec = check.spec
            row = {"sample": i, "drawn": key, "name": f"{space.name}_s{i}", "params": check.estimate.params,
                   "macs": check.estimate.macs, "train_size": None, "proxy_size": None}
            # the proxies exactly as a search trial computes them (Searcher._evaluate)
            scored, at = space.at_size(dict(sample, drop_path_rate=0.0), min(proxy_size, spec.input_size))
            torch.manual_seed(seed)
            scores = proxy_scores(compose(scored), at, proxy_batch, spec.in_chans, spec.num_classes, seed, zico=True,
                                  device=settings.device)
            row.update(naswot=scores["naswot"], gradnorm=scores["gradnorm"], zico=scores["zico"], proxy_size=at)
            if predictor is not None:
                row["latency_ms"] = predictor.predict(spec).ms
            trained, at = space.at_size(sample, size)
            torch.manual_seed(seed)
            row["accuracy"] = train_spec(trained, training, size=at, desc=f"sample {i + 1}").accuracy
            row["train_size"] = at
            row["seconds"] = round(time.perf_counter() - t0, 2)
            writer.writerow(row)
            handle.flush()
            rows.append(row)
            log(f"  sample {i + 1}/{len(drawn_samples)}: accuracy {row['accuracy']:.3f}, naswot {row['naswot']:.1f}, "
                f"zico {row['zico']:.1f}, {params_cell(row['params'])} params, {gmacs_cell(row['macs'])} GMACs "
                f"({row['seconds']:.1f} s)")
    proxies = [p for p in PROXIES if p != "latency_ms" or latency]
    correlations = _correlations(rows, proxies)
    corr_path = run_path / "correlations.csv"
    with corr_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["proxy", "kendall_tau", "spearman_rho", "samples"])
        writer.writeheader()
        writer.writerows(correlations)
    plot_path = run_path / "proxy_check.png"
    _plot(rows, correlations, plot_path, f"{space.name}: {len(rows)} samples, {epochs} epochs on {data} at {size} px")
    result = ProxyCheck(rows, correlations, run_path, time.perf_counter() - t_start, [csv_path, corr_path, plot_path])
    log(result.table())
    best = max((c for c in correlations if not math.isnan(c["kendall_tau"])), key=lambda c: c["kendall_tau"],
               default=None)
    if best is not None:
        log(f"highest Kendall tau: {best['proxy']} ({best['kendall_tau']:+.3f}); files: "
            f"{', '.join(str(p) for p in result.files)}")
    return result


__all__ = ["PROXIES", "ProxyCheck", "draw_samples", "proxy_check"]
