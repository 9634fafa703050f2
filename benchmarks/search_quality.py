"""Does composer's search find better architectures than random search and the papers' hand layouts? The protocol
is docs/search.md, "Does the search find better architectures? The protocol"; this script runs it, resumably.

    python benchmarks/search_quality.py [--results DIR] [--quick] [--jobs N] [--partial]

Stages, each cached in the results folder (a stopped run continues where it stopped; rerun the same command; a
search stopped part-way draws its later trials with its sampler reseeded, as every resumed study does, so its pick
may differ from an uninterrupted run's):

1. ``search``: composer's search (TPE) and random search (Optuna's RandomSampler), ``--trials`` trials each with
   ``--pruner hyperband``, per search seed, on the training split only (a validation split held out of it);
2. ``short``: the hand layouts (scaled to the budget by width and depth alone) and random architectures of the
   space trained with the search's schedule, so every retrained architecture has a search-time accuracy;
3. ``final``: every search's pick, every hand layout and every random architecture trained from scratch with one
   recipe (``composer train``) per final seed;
4. ``test``: each final bundle evaluated once on the test split (``composer eval --split test``): the only stage
   that opens it;
5. ``report``: results.json, results.md and accuracy_vs_macs.png.

``--variant NAME`` reruns both searches with one change (docs/search.md, "What is tried next if the search does
not win"; VARIANTS below) into RESULTS/variants/NAME once the first run in RESULTS has finished; the hand layouts,
random architectures and their final runs are the first run's, and only the searches' picks are trained anew.

``--search-jobs N`` runs the searches as N processes of this script at a time, the cores shared among them (on the
2-core machine follow-up 6's searches, two one-thread processes side by side, took 7.5-8.5 min each for 16 trained
architectures; follow-up 5's, one after another with two threads, about 6 min each for about 10 smaller ones).

``--partial``, beside a running full run (or after a stopped one), reports what has finished so far into
results-partial.json / .md: it trains and times nothing, needs every search done, and tests only finished bundles
(each still once: the result is cached in the bundle, and the full run reuses it). The final trainings go seed by
seed, the searches' picks first, so a run stopped part-way has every method at the first seed.

``--quick`` runs every stage at toy scale (a smoke test: 24 min on Fashion-MNIST on the 2-core machine while other
jobs ran, since every trial still validates on 3,000 images and every bundle is tested on 10,000;
tests/test_search_quality.py runs it on a 300-image slice in the Fashion-MNIST format, ``--data fashion-mnist:DIR``).
``STAGE`` names the stage running (the test watches which stage opens the test files).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGE = "start"
PUBLISHED = {"human": (83.5, None), "two conv layers (<100K params)": (92.5, 0.1), "ResNet-18": (94.9, 11.2),
             "DENSER (evolutionary NAS)": (95.3, None), "WRN-40-4": (96.7, 8.9)}
"""Fashion-MNIST test accuracy (%) and M params, zalandoresearch/fashion-mnist's benchmark table."""

# the papers' hand layouts in the 3-stage macro (their last three stages are the ones at 7x7, 4x4 and 2x2 maps)
HAND = {
    "ConvFormer-like": (["Conv", "Conv", "Conv"], {}),
    "CAFormer-like": (["Conv", "A", "A"], {}),
    "HyenaPixel-like": (["Conv", "Hpx", "Hpx"], {}),
    "HorNet-like": (["gnConv", "gnConv", "gnConv"], {"gnConv": {"order": [3, 4, 5]}}),
    "EfficientFormer-like": ("last-two-attention", {}),
    "PoolFormer-like": (["Pool", "Pool", "Pool"], {}),
}

SCALES = {
    "full": {"trials": 16, "seeds": [0, 1, 2], "search_subset": 4000, "search_epochs": 3, "val_fraction": 0.05,
             "final_subset": None, "final_epochs": 1, "final_warmup_epochs": 0.1, "final_seeds": [0, 1],
             "random_archs": 6,
             "hand": list(HAND), "proxy_samples": 12},
    "quick": {"trials": 2, "seeds": [0], "search_subset": 100, "search_epochs": 1, "val_fraction": 0.05,
              "final_subset": 150, "final_epochs": 1, "final_warmup_epochs": 0.1, "final_seeds": [0],
              "random_archs": 1,
              "hand": ["ConvFormer-like", "EfficientFormer-like"], "proxy_samples": 3},
}


