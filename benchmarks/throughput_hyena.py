"""End-to-end CPU eval throughput of the HyenaPixel S18 models relative to CAFormer-S18 (the same run, the
same batch and thread count). Prints images/s and the ratio to caformer_s18 (no assertions).

    python benchmarks/throughput_hyena.py [--threads 1] [--batch 8] [--size 224]
"""

from __future__ import annotations

import argparse
import time

import torch

import composer

MODELS = ["caformer_s18", "hpxformer_s18", "chpxformer_s18", "hbformer_s18"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.size}x{args.size}, "
          f"float32 eval, median of {args.reps} after one warm-up")
    print(f"{'model':<16} {'params':>11} {'GMACs':>7} {'FFT GMACs':>9} {'ms/batch':>9} {'img/s':>7} "
          f"{'vs caformer':>11}")
    base = None
    for name in args.models:
        est = composer.estimate(name)
        model = composer.compose(name).eval()
        with torch.inference_mode():
            model(x)
            times = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        t = sorted(times)[len(times) // 2]
        rate = args.batch / t
        base = base or rate
        print(f"{name:<16} {est.params:>11,} {est.macs / 1e9:>7.3f} {est.fft_macs / 1e9:>9.3f} {t * 1e3:>9.1f}"
              f" {rate:>7.2f} {rate / base:>10.2f}x")


if __name__ == "__main__":
    main()
