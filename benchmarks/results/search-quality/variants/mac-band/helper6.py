"""How follow-up 6's last five searches ran (session of 2026-12-07): two one-thread processes side by side, each
making the same run() calls as ``benchmarks/search_quality.py --variant mac-band`` (code 64f2102 in a worktree at
/work/sqcode6) and writing its cost.json as the script does; the script then found the searches finished and went
on with its later stages.

    python helper6.py composer-s1 composer-s2 random-search-s2 &
    python helper6.py random-search-s0 random-search-s1 &
"""

import sys
import time
from pathlib import Path

CODE = "/work/sqcode6"
sys.path[:0] = [CODE, f"{CODE}/benchmarks"]

import search_quality as sq  # noqa: E402
import torch  # noqa: E402

from composer.search import run  # noqa: E402

torch.set_num_threads(1)
scale = dict(sq.SCALES["full"])
variant = sq.VARIANTS["mac-band"]
scale.update({k: v for k, v in variant.items() if k in scale})
results = Path("/work/sq/full/variants/mac-band")
search_train = {"data": "fashion-mnist", "subset": scale["search_subset"], "epochs": scale["search_epochs"],
                "val_fraction": scale["val_fraction"]}
for tag in sys.argv[1:]:
    method, seed = tag.rsplit("-s", 1)
    sampler = {"composer": variant.get("sampler", "auto"), "random-search": "random"}[method]
    t0, c0 = time.perf_counter(), sq._cpu_seconds()
    print(f"[{time.strftime('%H:%M:%S')}] {tag} start", flush=True)
    run(f"{CODE}/search/small_images.yaml", objective="train", trials=scale["trials"], seed=int(seed), sampler=sampler,
        pruner=variant.get("pruner", "hyperband"), count_trials=variant.get("count_trials", "all"),
        min_macs=variant.get("min_macs"), run_dir=str(results / "search" / tag), progress=False, log=sq._quiet,
        train=search_train)
    sq._cached(results / "search" / tag / "cost.json", lambda t0=t0, c0=c0: {
        "wall_s": time.perf_counter() - t0, "cpu_s": sq._cpu_seconds() - c0, "threads": 1,
        "beside": "another search"})
    print(f"[{time.strftime('%H:%M:%S')}] {tag} done", flush=True)