VARIANTS = {
    "never-pruned-last": {},   # composer's search as it runs from 2026-12-07: no trial pruned after its last epoch
    "one-epoch-48": {"trials": 48, "search_epochs": 1, "pruner": "none"},
    "tpe-grouped": {"sampler": "tpe-grouped"},   # composer's sampler only; random search stays random
    "feasible-trials": {"count_trials": "feasible"},
    # follow-up 5, recorded before follow-up 4's final figures: one pass over 3x the images, as the final training
    # is one pass over the whole split (the same 12,000 trial images as 3 epochs x 4,000)
    "one-epoch-12k": {"search_subset": 12000, "search_epochs": 1, "pruner": "none"},
    # follow-up 6, recorded after every figure of follow-ups 1-5: follow-up 5's searches within a MAC band of 8-10M
    # (82% of samples fall below the floor, so only trained architectures count toward the 16 trials)
    "mac-band": {"search_subset": 12000, "search_epochs": 1, "pruner": "none", "min_macs": "8M",
                 "count_trials": "feasible"},
    # follow-up 7, recorded before follow-up 6's picks were known: follow-up 6's searches (reused, not rerun), and
    # every retrained architecture (their picks, the hand layouts, the random architectures) trained 5x as long
    "long-final": {"search_subset": 12000, "search_epochs": 1, "pruner": "none", "min_macs": "8M",
                   "count_trials": "feasible", "searches_from": "mac-band", "final_epochs": 5,
                   "final_warmup_epochs": 0.5},
    # follow-up 8, recorded before follow-up 7's figures: follow-up 7 with 4x the trials per search (64); the hand
    # layouts' and random architectures' five-epoch runs are follow-up 7's
    "many-trials": {"search_subset": 12000, "search_epochs": 1, "pruner": "none", "min_macs": "8M",
                    "count_trials": "feasible", "trials": 64, "final_epochs": 5, "final_warmup_epochs": 0.5,
                    "finals_from": "long-final"},
}
"""docs/search.md, "What is tried next if the search does not win": each reruns both searches with one change; the
hand layouts and random architectures (and their final runs) are the first run's. ``searches_from``: reuse that
variant's searches instead (run there if missing); a variant that changes a ``final_*`` setting trains every
architecture anew into its own folder, or, with ``finals_from``, takes the hand layouts' and random architectures'
final runs from that variant (the same final schedule) and trains only its picks."""


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _quiet(*_args) -> None:
    pass


def _stamp(stage: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] stage {stage}", flush=True)


def _cached(path: Path, compute):
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    tmp.replace(path)
    return value


def scaled_hand_layout(space, name: str) -> dict | None:
    """``name``'s layout at the largest MACs within the budget, varying only the widths (one multiplier of the
    base's, in steps of 1/8, multiples of 16) and the depths (the space's options)."""
    layout, mixers = HAND[name]
    budget = space.budget_macs
    depth_options = next(c for c in space.choices if c.key == "depths").domains
    best = None
    for depths in itertools.product(*[d.options for d in depth_options]):
        blocks = layout
        if layout == "last-two-attention":   # EfficientFormer: attention only in the last blocks of the last stage
            if depths[-1] < 3:
                continue
            blocks = [["Conv"] * d for d in depths[:-1]] + [["Conv"] * (depths[-1] - 2) + ["A", "A"]]
        for eighths in range(4, 17):
            widths = [max(16, round(w * eighths / 8 / 16) * 16) for w in space.base.widths]
            data = dict(space.base_data, layout=blocks, depths=list(depths), widths=widths)
            if mixers:
                data["mixers"] = {**space.base_data.get("mixers", {}), **mixers}
            check = space.check(data)
            if check.error is not None or check.estimate.macs > budget:
                continue
            key = (check.estimate.macs, sum(depths))
            if best is None or key > best[0]:
                best = (key, check.data)
    return None if best is None else dict(best[1], name=name.replace("-like", "").lower())


