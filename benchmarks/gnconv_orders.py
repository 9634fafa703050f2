"""HorNet gnConv: cost growth with the interaction order n = 1..5 at a fixed width (CPU, one thread, float32, one
run). Prints the analytic params and MACs (composer's closed form: convs only), the paper's bound
HWC(2K² + 11C/3 + 2) (products included), the measured forward and forward + backward time, and each as a ratio
to order 2.

    python benchmarks/gnconv_orders.py [--width 256] [--size 14] [--batch 8] [--reps 15]
"""

from __future__ import annotations

import argparse
import time

import torch

from composer.mixers import MixerContext
from composer.mixers.hornet import GnConvConfig


def _interleaved_medians(fns, reps: int) -> list[float]:
    """Median time of each function, measured round-robin (so load drift on the machine hits all alike)."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [sorted(t)[len(t) // 2] for t in times]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256, help="channels (HorNet-T stage 3)")
    parser.add_argument("--size", type=int, default=14, help="map side (HorNet-T stage 3 at 224)")
    parser.add_argument("--kernel", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    c, s, k = args.width, args.size, args.kernel
    ctx = MixerContext(c, s, s)
    print(f"torch {torch.__version__}, 1 thread, batch {args.batch}, width {c}, {s}x{s} map, {k}x{k} depthwise, "
          f"float32, median of {args.reps} (orders interleaved)")
    print(f"{'order':>5} {'params':>9} {'MMACs':>8} {'bound MMACs':>11} {'fwd ms':>7} {'f+b ms':>7} "
          f"{'MACs / n=2':>10} {'fwd / n=2':>9} {'f+b / n=2':>9}")
    rows, fwds, trains = [], [], []
    for order in range(1, 6):
        cfg = GnConvConfig(order=order, kernel_size=k)
        cost = cfg.cost(ctx)
        bound = s * s * c * (2 * k * k + 11 * c / 3 + 2)
        module = cfg.build(ctx)
        x = torch.randn(args.batch, c, s, s)
        xg = x.clone().requires_grad_(True)

        def fwd(module=module, x=x):
            with torch.inference_mode():
                module(x)

        def train(module=module, xg=xg):
            module(xg).square().mean().backward()

        rows.append((order, cost.params, cost.macs, bound))
        fwds.append(fwd)
        trains.append(train)
    rows = [(*row, f, t) for row, f, t in zip(rows, _interleaved_medians(fwds, args.reps),
                                              _interleaved_medians(trains, args.reps))]
    base = rows[1]
    for order, params, macs, bound, fwd, trn in rows:
        print(f"{order:>5} {params:>9,} {macs / 1e6:>8.2f} {bound / 1e6:>11.2f} {fwd * 1e3:>7.2f} {trn * 1e3:>7.2f} "
              f"{macs / base[2]:>9.3f}x {fwd / base[4]:>8.2f}x {trn / base[5]:>8.2f}x")


if __name__ == "__main__":
    main()
