"""CPU eval throughput of the related-work presets (InceptionNeXt, FocalNet) beside their MACs, each against
timm's own model of the same name measured in the same run (same batch, threads, input), interleaved round by
round so a machine that speeds up or slows down mid-run affects both alike. Prints images/s, the ratio to
timm and GMACs per image, and img/s per GMAC — the LowFormer point: MACs do not say how fast a model runs.
No assertions.

    python benchmarks/related_work_throughput.py [--threads 2] [--batch 8] [--rounds 5] [--models ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import composer

MODELS = ["inception_next_atto", "inception_next_tiny", "inception_next_small", "inception_next_base",
          "focalnet_tiny_srf", "focalnet_tiny_lrf", "focalnet_small_srf", "focalnet_small_lrf", "focalnet_base_srf",
          "focalnet_base_lrf"]


def main(argv=None) -> None:
    import timm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, 224, 224)
    print(f"CPU, {args.threads} threads, batch {args.batch} at 224 px, median of {args.rounds} rounds; load "
          f"{os.getloadavg()[0]:.2f} at the start")
    print(f"{'model':<22}{'GMACs':>8}{'img/s':>9}{'timm img/s':>12}{'ratio':>7}{'img/s/GMAC':>12}")
    for name in args.models:
        ours = composer.compose(name).eval()
        theirs = timm.create_model(name).eval()
        times = {"ours": [], "timm": []}
        with torch.inference_mode():
            ours(x), theirs(x)   # warm-up
            for _ in range(args.rounds):
                for key, model in (("ours", ours), ("timm", theirs)):
                    t0 = time.perf_counter()
                    model(x)
                    times[key].append(time.perf_counter() - t0)
        ips = {k: args.batch / statistics.median(v) for k, v in times.items()}
        gmacs = composer.estimate(name).macs / 1e9
        print(f"{name:<22}{gmacs:>8.3f}{ips['ours']:>9.1f}{ips['timm']:>12.1f}{ips['ours'] / ips['timm']:>7.2f}"
              f"{ips['ours'] / gmacs:>12.1f}")


if __name__ == "__main__":
    main()