def random_architectures(space, count: int, seed: int) -> list[dict]:
    import random

    rng = random.Random(seed)

    def suggest(_name, domain):
        if domain.options is not None:
            return rng.choice(domain.options)
        return rng.randint(int(domain.low), int(domain.high))

    out, seen = [], set()
    for _ in range(count * 50):
        data, drawn = space.sample(suggest)
        key = json.dumps(drawn, sort_keys=True, default=str)
        check = space.check(data)
        if key in seen or check.error is not None or check.estimate.macs > space.budget_macs:
            continue
        seen.add(key)
        out.append(dict(check.data, name=f"random{len(out)}"))
        if len(out) == count:
            break
    return out


def main(argv: list[str] | None = None) -> Path:
    global STAGE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=str(REPO / "runs" / "search-quality"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--space", default=str(REPO / "search" / "small_images.yaml"))
    ap.add_argument("--jobs", type=int, default=1, help="final trainings run as this many composer train "
                                                       "processes, the cores shared among them (default 1: in "
                                                       "this process)")
    ap.add_argument("--search-jobs", type=int, default=1, help="run the searches as this many processes at a time, "
                                                              "the cores shared among them (default 1: one after "
                                                              "another, in this process)")
    ap.add_argument("--only-search", help=argparse.SUPPRESS)   # a --search-jobs child: this search, then exit
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=sorted(VARIANTS), help="rerun both searches with one change (docs/search.md, "
                                                              "'What is tried next') into RESULTS/variants/NAME, "
                                                              "beside a finished first run in RESULTS")
    ap.add_argument("--partial", action="store_true", help="report what has finished (beside a running full run): "
                                                           "trains nothing new, times nothing, writes "
                                                           "results-partial.*; the searches must be done")
    ap.add_argument("--docs", metavar="MD", help=f"also write the report between the markers {MARKERS[0]!r} and "
                                                 f"{MARKERS[1]!r} of this Markdown file")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    scale = dict(SCALES["quick" if args.quick else "full"])
    base = Path(args.results)   # the first run: the hand layouts' and random architectures' results live here
    results = base / "variants" / args.variant if args.variant else base
    variant = VARIANTS[args.variant] if args.variant else {}
    if args.variant and not (base / "results.json").is_file():
        sys.exit(f"--variant: the first run in {base} has not finished (no results.json); finish it first")
    # --quick keeps its toy sizes (a variant's 12,000-image subset would not fit a test's slice)
    scale.update({k: v for k, v in variant.items() if k in scale and not (args.quick and k in ("search_subset",
                                                                                              "trials"))})
    results.mkdir(parents=True, exist_ok=True)
    if not args.partial:
        (results / "protocol.json").write_text(json.dumps({"scale": scale, "data": args.data,
                                                           "space": args.space, "variant": args.variant,
                                                           "change": variant}, indent=2))
    import torch

    from composer.search import load_space, run
    from composer.search.results import best_trial
    from composer.train.command import eval_command, train_command
    from composer.train.trial import prepare, train_spec

    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    search_train = {"data": args.data, "subset": scale["search_subset"], "epochs": scale["search_epochs"],
                    "val_fraction": scale["val_fraction"]}

    # 1. searches -----------------------------------------------------------------------------------------------
    STAGE = "search"
    _stamp("search")
    picks: dict[str, dict] = {}
    trials_seen: list[dict] = []
    searches = base / "variants" / variant["searches_from"] if variant.get("searches_from") else results
    tags = [f"{method}-s{seed}" for method in ("composer", "random-search") for seed in scale["seeds"]]
    if args.search_jobs > 1 and not args.partial and not args.only_search:
        _search_in_processes([t for t in tags if not (searches / "search" / t / "cost.json").is_file()], argv,
                             searches, args.search_jobs)
    for method, sampler in (("composer", variant.get("sampler", "auto")), ("random-search", "random")):
        for seed in scale["seeds"]:
            tag = f"{method}-s{seed}"
            if args.only_search and tag != args.only_search:
                continue
            if args.partial and not (searches / "search" / tag / "cost.json").is_file():
                sys.exit(f"--partial: search {tag} has not finished; a partial report needs every search done")
            t0, c0 = time.perf_counter(), _cpu_seconds()
            result = run(args.space, objective="train", trials=scale["trials"], seed=seed, sampler=sampler,
                         pruner=variant.get("pruner", "hyperband"), count_trials=variant.get("count_trials", "all"),
                         min_macs=variant.get("min_macs"),
                         run_dir=str(searches / "search" / tag), progress=False, log=_quiet, train=search_train)
            cost = _cached(searches / "search" / tag / "cost.json", lambda t0=t0, c0=c0: {
                "wall_s": time.perf_counter() - t0, "cpu_s": _cpu_seconds() - c0})
            best = best_trial(result.study, result.settings)
            picks[tag] = {"method": method, "seed": seed, "spec": dict(best.user_attrs["spec"], name=tag),
                          "search_val": best.value, "cpu_hours": cost["cpu_s"] / 3600}
            for t in result.study.get_trials(deepcopy=False):
                if t.user_attrs.get("accuracy") is not None:
                    trials_seen.append({"method": method, "seed": seed, "macs": t.user_attrs["macs"],
                                        "val": t.user_attrs["accuracy"], "state": t.state.name})
            print(f"search {tag}: pick {best.user_attrs['spec']['layout']} val {best.value:.4f}", flush=True)
            if args.only_search:
                return searches / "search" / tag
    if args.only_search:
        sys.exit(f"--only-search {args.only_search}: not one of this run's searches ({', '.join(tags)})")

    # 2. hand layouts and random architectures at the search's schedule ---------------------------------------------
    STAGE = "short"
    _stamp("short")
    candidates = {name: scaled_hand_layout(space, name) for name in scale["hand"]}
    for name, data in candidates.items():
        if data is None:
            print(f"{name}: no width / depth within the budget fits; left out", flush=True)
    archs = {name: {"method": "hand", "spec": data} for name, data in candidates.items() if data is not None}
    for data in random_architectures(space, scale["random_archs"], seed=0):
        archs[data["name"]] = {"method": "random-arch", "spec": data}
    from composer.train import TrainSettings

    settings = TrainSettings.model_validate({**{k: v for k, v in search_train.items() if k != "epochs"},
                                             "recipe": {"epochs": scale["search_epochs"]}})
    training = prepare(settings, space.base, seed=0)
    for name, arch in list(archs.items()):
        if args.partial and not (base / "short" / f"{name}.json").is_file():
            del archs[name]   # not trained yet by the full run: left out of a partial report
            continue

        def short(arch=arch):
            small, size = space.at_size(arch["spec"], training.size)
            return {"val": train_spec(small, training, size=size).accuracy}

        arch["search_val"] = _cached(base / "short" / f"{name}.json", short)["val"]
        print(f"short {name}: val {arch['search_val']:.4f}", flush=True)
    for tag, pick in picks.items():
        archs[tag] = pick
    # which training-free proxy ranks this space as its training does (on the training split only)
    from composer.search.proxy_check import proxy_check

    proxy_file = base / "proxy-check.json"
    proxies = [] if args.partial and not proxy_file.is_file() else _cached(proxy_file, lambda: proxy_check(
        args.space, train=search_train, samples=scale["proxy_samples"], run_dir=str(base / "proxy-check"),
        log=_quiet).correlations)

    # 3. final training (the test split is not opened here) -----------------------------------------------------
    STAGE = "final"
    _stamp("final")
    final = {"data": args.data, "val_fraction": scale["val_fraction"], "epochs": scale["final_epochs"],
             "warmup_epochs": scale["final_warmup_epochs"]}
    if scale["final_subset"]:
        final["subset"] = scale["final_subset"]
    # seed by seed, the searches' picks first: a run stopped part-way has every method at the first seed
    rank = {"composer": 0, "random-search": 0, "hand": 1, "random-arch": 2}
    order = sorted(archs, key=lambda n: rank[archs[n]["method"]])
    for arch in archs.values():
        arch["runs"] = []
    todo = []
    own_finals = any(key.startswith("final_") for key in variant)   # then every architecture trains anew here
    # ... unless another variant with the same final schedule trained the hand layouts and random architectures
    others = base / "variants" / variant["finals_from"] if variant.get("finals_from") else \
        results if own_finals else base
    for seed in scale["final_seeds"]:
        for name in order:
            home = results if archs[name]["method"] in ("composer", "random-search") else others
            out = home / "final" / f"{name}-s{seed}"
            if not (out / "model.safetensors").is_file():
                if args.partial:
                    continue
                todo.append((name, seed, out))
            archs[name]["runs"].append({"seed": seed, "bundle": str(out)})
    if args.jobs == 1:
        for name, seed, out in todo:
            train_command(archs[name]["spec"], final, out=str(out), seed=seed, progress=False, log=_quiet)
            print(f"[{time.strftime('%H:%M:%S')}] final {name} seed {seed}: trained", flush=True)
    else:
        _train_in_processes(todo, archs, final, results, args.jobs)
    if args.partial:
        archs = {name: arch for name, arch in archs.items() if arch["runs"]}

    # 4. the test split, once per bundle ----------------------------------------------------------------------
    STAGE = "test"
    _stamp("test")
    from composer.latency import measure

    for name, arch in archs.items():
        for run_ in arch["runs"]:
            bundle = Path(run_["bundle"])
            run_.update(_cached(bundle / "test.json", lambda bundle=bundle: {
                "test": eval_command(str(bundle), split="test", log=_quiet)["top1"],
                "val": yaml.safe_load((bundle / "train.yaml").read_text())["final"]["val_top1"]}))
        from composer import estimate

        est = estimate(arch["spec"])
        arch.update(params=est.params, macs=est.macs)
        home = results if arch["method"] in ("composer", "random-search") else base
        latency = home / "latency" / f"{name}.json"
        if args.partial:   # beside a running full run the machine is busy: no timing is taken (or cached) here
            arch["cpu_latency_ms"] = json.loads(latency.read_text())["ms"] if latency.is_file() else float("nan")
            continue
        arch["cpu_latency_ms"] = _cached(latency, lambda arch=arch: {"ms": measure(arch["spec"], "cpu", 1)})["ms"]

    # 5. report ------------------------------------------------------------------------------------------------
    STAGE = "report"
    _stamp("report")
    earlier = _earlier_tests(archs, base, searches) if own_finals and not variant.get("finals_from") else None
    text = report(results, archs, trials_seen, scale, proxies, partial=args.partial, earlier=earlier)
    if args.docs:
        write_between_markers(Path(args.docs), text)
    return results


