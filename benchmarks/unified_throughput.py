"""Eval throughput of the five unified-architecture tiny models ("Demystify Transformers & Convolutions")
relative to U-DWConv-Tiny, measured in one run: same batch, threads and device. The models take turns, one
timed forward each per round, so a machine getting slower or faster mid-run affects all of them alike. Prints
images/s, the ratio to u_dwconv_tiny and the analytic GMACs beside it. No assertions.

    python benchmarks/unified_throughput.py [--threads 2] [--batch 8] [--rounds 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

import composer

MODELS = ["u_dwconv_tiny", "u_halo_tiny", "u_pvt_tiny", "u_swin_tiny", "u_internimage_tiny"]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 224, 224, device=args.device)
    models = {name: composer.compose(name).eval().to(args.device) for name in args.models}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():  # warm-up (allocator, kernels)
            model(x)
        _sync(args.device)
        for _ in range(args.rounds):
            for name, model in models.items():
                t0 = time.perf_counter()
                model(x)
                _sync(args.device)
                times[name].append(time.perf_counter() - t0)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, {args.threads} thread(s)"
    print(f"torch {torch.__version__}, {device}, batch {args.batch}, 224x224, float32 eval, median of "
          f"{args.rounds} interleaved rounds after one warm-up")
    print(f"{'model':<20} {'params':>11} {'GMACs':>7} {'ms/batch':>9} {'img/s':>8} {'vs u_dwconv':>11} "
          f"{'MACs vs u_dwconv':>16}")
    base_rate = base_macs = None
    for name in models:
        est = composer.estimate(name)
        t = sorted(times[name])[len(times[name]) // 2]
        rate = args.batch / t
        base_rate, base_macs = base_rate or rate, base_macs or est.macs
        print(f"{name:<20} {est.params:>11,} {est.macs / 1e9:>7.3f} {t * 1e3:>9.1f} {rate:>8.2f} "
              f"{rate / base_rate:>10.2f}x {est.macs / base_macs:>15.2f}x")


if __name__ == "__main__":
    main()
