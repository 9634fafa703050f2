"""The Hpx long convolution via FFT (what composer runs) vs the same convolution done directly with a
depthwise conv2d (flipped K x K kernel, padding K // 2), at the stage-1 and stage-3 shapes of HpxFormer-S18
at 224 (C=64, 56x56, K=111 and C=320, 14x14, K=27), on CPU with one thread. Prints times and the ratio
direct / FFT measured in the same run (no assertions: timings depend on the machine).

    python benchmarks/hyena_fft_vs_direct.py [--threads 1] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from composer.nn.mixers.hyena import fft_conv2d

SHAPES = {"stage 1": (64, 56, 111), "stage 3": (320, 14, 27)}  # (C, F, K) of HpxFormer-S18 at 224


def bench(fn, min_time: float = 1.0, min_reps: int = 3) -> float:
    """Median seconds per call after one warm-up, over at least ``min_reps`` calls and ``min_time`` seconds; a
    call slower than ``min_time`` (the direct K=111 conv takes seconds) is timed once, its warm-up included."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > min_time:
        return first
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), float32, eval (no grad)")
    print(f"{'shape':<8} {'batch':>5} {'C':>4} {'map':>6} {'K':>4} {'FFT ms':>9} {'direct ms':>10} {'direct/FFT':>10}"
          f" {'max |diff|':>10}")
    with torch.no_grad():
        for label, (c, f, k) in SHAPES.items():
            for batch in args.batches:
                u = torch.randn(batch, c, f, f)
                h = torch.randn(1, c, k, k) * 0.01
                d = torch.randn(1, c, 1, 1)
                weight = h.flip(-2, -1).transpose(0, 1).contiguous()  # (C, 1, K, K)

                def via_fft(u=u, h=h, d=d):
                    return fft_conv2d(u, h, d)

                def direct(u=u, weight=weight, d=d, k=k, c=c):
                    return F.conv2d(u, weight, padding=k // 2, groups=c) + u * d

                t_fft = bench(via_fft, args.min_time)
                t_direct = bench(direct, args.min_time)
                diff = (via_fft() - direct()).abs().max().item() if t_direct < 5 else float("nan")
                print(f"{label:<8} {batch:>5} {c:>4} {f:>3}x{f:<2} {k:>4} {t_fft * 1e3:>9.2f} {t_direct * 1e3:>10.2f}"
                      f" {t_direct / t_fft:>10.2f} {diff:>10.1e}")


if __name__ == "__main__":
    main()