def _search_in_processes(tags: list[str], argv: list[str], searches: Path, jobs: int) -> None:
    """Each search of ``tags`` as a process of this script (``--only-search TAG``), ``jobs`` at a time, the machine's
    cores shared among them (small models train more images per second as one-thread processes side by side: follow-up
    6's searches took 7.5-8.5 min each, against 24 min for one with two threads beside other work). Each writes its
    own cost.json; a stopped one resumes as any search does."""
    threads, env = _share_cores(jobs)
    drop = {"--search-jobs", "--jobs", "--docs", "--threads"}
    args, skip = [], False
    for arg in argv:   # the same run, less the flags that only the parent uses
        if skip:
            skip = False
        elif arg in drop:
            skip = True
        elif not any(arg.startswith(flag + "=") for flag in drop):
            args.append(arg)
    (searches / "search").mkdir(parents=True, exist_ok=True)
    _run_processes([(f"search {tag}:", [sys.executable, str(Path(__file__).resolve()), *args, "--only-search", tag,
                                        "--threads", str(threads)],
                     searches / "search" / f"{tag}.log",
                     f"search {tag}: started ({threads} thread{'s' * (threads > 1)})", None) for tag in tags],
                   jobs, env)


def _train_in_processes(todo: list, archs: dict, final: dict, results: Path, jobs: int) -> None:
    """``composer train`` for each (name, seed, out) in ``todo``, ``jobs`` processes at a time, the machine's cores
    shared among them (small models use two threads poorly; two one-thread processes train more images per second
    on two cores). Each bundle is resumable on its own, as with one process."""
    import os

    _, env = _share_cores(jobs)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    flags = [x for key, value in final.items() for x in (f"--{key.replace('_', '-')}", str(value))]
    work = []
    for name, seed, out in todo:
        spec_file = results / "final" / f"{name}.yaml"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(yaml.safe_dump(archs[name]["spec"], sort_keys=False))
        work.append((f"final {name} seed {seed}: composer train",
                     [sys.executable, "-m", "composer.cli", "train", str(spec_file), *flags, "--out", str(out),
                      "--seed", str(seed), "--no-progress"],
                     results / "final" / f"{name}-s{seed}.log", None, f"final {name} seed {seed}: trained"))
    _run_processes(work, jobs, env)


