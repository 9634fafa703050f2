"""``composer sweep SPACE``: every combination of a space's choices, one row per architecture: a paper's table.

The grid is enumerated through the space's own sampling (``SearchSpace.sample``), so conditional choices stay
conditional: ``mixers.Hpx.kernel_size`` is varied only in the combinations whose layout uses Hpx, and never
multiplies the others. Every point is enqueued into an Optuna study and run by the search loop
(composer.search.study), so a sweep is resumable exactly like a search (rerun the command: finished points are
kept) and can be shared by several workers. Without ``--objective`` (or with ``macs`` / ``params``) nothing is
built: params, MACs and FFT MACs come from the Plan. ``table.csv`` and ``table.md`` in the run directory hold
one row per point, in grid order.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..spec import SpecError
from ..spec.errors import Problem
from ..spec.units import FFT_GMACS_HEADER, GMACS_HEADER, gmacs_cell, params_cell, value_cell
from .space import Domain, SearchSpace, load_space

MAX_POINTS = 10_000
NO_BUDGET = 10 ** 17   # a sweep lists every point; a budget in the space still marks the points over it


class _Branch(Exception):
    def __init__(self, name: str, options: list):
        self.name, self.options = name, options


def _options(name: str, domain: Domain) -> list:
    if domain.options is not None:
        return list(domain.options)
    if domain.is_int:
        return list(range(int(domain.low), int(domain.high) + 1, int(domain.step or 1)))
    if domain.step:
        count = int(round((domain.high - domain.low) / domain.step))
        return [domain.low + k * domain.step for k in range(count + 1)]
    raise ValueError(f"choice {name}: a float range needs a step to be swept (low, high, step)")


def grid(space: SearchSpace) -> list[dict[str, Any]]:
    """The drawn values (Optuna parameter name -> value) of every distinct point, in order."""
    points: list[dict[str, Any]] = []
    seen: set[str] = set()

    def explore(fixed: dict[str, Any]) -> None:
        def suggest(name: str, domain: Domain) -> Any:
            if name in fixed:
                return fixed[name]
            raise _Branch(name, _options(name, domain))

        try:
            _, drawn = space.sample(suggest)
        except _Branch as branch:
            for value in branch.options:
                explore({**fixed, branch.name: value})
                if len(points) > MAX_POINTS:
                    return
            return
        key = json.dumps(drawn, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            points.append(drawn)

    explore({})
    return points


def _at(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return value_cell(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def write_tables(study, space: SearchSpace, objectives: list[str], run_dir: Path) -> tuple[Path, Path, list[dict]]:
    evaluated = [n for n in objectives if n not in ("macs", "params")]
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        spec = t.user_attrs.get("spec", {})
        row: dict[str, Any] = {"trial": t.number, "name": spec.get("name")}
        row.update({c.key: _at(spec, c.key) for c in space.choices})
        row.update(params=t.user_attrs.get("params"), macs=t.user_attrs.get("macs"),
                   fft_macs=t.user_attrs.get("fft_macs"))
        for name in evaluated:
            index = objectives.index(name)
            row[name] = t.values[index] if t.values is not None and t.user_attrs.get("feasible") else None
        if "latency_ms_predicted" in t.user_attrs:
            row["latency_ms_predicted"] = t.user_attrs["latency_ms_predicted"]
        below = space.budget_min_macs is not None and (t.user_attrs.get("macs") or 0) < space.budget_min_macs
        row["state"] = t.state.name if t.user_attrs.get("feasible", True) else \
            "under the MAC floor" if below else "over budget"
        if t.user_attrs.get("error"):
            row["state"] = f"invalid: {t.user_attrs['error']}"
        rows.append(row)
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = run_dir / "table.csv", run_dir / "table.md"
    keys = list(rows[0]) if rows else ["trial"]
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in rows)
    no_fft = all(not r.get("fft_macs") for r in rows)  # a column of zeros says nothing: shown only where FFTs are
    shown = [k for k in keys if k not in ("trial", "name") and not (k == "fft_macs" and no_fft)]
    headers = {"macs": GMACS_HEADER, "fft_macs": FFT_GMACS_HEADER}
    lines = [f"| {' | '.join(headers.get(k, k) for k in shown)} |",
             "|" + "|".join("---:" if k in ("params", "macs", "fft_macs") else "---" for k in shown) + "|"]
    for r in rows:
        cells = []
        for k in shown:
            v = r.get(k)
            if k == "params" and v is not None:
                cells.append(params_cell(v))
            elif k in ("macs", "fft_macs") and v is not None:
                cells.append(gmacs_cell(v))
            else:
                cells.append(_cell(v))
        lines.append(f"| {' | '.join(cells)} |")
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path, rows


def sweep(space, *, objective: str | None = None, run_dir: str | None = None, storage: str | None = None,
          study_name: str | None = None, seed: int = 0, progress: bool = True, log=print, **search) -> tuple:
    """Run every point of ``space`` (resumably) and write table.csv / table.md; returns (SearchResult, rows)."""
    from .study import run

    space = load_space(space)
    try:
        points = grid(space)
    except ValueError as exc:
        raise SpecError(Problem(str(exc), ("choices",), space.file)) from None
    if len(points) > MAX_POINTS:
        raise SpecError(Problem(f"the grid has more than {MAX_POINTS:,} points; sweep fewer choices (or search "
                                "them: composer search)", ("choices",), space.file))
    objective = objective or "macs"
    run_dir = run_dir or str(Path("runs") / f"{space.name}-sweep")
    log(f"sweep {space.name}: {len(points)} points ({', '.join(c.key for c in space.choices)})")
    budget = search.pop("budget", None) or space.budget_macs or NO_BUDGET
    search.setdefault("pruner", "none")   # a table has every point trained to the end
    result = run(space, budget=budget, trials=len(points), objective=objective, seed=seed, storage=storage,
                 run_dir=run_dir, study_name=study_name or f"{space.name}-sweep", progress=progress, log=log,
                 enqueue=points, report=False, **search)
    csv_path, md_path, rows = write_tables(result.study, space, result.settings.objectives, Path(run_dir))
    log(md_path.read_text().rstrip())
    log(f"table: {md_path}, {csv_path}")
    return result, rows


__all__ = ["grid", "sweep", "write_tables"]
