"""Start-up time of the command line against ``python -c "import torch"``, measured in one run.

Each command is started as a fresh process, the commands take turns (one run each per round, so a machine that
gets busier mid-run slows all of them alike), and the median wall time of ``--rounds`` runs is printed with its
ratio to ``import torch``. The goal of issue 11: ``composer validate caformer_s18`` at most 1x, aiming under
0.5x, because validating a spec imports no torch. No assertions.

    python benchmarks/cli_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "composer --help": ["composer", "--help"],
    "composer validate caformer_s18": ["composer", "validate", "caformer_s18"],
    "composer list": ["composer", "list"],
    "composer schema": ["composer", "schema"],
    "python -c 'import composer'": [sys.executable, "-c", "import composer"],
    "composer build caformer_s18": ["composer", "build", "caformer_s18"],
}
REFERENCE = "python -c 'import torch'"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if shutil.which("composer") is None:
        sys.exit("composer is not on PATH: install the project first (README)")
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for cmd in COMMANDS.values():  # one untimed run each: the OS file cache, .pyc files
        subprocess.run(cmd, capture_output=True, check=True)
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t0)
    reference = statistics.median(times[REFERENCE])
    print(f"median of {args.rounds} runs each, interleaved")
    print(f"{'command':<34} {'seconds':>8} {'ratio to import torch':>22}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<34} {median:8.3f} {median / reference:22.2f}")


if __name__ == "__main__":
    main()
