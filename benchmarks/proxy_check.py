"""Which training-free proxy ranks a space's architectures as training does? `composer proxy-check` at the
largest scale two CPU cores allow, printed as the markdown table docs/search.md carries.

    python benchmarks/proxy_check.py                       # metaformer_s18 at 1/4 width, 40 samples, 4 epochs
    python benchmarks/proxy_check.py --samples 60 --epochs 6 --width-scale 1

The space is a shipped one (default search/metaformer_s18.yaml) with its base's widths scaled by --width-scale
(the same choices of mixers, depths, kernel sizes and orders; 1/4 width trains ~10x faster on CPU, so more
samples fit), trained on scikit-learn's digits at 32 px. Conditions (threads, load, seconds) are printed with
the table. Resumable: rerun the same command to continue (RUN_DIR/samples.csv).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default=str(REPO / "search" / "metaformer_s18.yaml"))
    parser.add_argument("--width-scale", type=float, default=0.25)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", action="store_true", help="also the latency predicted on this CPU")
    parser.add_argument("--run-dir", default="runs/benchmark-proxy-check")
    args = parser.parse_args()

    import torch

    from composer.search.proxy_check import proxy_check
    from composer.spec import load_spec, spec_to_data

    raw = yaml.safe_load(Path(args.space).read_text())
    base = raw["base"]
    data = spec_to_data(load_spec(base)) if isinstance(base, str) else dict(base)
    if args.width_scale != 1:
        # widths stay multiples of 8 and of every attention head_dim used in the space (32)
        data["widths"] = [max(32, int(round(w * args.width_scale / 32)) * 32) for w in data["widths"]]
        data["name"] = f"{data['name']}_w{args.width_scale:g}"
    raw["base"] = data
    raw.pop("budget", None)   # the scaled space is not the full-width budget's
    raw["name"] = f"{raw.get('name', Path(args.space).stem)}_w{args.width_scale:g}"
    t0 = time.time()
    result = proxy_check(raw, samples=args.samples, epochs=args.epochs, seed=args.seed, train_size=args.train_size,
                         latency=args.latency, run_dir=args.run_dir)
    load = os.getloadavg()
    print(f"\nconditions: {raw['name']} (base widths {data['widths']}), {len(result.rows)} samples, {args.epochs} "
          f"epochs on digits at {args.train_size} px, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load {load[0]:.2f}, {time.time() - t0:.0f} s this run")
    print("\n| proxy | Kendall tau | Spearman rho |\n|---|---:|---:|")
    for c in result.correlations:
        print(f"| {c['proxy']} | {c['kendall_tau']:+.3f} | {c['spearman_rho']:+.3f} |")
    accuracies = sorted(r["accuracy"] for r in result.rows)
    print(f"\naccuracy: min {accuracies[0]:.3f}, median {accuracies[len(accuracies) // 2]:.3f}, "
          f"max {accuracies[-1]:.3f}")


if __name__ == "__main__":
    main()