def _share_cores(jobs: int) -> tuple[int, dict]:
    """Threads per process when ``jobs`` processes share the machine's cores, and the environment that sets them."""
    import os

    threads = max(1, (os.cpu_count() or 2) // jobs)
    return threads, {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _run_processes(work: list[tuple[str, list[str], Path, str | None, str | None]], jobs: int, env: dict) -> None:
    """Run each (what, command, log, line at start, line at the end) of ``work``, ``jobs`` at a time, its output
    appended to its log; the first that fails stops the run (each is resumable, so rerunning continues)."""
    import subprocess

    queue, running = list(work), []
    while queue or running:
        while queue and len(running) < jobs:
            what, cmd, log_path, started, finished = queue.pop(0)
            log = open(log_path, "a")
            running.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), what, log_path,
                            finished, log))
            if started:
                print(f"[{time.strftime('%H:%M:%S')}] {started}", flush=True)
        time.sleep(1)
        for item in list(running):
            process, what, log_path, finished, log = item
            if process.poll() is None:
                continue
            running.remove(item)
            log.close()
            if process.returncode != 0:
                raise SystemExit(f"{what} exited {process.returncode}; see {log_path} (rerun to continue)")
            if finished:
                print(f"[{time.strftime('%H:%M:%S')}] {finished}", flush=True)


