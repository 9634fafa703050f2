"""CPU eval throughput of the related-work presets (InceptionNeXt, FocalNet, LowFormer) beside their MACs, each
against timm's own model of the same name measured in the same run (same batch, threads, input), interleaved
round by round so a machine that speeds up or slows down mid-run affects both alike. Prints images/s, the ratio
to timm, GMACs per image and the MACs executed per second (img/s x GMACs) — the LowFormer point: MACs do not say
how fast a model runs.
``--official DIR`` (a checkout of altair199797/LowFormer, kept outside this repository) times the official
LowFormer modules too. No assertions.

    python benchmarks/related_work_throughput.py [--threads 2] [--batch 8] [--rounds 5] [--models ...]
        [--official DIR]
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
          "focalnet_base_lrf", "lowformer_b0", "lowformer_b1", "lowformer_b15", "lowformer_b3"]


def _official(directory: str, name: str):
    """The official LowFormer model of a preset, from its own checkout (never imported from this repository)."""
    import sys

    sys.path.insert(0, directory)
    import lowformer_model

    size = name.rsplit("_", 1)[1]
    return lowformer_model.get_lowformer(os.path.join(directory, "configs", "cls", "imagenet", f"{size}.yaml"),
                                         None, pretrained=False)


def main(argv=None) -> None:
    import timm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--official", metavar="DIR", help="a checkout of altair199797/LowFormer (outside this "
                                                            "repository): time its LowFormer modules too")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, 224, 224)
    print(f"CPU, {args.threads} threads, batch {args.batch} at 224 px, median of {args.rounds} rounds; load "
          f"{os.getloadavg()[0]:.2f} at the start")
    print(f"{'model':<22}{'GMACs':>8}{'img/s':>9}{'timm img/s':>12}{'ratio':>7}{'GMAC/s':>9}"
          + (f"{'official img/s':>16}" if args.official else ""))
    for name in args.models:
        models = {"ours": composer.compose(name).eval(), "timm": timm.create_model(name).eval()}
        if args.official and name.startswith("lowformer_"):
            models["official"] = _official(args.official, name).eval()
        times = {key: [] for key in models}
        with torch.inference_mode():
            for model in models.values():
                model(x)   # warm-up
            for _ in range(args.rounds):
                for key, model in models.items():
                    t0 = time.perf_counter()
                    model(x)
                    times[key].append(time.perf_counter() - t0)
        ips = {k: args.batch / statistics.median(v) for k, v in times.items()}
        gmacs = composer.estimate(name).macs / 1e9
        official = f"{ips['official']:>16.1f}" if "official" in ips else ""
        print(f"{name:<22}{gmacs:>8.3f}{ips['ours']:>9.1f}{ips['timm']:>12.1f}{ips['ours'] / ips['timm']:>7.2f}"
              f"{ips['ours'] * gmacs:>9.1f}{official}")


if __name__ == "__main__":
    main()
