"""How well the per-part latency table predicts whole models, on this machine.

    python benchmarks/latency_predictor.py [--samples 30] [--batch-sizes 1,8] [--threads 2] [--presets]
                                           [--remeasure] [--flush-denormal] [--keep-freed-memory]
                                           [--busy-then-quiet PRESET]

For every shipped search space, ``--samples`` seeded random valid samples (Optuna's RandomSampler, seed 0) are
predicted from a table built from empty in a temporary folder (composer.latency) and measured end to end
(``composer.latency.measure``: the whole built model timed as the parts are, the fastest of 5 runs at batch 1 and
of 3 at batch 8, in 2-5 sessions until two agree) at each batch size. It
prints, per space and batch size: the share of samples predicted within ±10% of the measurement, the median and
the 90th percentile of |error|, the time the table took to build from empty (and its rows), and Kendall's tau of
the measured latency against the Plan's MACs and against the prediction (how well each ranks the samples:
the reason a latency budget is worth having), and the drift: the first sample's parts timed again after the
measurements, against their first timing (how much the machine moved during the run); with ``--remeasure``, every
sample measured again at the end, against its first measurement (how well the machine repeats itself: the
ceiling of any prediction from a table timed once). ``--presets`` prints a
markdown table of every preset at batch 1: MACs, predicted and measured latency, img/s (docs/latency.md).

``--busy-then-quiet PRESET`` (issue 33): PRESET's table built from empty while eight processes each add 1.0 to a
64 MB numpy array in a loop, then, with the load gone, the stale prediction against a measurement, and what the
table's self-check makes of it (parts re-timed, the final prediction against the measurement, whether it agrees).

Machines here are noisy: the figures are only as good as the load allows; the script prints the load average
at its start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b (ties counted in neither direction)."""
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else 0.0


def samples(space_name: str, n: int, seed: int = 0) -> list[dict]:
    import optuna

    from composer.search.space import load_space, optuna_suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out: list[dict] = []
    for _ in range(50 * n):
        if len(out) == n:
            break
        trial = study.ask()
        data, _ = space.sample(optuna_suggest(trial))
        check = space.check(data)
        study.tell(trial, 0.0)
        if check.error is None:
            data["name"] = f"{space.name}_{len(out)}"
            out.append(check.data)
    return out


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


MEMORY_LOAD = "import numpy as np\na = np.zeros(8 * 2**20)\nwhile True:\n    a += 1.0\n"  # 64 MB, memory-bound


