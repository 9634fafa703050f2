"""Peak memory of a one-trial train search over an ImageFolder of N small images, for N = 2,000 and 20,000
(issue: memory must not grow with the data set; goal: the larger at most 1.3x the smaller).

    python benchmarks/train_memory.py [--sizes 2000,20000] [--workers 2] [--keep DIR]

Each size gets a folder of 10 classes of 12x12 PNGs (made once, in DIR when --keep is given), then
``composer search tests/data/small_train_space.yaml --objective train --data FOLDER --trials 1 --epochs 1`` runs
in a fresh process; its peak resident memory, and that of its loader workers, is read from
``getrusage(RUSAGE_CHILDREN)`` of a wrapper process that runs only it (ru_maxrss: the largest child's peak).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_WRAPPER = """
import resource, subprocess, sys, json
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": done.returncode, "peak_mb": peak, "err": done.stderr[-500:]}))
"""


def make_folder(root: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    if root.is_dir() and sum(1 for _ in root.rglob("*.png")) == n:
        return root
    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % 10
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 80, (12, 12, 3), dtype=np.uint8)
        image[c: c + 2] = 250
        Image.fromarray(image).save(folder / f"{i}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", help="make the folders here (reused by a rerun)")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp())
    results = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        t0 = time.perf_counter()
        folder = make_folder(base / f"images{n}", n)
        made = time.perf_counter() - t0
        run_dir = Path(tempfile.mkdtemp()) / "run"
        cmd = [sys.executable, "-m", "composer.cli", "search", str(REPO / "tests" / "data" / "small_train_space.yaml"),
               "--objective", "train", "--data", str(folder), "--trials", "1", "--epochs", "1", "--run-dir",
               str(run_dir), "--loader-workers", str(args.workers), "--no-progress"]
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, cwd=REPO)
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        figures.update(seconds=round(time.perf_counter() - t0, 1), folder_seconds=round(made, 1))
        results[n] = figures
        print(f"{n:>6} images: exit {figures['rc']}, peak {figures['peak_mb']:.0f} MB, search {figures['seconds']} s "
              f"(folder made in {figures['folder_seconds']} s)", flush=True)
        if figures["rc"] != 0:
            print(figures["err"])
    sizes = sorted(results)
    if len(sizes) >= 2:
        ratio = results[sizes[-1]]["peak_mb"] / results[sizes[0]]["peak_mb"]
        print(f"peak memory at {sizes[-1]} images / at {sizes[0]}: {ratio:.2f}x (goal: at most 1.3x)")


if __name__ == "__main__":
    main()