def _earlier_tests(archs: dict, base: Path, searches: Path) -> dict[str, float]:
    """For a variant that trains every architecture anew with another final schedule: each architecture's mean test
    top-1 under the schedule it had before (the picks' in the folder their searches came from, the hand layouts'
    and random architectures' in the first run), where those bundles were tested."""
    out = {}
    for name, arch in archs.items():
        home = searches if arch["method"] in ("composer", "random-search") else base
        tests = [json.loads(f.read_text())["test"] for f in sorted((home / "final").glob(f"{name}-s*/test.json"))]
        if tests:
            out[name] = statistics.fmean(tests)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def report(results: Path, archs: dict, trials_seen: list[dict], scale: dict, proxies: list[dict],
           partial: bool = False, earlier: dict[str, float] | None = None) -> str:
    """results.json, results.md (returned) and the plot, into ``results``. ``earlier``: each architecture's mean test
    top-1 under an earlier final schedule, ranked against this one's (Kendall tau)."""
    from scipy.stats import kendalltau

    rand = [r["test"] for a in archs.values() if a["method"] == "random-arch" for r in a["runs"]]
    rand_mean = statistics.fmean(rand) if rand else float("nan")
    methods: dict[str, list] = {}
    for name, arch in archs.items():
        key = arch["method"] if arch["method"] in ("composer", "random-search", "random-arch") else name
        methods.setdefault(key, []).append(arch)
    rows = []
    for key, members in methods.items():
        tests = [r["test"] for a in members for r in a["runs"]]
        mean, std = _mean_std(tests)
        rows.append({"method": key, "test_mean": mean, "test_std": std, "runs": len(tests),
                     "params": statistics.fmean(a["params"] for a in members),
                     "macs": statistics.fmean(a["macs"] for a in members),
                     "cpu_latency_ms": statistics.fmean(a["cpu_latency_ms"] for a in members),
                     "relative_improvement_pct": 100 * (mean - rand_mean) / rand_mean if rand else None,
                     "search_cpu_hours": sum(a.get("cpu_hours", 0.0) for a in members) or None})
    verdict = _verdict(rows)
    pairs = [(a["search_val"], statistics.fmean(r["test"] for r in a["runs"])) for a in archs.values()]
    tau = kendalltau([p[0] for p in pairs], [p[1] for p in pairs]).statistic if len(pairs) > 2 else float("nan")
    both = [n for n in archs if earlier and n in earlier]
    tau_earlier = kendalltau([earlier[n] for n in both], [statistics.fmean(r["test"] for r in archs[n]["runs"])
                                                          for n in both]).statistic if len(both) > 2 else None
    out = {"scale": scale, "methods": rows, "verdict": verdict, "kendall_tau_search_val_vs_test": tau,
           "kendall_tau_earlier_final_vs_test": tau_earlier, "earlier_final_test": earlier,
           "proxy_check": proxies,
           "published": PUBLISHED,
           "architectures": archs, "trials": trials_seen}
    stem = "results-partial" if partial else "results"   # a partial report never stands in for the full one
    out["partial"] = partial
    (results / f"{stem}.json").write_text(json.dumps(out, indent=2, default=str))
    lines = ["| method | test top-1 (mean ± std) | runs | params | MMACs | CPU ms | vs random archs | search "
             "CPU-h |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["test_mean"]):
        ri = f"{r['relative_improvement_pct']:+.2f}%" if r["relative_improvement_pct"] is not None else ""
        cost = f"{r['search_cpu_hours']:.2f}" if r["search_cpu_hours"] else ""
        lines.append(f"| {r['method']} | {100 * r['test_mean']:.2f} ± {100 * r['test_std']:.2f} | {r['runs']} | "
                     f"{r['params'] / 1e6:.3f}M | {r['macs'] / 1e6:.2f} | {r['cpu_latency_ms']:.2f} | {ri} | {cost} |")
    for name, (acc, params) in PUBLISHED.items():
        lines.append(f"| {name} (published) | {acc:.1f} | | {f'{params}M' if params else ''} | | | | |")
    lines.append(f"\nKendall tau, search-time validation accuracy vs final test accuracy over {len(pairs)} "
                 f"retrained architectures: {tau:+.3f}" if not math.isnan(tau) else "")
    if tau_earlier is not None:
        lines.append(f"\nKendall tau, test accuracy after the earlier final schedule vs this one over {len(both)} "
                     f"architectures: {tau_earlier:+.3f}")
    lines.append("\nproxy-check (the same space and data): " + ", ".join(
        f"{p['proxy']} tau {p['kendall_tau']:+.2f}" for p in proxies if not math.isnan(p["kendall_tau"])))
    lines.append("")
    lines += [f"- {v['line']}" for v in verdict]
    lines += ["", "Every retrained architecture (search val: the search schedule's validation top-1; test: one "
              "evaluation per final seed):", "",
              "| architecture | method | layout | depths | widths | params | MMACs | search val | test top-1 per "
              "seed |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, arch in sorted(archs.items(), key=lambda kv: -statistics.fmean(r["test"] for r in kv[1]["runs"])):
        spec = arch["spec"]
        tests = ", ".join(f"{100 * r['test']:.2f}" for r in sorted(arch["runs"], key=lambda r: r["seed"]))
        lines.append(f"| {name} | {arch['method']} | {_layout(spec)} | {'-'.join(map(str, spec['depths']))} | "
                     f"{'-'.join(map(str, spec['widths']))} | {arch['params'] / 1e6:.3f}M | {arch['macs'] / 1e6:.2f} | "
                     f"{100 * arch['search_val']:.2f} | {tests} |")
    if partial:
        lines.insert(0, "PARTIAL: only the final trainings finished so far (runs column); CPU latency not measured\n")
    text = "\n".join(lines) + "\n"
    (results / f"{stem}.md").write_text(text)
    _plot(results / f"{'accuracy_vs_macs-partial' if partial else 'accuracy_vs_macs'}.png", archs, trials_seen)
    print(text, flush=True)
    return text


def _per_stage(value) -> str:
    """One value, or one per stage: ``7`` or ``7-7-3``."""
    return "-".join(map(str, value)) if isinstance(value, list) else str(value)


def _layout(spec: dict) -> str:
    """A spec's per-stage mixers, compactly: ``Conv-A-A``; a mixed stage as ``Conv×2+A×2`` (its depth is the depths
    column's); gnConv's orders and the conv kernel where the spec sets them."""
    stages = spec["layout"] if isinstance(spec["layout"], list) else spec["layout"].split("-")
    out = []
    for stage in stages:
        runs = [(stage, 1)] if isinstance(stage, str) else [(k, len(list(g))) for k, g in itertools.groupby(stage)]
        out.append(runs[0][0] if len(runs) == 1 else "+".join(f"{k}×{n}" if n > 1 else k for k, n in runs))
    text = "-".join(out)
    mixers = spec.get("mixers") or {}
    if "gnConv" in text and "order" in mixers.get("gnConv", {}):
        text += f" (orders {_per_stage(mixers['gnConv']['order'])})"
    if "Conv" in text.replace("gnConv", "") and "kernel_size" in mixers.get("Conv", {}):
        text += f" (k{_per_stage(mixers['Conv']['kernel_size'])})"
    return text


def _verdict(rows: list[dict]) -> list[dict]:
    """The protocol's goal, row by row: composer's pick above random search's pick and above the best hand layout
    (by test mean) by more than the seeds' standard deviation (the larger of the two methods' std over their
    final runs)."""
    by = {r["method"]: r for r in rows}
    if "composer" not in by:
        return []
    hand = [r for r in rows if r["method"] not in ("composer", "random-search", "random-arch")]
    rivals = [("random search's picks", by.get("random-search"))]
    if hand:
        best = max(hand, key=lambda r: r["test_mean"])
        rivals.append((f"the best hand layout ({best['method']})", best))
    if "random-arch" in by:
        rivals.append(("the random architectures' mean", by["random-arch"]))
    c, out = by["composer"], []
    for what, r in rivals:
        if r is None:
            continue
        diff, std = c["test_mean"] - r["test_mean"], max(c["test_std"], r["test_std"])
        won = diff > std
        out.append({"against": r["method"], "difference": diff, "std": std, "won": won,
                    "line": f"composer's picks vs {what}: {100 * diff:+.2f} points of test top-1, the seeds' std "
                            f"{100 * std:.2f}: {'won' if won else 'not won'} (goal: more than the std)"})
    return out


MARKERS = ("<!-- search-quality results begin -->", "<!-- search-quality results end -->")


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between MARKERS in ``path`` with ``text`` (the docs' results section)."""
    doc = path.read_text()
    begin, end = doc.index(MARKERS[0]) + len(MARKERS[0]), doc.index(MARKERS[1])
    path.write_text(doc[:begin] + "\n" + text.rstrip("\n") + "\n" + doc[end:])


def _plot(path: Path, archs: dict, trials_seen: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, marker in (("composer", "o"), ("random-search", "x")):
        pts = [(t["macs"] / 1e6, t["val"]) for t in trials_seen if t["method"] == method]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, s=18, label=f"{method} trials (validation)")
    front, best = [], -1.0
    for macs, val in sorted((t["macs"] / 1e6, t["val"]) for t in trials_seen):
        if val > best:
            front.append((macs, val))
            best = val
    if front:
        ax.step(*zip(*front), where="post", color="grey", lw=1, label="front")
    for name, arch in archs.items():
        if arch["method"] == "hand":
            ax.scatter(arch["macs"] / 1e6, arch["search_val"], marker="*", s=90)
            ax.annotate(name, (arch["macs"] / 1e6, arch["search_val"]), fontsize=7)
    ax.set_xlabel("MMACs")
    ax.set_ylabel("validation top-1 (search schedule)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
