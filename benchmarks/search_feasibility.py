"""Feasibility checks per second vs building + counting the same samples; proxy trial wall time per model.

    python benchmarks/search_feasibility.py [--space search/metaformer_s18.yaml] [--checks 500] [--builds 4]

A feasibility check is what every trial does before anything is built: sample the space, validate the spec,
plan it and read the estimate (params, MACs). The alternative it replaces is building the model and counting
its MACs (FlopCounterMode on the meta device, as ``composer build --count``), or building it for real.

Every checked sample's estimate is then compared with the full Plan's (``plan(spec).estimate()``, the graph
with every block's own part): the fast path must give the exact figures of the spec that would be built.
Checks per second are given per wall-clock second and per CPU second of this process (on a shared machine
the second is the steadier figure).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from composer.composed import compose
from composer.cost import count_macs
from composer.plan import plan
from composer.search.objectives import proxy_scores
from composer.search.space import load_space

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default=str(REPO / "search" / "metaformer_s18.yaml"))
    ap.add_argument("--checks", type=int, default=500)
    ap.add_argument("--builds", type=int, default=4)
    ap.add_argument("--proxy-size", type=int, default=64)
    ap.add_argument("--proxy-batch", type=int, default=16)
    ap.add_argument("--budget", type=float, default=5e9)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    space = load_space(args.space)
    rng = random.Random(0)
    for _ in range(20):   # warm-up
        space.check(space.sample_random(rng)[0])

    rng = random.Random(1)
    samples = []
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(args.checks):
        check = space.check(space.sample_random(rng)[0])
        samples.append(check)
    check_s = (time.perf_counter() - t0) / args.checks
    check_cpu_s = (time.process_time() - cpu0) / args.checks
    for check in samples:   # exactness: the check's estimate is the full Plan's, stage by stage
        if check.error is None:
            full = plan(check.spec).estimate()
            assert (check.estimate.params, check.estimate.macs, check.estimate.fft_macs) == \
                (full.params, full.macs, full.fft_macs), check.data
            assert [s.cost for s in check.estimate.stages] == [s.cost for s in full.stages], check.data
    feasible = [c for c in samples if c.error is None and c.estimate.macs <= args.budget]
    t0 = time.perf_counter()
    for _ in range(args.checks):
        space.sample_random(rng)
    sample_s = (time.perf_counter() - t0) / args.checks

    built, counted, proxy = [], [], []
    for check in feasible[: args.builds]:
        t0 = time.perf_counter()
        model = compose(check.spec)
        built.append(time.perf_counter() - t0)
        del model
        t0 = time.perf_counter()
        counted_macs = count_macs(check.spec).macs
        counted.append(time.perf_counter() - t0)
        assert counted_macs == check.estimate.macs, (counted_macs, check.estimate.macs)
        t0 = time.perf_counter()
        small = space.check(dict(check.data, input_size=args.proxy_size, drop_path_rate=0.0))
        torch.manual_seed(0)
        model = compose(small.spec if small.error is None else check.spec)
        proxy_scores(model, args.proxy_size if small.error is None else check.spec.input_size, args.proxy_batch,
                     3, check.spec.num_classes, 0)
        proxy.append(time.perf_counter() - t0)

    med = statistics.median
    print(f"space {space.name}: {args.checks} random samples, {len(feasible)} feasible at {args.budget / 1e9:g} "
          f"GMACs ({len(feasible) / args.checks:.0%}), torch threads {torch.get_num_threads()}")
    print(f"{'what':<52} {'per sample':>12} {'per second':>11} {'vs check':>9}")
    rows = [("sample only (space.sample_random)", sample_s),
            ("feasibility check: sample + validate + plan + estimate", check_s),
            ("build the model (compose, real weights)", med(built)),
            ("count MACs (FlopCounterMode on meta, cost.count_macs)", med(counted)),
            ("build + count", med(built) + med(counted)),
            (f"proxy trial: build at {args.proxy_size}px + NASWOT + grad-norm (batch {args.proxy_batch})",
             med(proxy))]
    for name, sec in rows:
        print(f"{name:<52} {sec * 1e3:>10.2f}ms {1 / sec:>11.1f} {sec / check_s:>8.2f}x")
    print(f"feasibility checks per CPU second of this process: {1 / check_cpu_s:.1f}")
    print(f"check estimate == full Plan estimate (params, MACs, FFT MACs, every stage) for all "
          f"{sum(c.error is None for c in samples)} valid samples")
    print(f"counted MACs == estimated MACs for all {len(counted)} built samples")


if __name__ == "__main__":
    main()