def busy_then_quiet(preset: str, threads: int) -> None:
    """A table timed under a memory-bound load, then predicted, measured and self-checked with the load gone."""
    from composer.latency import Predictor

    folder = Path(tempfile.mkdtemp(prefix="composer-latency-busy-"))
    load_processes = [subprocess.Popen([sys.executable, "-c", MEMORY_LOAD]) for _ in range(8)]
    try:
        t0 = time.perf_counter()
        busy = Predictor(threads=threads, folder=folder).predict(preset)
        build = time.perf_counter() - t0
    finally:
        for process in load_processes:
            process.kill()
            process.wait()
    print(f"\nbusy then quiet, {preset}: table built under eight memory-bound processes in {build:.1f} s, "
          f"{len(busy.parts)} parts, {len(busy.suspect)} distinct suspect; load average now {load()}")
    predictor = Predictor(threads=threads, folder=folder)
    check = predictor.self_check(preset, force=True)
    print(f"  stale prediction {check.first_ms:.1f} ms, measured {check.measured:.1f} ms: "
          f"{check.first_ms / check.measured:.2f}x; the measurement's conditions: {check.conditions.describe()}")
    print(f"  {check.describe()}")
    print(f"  final prediction {check.prediction.ms:.1f} ms: {check.prediction.ms / check.measured:.2f}x the "
          f"measured, {len(check.prediction.suspect)} parts still suspect", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--spaces", default="metaformer_s18,transnext_micro")
    ap.add_argument("--presets", action="store_true", help="also the table of presets at batch 1")
    ap.add_argument("--remeasure", action="store_true", help="measure every sample again at the end: how well "
                                                            "the machine repeats its own measurements")
    ap.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) for the run "
                                                                 "(composer latency --flush-denormal)")
    ap.add_argument("--keep-freed-memory", action="store_true", help="glibc's malloc keeps freed memory for the "
                                                                     "run (composer latency --keep-freed-memory)")
    ap.add_argument("--dump", type=Path, default=None, help="write every sample's figures to this JSON-lines file "
                                                             "(space, batch, sample, MACs, predicted, measured ms)")
    ap.add_argument("--busy-then-quiet", metavar="PRESET", default=None,
                    help="PRESET's table timed under a memory-bound load, then self-checked with the load gone")
    args = ap.parse_args()

    from composer.latency import Predictor, keep_freed_memory, measure
    from composer.plan import estimate

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit("--keep-freed-memory: malloc here is not glibc's")
    settings = ", denormals flushed" if args.flush_denormal else ""
    settings += ", malloc keeps freed memory" if args.keep_freed_memory else ""
    print(f"torch {torch.__version__}, {threads} threads{settings}; load average at start: {load()}")
    if args.busy_then_quiet:
        busy_then_quiet(args.busy_then_quiet, threads)
    folder = Path(tempfile.mkdtemp(prefix="composer-latency-"))
    for space in filter(None, args.spaces.split(",")):  # --spaces "": the presets only
        specs = samples(space, args.samples)
        macs = [estimate(s).macs for s in specs]
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            repeats = 5 if batch == 1 else 3  # a batch-8 forward of an S18 model takes over a second on one core
            predictor = Predictor(batch_size=batch, threads=threads, folder=folder, repeats=repeats)
            t0 = time.perf_counter()
            predicted = [predictor.predict(s).ms for s in specs]
            build_seconds = time.perf_counter() - t0
            measured = [measure(s, batch_size=batch, threads=threads, repeats=repeats) for s in specs]
            errors = [p / m - 1 for p, m in zip(predicted, measured)]
            within = sum(abs(e) <= 0.10 for e in errors) / len(errors)
            absolute = sorted(abs(e) for e in errors)
            print(f"\n{space}, batch {batch}: {len(specs)} samples, measured {min(measured):.1f}-"
                  f"{max(measured):.1f} ms")
            print(f"  within ±10%: {within:.0%}; median |error| {statistics.median(absolute):.1%}, "
                  f"90th percentile {absolute[int(0.9 * (len(absolute) - 1))]:.1%}; mean error "
                  f"{statistics.mean(errors):+.1%}")
            print(f"  table from empty: {build_seconds:.1f} s, {len(predictor.table)} parts "
                  f"({predictor.measured} timed for this space)")
            print(f"  Kendall tau of measured latency: vs MACs {kendall_tau(measured, macs):.3f}, "
                  f"vs prediction {kendall_tau(measured, predicted):.3f}")
            # How much the machine itself moved while the samples were measured: sample 0's parts timed again
            # into an empty table, after all the measurements, against their first timing.
            again = Predictor(batch_size=batch, threads=threads, repeats=repeats,
                              folder=Path(tempfile.mkdtemp(prefix="composer-latency-again-"))).predict(specs[0]).ms
            print(f"  drift: sample 0's parts timed again at the end: {again / predicted[0]:.3f}x their first "
                  f"timing; load average now {load()}", flush=True)
            if args.remeasure:
                # The ceiling of any prediction from a table timed once: the same models measured again, minutes
                # later, by the same code. The prediction against the mean of the two measurements is also
                # printed (one measurement's own noise halved).
                second = [measure(s, batch_size=batch, threads=threads, repeats=repeats) for s in specs]
                diffs = sorted(abs(b / a - 1) for a, b in zip(measured, second))
                both = [p / ((a + b) / 2) - 1 for p, a, b in zip(predicted, measured, second)]
                # the faster of the two: measure() with twice the sessions (noise only ever adds time)
                faster = [p / min(a, b) - 1 for p, a, b in zip(predicted, measured, second)]
                print(f"  measured again: {sum(d <= 0.10 for d in diffs) / len(diffs):.0%} within ±10% of the first "
                      f"measurement, median |difference| {statistics.median(diffs):.1%}, mean ratio "
                      f"{statistics.mean(b / a for a, b in zip(measured, second)):.3f}; the prediction within ±10% "
                      f"of the mean of both: {sum(abs(e) <= 0.10 for e in both) / len(both):.0%} (mean error "
                      f"{statistics.mean(both):+.1%}), of the faster of both: "
                      f"{sum(abs(e) <= 0.10 for e in faster) / len(faster):.0%} (mean error "
                      f"{statistics.mean(faster):+.1%}); load average now {load()}", flush=True)
            if args.dump:
                with args.dump.open("a") as handle:
                    for i, (spec, m_, p_, ms) in enumerate(zip(specs, macs, predicted, measured)):
                        row = {"space": space, "batch": batch, "sample": i, "macs": m_, "predicted": p_,
                               "measured": ms, "again": second[i] if args.remeasure else None,
                               "spec": {k: spec[k] for k in ("layout", "widths", "depths", "mixers") if k in spec}}
                        handle.write(json.dumps(row, default=str) + "\n")
    if args.presets:
        from composer.spec.source import preset_names

        predictor = Predictor(batch_size=1, threads=threads, folder=folder)
        ratios = []
        print("\n| preset | GMACs | predicted ms | measured ms | predicted / measured | img/s (measured) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in preset_names():
            if name.startswith("ensemble"):
                continue
            est = estimate(name)
            p = predictor.predict(name).ms
            m = measure(name, threads=threads)
            ratios.append(p / m)
            print(f"| {name} | {est.macs / 1e9:.2f} | {p:.1f} | {m:.1f} | {p / m:.2f} | {1e3 / m:.1f} |", flush=True)
        errors = sorted(abs(r - 1) for r in ratios)
        print(f"\n{len(ratios)} presets: within ±10% {sum(e <= 0.10 for e in errors) / len(errors):.0%}, median "
              f"|error| {statistics.median(errors):.1%}, mean predicted / measured {statistics.mean(ratios):.2f}")
    print(f"\nload average at the end: {load()}")


if __name__ == "__main__":
    main()
