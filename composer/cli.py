"""``composer build | validate | list | search | sweep | proxy-check | train | eval | latency | check-mixer | schema |
graph | profile``: the command line.

Every problem with user input ends with exit code 2 and a message naming file:line and field; no
traceback. ``--debug`` shows tracebacks for bug reports. Start-up stays light: a command imports torch, timm,
networkx, matplotlib or Optuna only when it needs them (``validate``, ``list``, ``schema`` need none).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .search.settings import add_flags as add_search_flags
from .spec import SpecError
from .spec.units import GMACS_HEADER, format_count, gmacs_cell, params_cell
from .train.recipe import add_flags as add_train_flags
from .train.recipe import flag_values as train_flag_values

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad argument (output path, format, batch sizes, device): exit code 2 with the message, as a SpecError."""


def _cmd_build(args) -> int:
    from .plan import plan
    from .report import stage_table

    p = plan(args.spec)  # validated before torch is imported: a bad spec fails as fast as `composer validate`
    print(stage_table(p))
    from .composed import build

    model = build(p, check_memory=not args.ignore_memory)
    built = sum(t.numel() for t in model.parameters())
    est = p.estimate()
    status = "matches the plan" if built == est.params else f"DIFFERS from the plan's {est.params:,}"
    print(f"built {type(model).__name__}: {built:,} parameters ({status})")
    if args.count:
        from .cost import count_macs

        counted = count_macs(p.spec)
        diff = (counted.macs - est.macs) / max(est.macs, 1)
        print(f"counted (FlopCounterMode on meta, /2): {counted.macs:,} MACs ({diff:+.4%} vs plan)")
    return 0 if built == est.params else 1


def _cmd_validate(args) -> int:
    from .plan import estimate, memory_problem

    failed = 0
    for source in args.specs:  # every file is reported, not only up to the first invalid one
        try:
            est = estimate(source)
        except SpecError as exc:
            failed += 1
            print(exc.report(), file=sys.stderr)
            continue
        print(f"ok  {source}: {est}")
        too_big = memory_problem(est)
        if too_big is not None:  # valid, but this machine cannot build it: a warning, not a failure
            print(f"warning: {source}: {too_big}; composer build refuses it here", file=sys.stderr)
    if failed and len(args.specs) > 1:
        print(f"{failed} of {len(args.specs)} specs invalid", file=sys.stderr)
    return 2 if failed else 0


def _cmd_list(args) -> int:
    from .macro import MACROS
    from .mixers import MIXERS, SYMBOLS
    from .plan import estimate
    from .registry import COMPOSER, PLUGINS, load_plugins
    from .spec.source import preset_names, space_names, space_search_path, spec_search_path

    load_plugins()
    names, spaces = preset_names(), space_names()
    width = max(map(len, names + spaces), default=0)  # the longest name still leaves its column
    print(f"presets ({', '.join(str(f) for f in spec_search_path())}):")
    for name in names:
        try:
            est = estimate(name)
            print(f"  {name:<{width}}  {params_cell(est.params):>11} params  {gmacs_cell(est.macs):>7} {GMACS_HEADER}")
        except SpecError as exc:
            print(f"  {name:<{width}}  invalid: {str(exc).splitlines()[0]}")
    print("\nmixer symbols:")
    for symbol in sorted(SYMBOLS):
        for macro, entry in sorted(SYMBOLS[symbol].items(), key=lambda kv: kv[0] or ""):
            scope = f" (macro {macro})" if macro else ""
            extra = ", ".join(f"{k}={v}" for k, v in entry.defaults.items())
            print(f"  {symbol:<8} -> {entry.type}{'(' + extra + ')' if extra else ''}{scope}  {entry.doc}")
    print("\nmixer types and parameters (defaults):")
    for type_name, cls in sorted(MIXERS.items()):
        params = ", ".join(f"{k}={f.default!r}" for k, f in cls.model_fields.items() if k != "type") or "-"
        origin = MIXERS.origin(type_name)
        print(f"  {type_name:<14} {params}\n  {'':<14} {cls.summary}"
              + (f"\n  {'':<14} (registered by {origin})" if origin != COMPOSER else ""))
    print("\nmacros:")
    for name, macro in MACROS.items():
        print(f"  {name:<14} {macro.summary}")
    if PLUGINS:
        print("\nplugins (entry points):")
        for plugin in PLUGINS:
            state = f"NOT LOADED: {plugin.error}" if plugin.error else "loaded"
            print(f"  {plugin.group:<24} {plugin.name} = {plugin.value}  ({plugin.distribution}; {state})")
    print(f"\nsearch spaces ({', '.join(str(f) for f in space_search_path())}; composer search NAME):")
    from .search.space import DEFAULT_SPACE, load_space

    for name in spaces:
        try:
            space = load_space(name)
        except SpecError as exc:
            print(f"  {name:<{width}}  invalid: {str(exc).splitlines()[0]}")
            continue
        floor = f"{format_count(space.budget_min_macs)}-" if space.budget_min_macs else ""
        budget = f"budget {floor}{format_count(space.budget_macs)} MACs" if space.budget_macs else "no budget"
        default = " (the default of `composer search`)" if name == DEFAULT_SPACE else ""
        base = space.base.name or f"an inline {space.base.macro} spec"
        print(f"  {name:<{width}}  base {base}, {budget}, choices: "
              f"{', '.join(c.key for c in space.choices)}{default}")
    return 0


def _cmd_search(args) -> int:
    from .search import DEFAULT_SPACE, space_path

    space = args.space
    if space is None:
        space = DEFAULT_SPACE
        print(f"no search space given: searching the default space {DEFAULT_SPACE} ({space_path(space)}); "
              "`composer list` shows the others", flush=True)
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.train_size is not None and args.train_size < 1:
        raise UsageError(f"--train-size must be at least 1, got {args.train_size}")
    from .search import SearchSettings, run

    settings = SearchSettings.from_flags(args)
    _set_process_latency_settings(args)
    _note_old_batch_flag(args)
    result = run(space, settings, progress=not args.no_progress, report=not args.no_report,
                 argv=[a for a in (args.argv or []) if a])
    c = result.counters
    # a search whose objective raised on every trial it ran did not do what was asked
    return 0 if c.over_budget_built == 0 and not (c.objective_failed and c.objective_failed == c.built) else 1


LATENCY_BATCH_HELP = ("latency: the batch size predicted / timed (default 1); --batch-size is its old name "
                      "(--train-batch sets the training minibatch)")
FLUSH_DENORMAL_HELP = ("latency: flush denormal numbers to zero in this process (torch.set_flush_denormal), as a "
                       "deployment may; timed into a table of its own")
KEEP_FREED_MEMORY_HELP = ("latency on CPU: glibc's malloc keeps freed memory in this process instead of handing it "
                          "back to the OS (mallopt; as MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ would), so "
                          "a forward does not fault its big tensors in afresh; timed into a table of its own")


def _note_old_batch_flag(args) -> None:
    if any(a == "--batch-size" or a.startswith("--batch-size=") for a in (args.argv or []) if a):
        print("note: --batch-size is the latency batch, now spelled --latency-batch; the training minibatch is "
              "--train-batch", file=sys.stderr)


def _set_process_latency_settings(args) -> None:
    """--flush-denormal, --keep-freed-memory: the process's settings, so the parts, the measured models and --workers
    children (which get the same flags) all run with them; the latency fingerprint records them."""
    if getattr(args, "flush_denormal", False):
        import torch

        if not torch.set_flush_denormal(True):
            raise UsageError("--flush-denormal: this CPU cannot flush denormals to zero (no SSE3)")
    if getattr(args, "keep_freed_memory", False):
        from .latency import keep_freed_memory

        if not keep_freed_memory():
            raise UsageError("--keep-freed-memory: this process's malloc is not glibc's (musl, macOS, Windows, or a "
                             "preloaded jemalloc / tcmalloc / mimalloc); tune that allocator instead")


def _cmd_latency(args) -> int:
    from .latency import clear_tables, list_tables, predictor, tables_folder

    if args.tables or args.clear is not None:
        if args.spec is not None or args.retime or args.measure:
            raise UsageError("--tables and --clear take no SPEC, --retime or --measure")
        try:
            if args.tables:
                return _print_tables(list_tables(), tables_folder())
            removed = clear_tables(args.clear or None)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"removed {len(removed)} latency table{'s' * (len(removed) != 1)} from {tables_folder()}")
        return 0
    if args.spec is None:
        raise UsageError("composer latency: give a SPEC (a file, a preset name or YAML text), or --tables or --clear")
    _set_process_latency_settings(args)
    try:
        p = predictor(args.device, args.batch_size, args.threads)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    counted_before, seconds_before = p.measured, p.measure_seconds
    prediction = p.retime(args.spec) if args.retime else p.predict(args.spec)
    check = None if args.no_check else p.self_check(args.spec, prediction, force=args.measure)
    if check is not None:
        prediction = check.prediction
    fp = prediction.fingerprint
    print(f"{prediction.spec_name}: latency of one forward on {fp.describe()}")
    rows = prediction.by_stage() if not prediction.members else [
        (f"member {i} ({m.spec_name})", m.ms) for i, m in enumerate(prediction.members)]
    total = prediction.ms
    for label, ms in rows:
        print(f"  {label:<28} {ms:9.2f} ms  {ms / total:6.1%}")
    unsound = "  NOT SOUND: see the self-check" if check is not None and not check.agrees else ""
    print(f"  {'predicted':<28} {total:9.2f} ms  ({fp.batch_size / total * 1e3:.1f} img/s){unsound}")
    if check is not None and args.measure:
        print(f"  {'measured (fastest of 7)':<28} {check.measured:9.2f} ms  (prediction {total / check.measured:.2f}x "
              "the measured)")
    elif args.measure:  # an ensemble: no self-check
        from .latency import measure

        measured = measure(args.spec, args.device, args.batch_size, args.threads)
        print(f"  {'measured (fastest of 7)':<28} {measured:9.2f} ms  (prediction {total / measured:.2f}x the "
              "measured)")
    if check is not None:
        print(check.describe())
    timed_now, seconds = p.measured - counted_before, p.measure_seconds - seconds_before
    timed = f"; {timed_now} parts timed now in {seconds:.1f} s" if timed_now else ""
    suspect = prediction.suspect
    busy = f"; {len(suspect)} of this spec's parts timed while the machine was busy (suspect)" if suspect else ""
    print(f"table: {prediction.table_path} ({len(p.table)} parts{timed}{busy})")
    return 0


def _print_tables(tables, folder) -> int:
    import time

    if not tables:
        print(f"no latency tables in {folder}")
        return 0
    print(f"latency tables in {folder}:")
    print(f"  {'fingerprint':<16}  {'parts':>5}  {'suspect':>7}  {'age':>6}  {'last self-check':<26}  device")
    for t in tables:
        age = "?" if t.created is None else _age(time.time() - t.created)
        check = "never" if t.last_check is None else (
            f"{t.last_check.get('error', 0):+.1%} ({t.last_check.get('spec', '?')}"
            f"{'' if t.last_check.get('agrees') else ', disagrees'})")
        print(f"  {t.key:<16}  {t.parts:>5}  {t.suspect:>7}  {age:>6}  {check:<26}  {t.describe}")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


def _cmd_check_mixer(args) -> int:
    from .conformance import check_mixer
    from .registry import RegistryError

    try:
        report = check_mixer(args.symbol, [args.macro] if args.macro else None, quick=args.quick)
    except RegistryError as exc:
        raise UsageError(str(exc)) from None
    print(report.table(verbose=args.verbose))
    return 0 if report.ok else 1


def _cmd_sweep(args) -> int:
    from .search import SearchSettings
    from .search.sweep import sweep

    _set_process_latency_settings(args)
    _note_old_batch_flag(args)
    given = SearchSettings.from_flags(args).model_dump(exclude_unset=True)   # checked as composer search checks them
    result, _ = sweep(args.space, progress=not args.no_progress, **given)
    return 0 if result.counters.over_budget_built == 0 else 1


def _cmd_train(args) -> int:
    from .train.command import train_command

    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.top is not None:
        if args.top < 1:
            raise UsageError(f"--top must be at least 1, got {args.top}")
        if not args.from_run or args.spec:
            raise UsageError("--top K retrains a search's best trials: give --from-run RUN_DIR and no SPEC")
        from .train.command import train_best

        train_best(args.from_run, args.top, train_flag_values(args), seed=args.seed, test=args.test,
                   progress=not args.no_progress)
        return 0
    if args.test:
        raise UsageError("--test goes with --top (the leaderboard's test accuracy); evaluate one bundle with "
                         "composer eval DIR --split test")
    train_command(args.spec, train_flag_values(args), out=args.out, seed=args.seed, from_run=args.from_run,
                  progress=not args.no_progress)
    return 0


def _cmd_eval(args) -> int:
    from .train.command import eval_command

    eval_command(args.bundle, data=args.data, split=args.split, device=args.device, batch=args.batch, ema=args.ema,
                 out=args.output)
    return 0


def _cmd_proxy_check(args) -> int:
    from .search import SearchSettings
    from .search.proxy_check import proxy_check

    given = SearchSettings.from_flags(args).model_dump(exclude_unset=True)
    given["run_dir"] = args.run_dir   # proxy-check's own folder (default runs/SPACE-proxy-check)
    proxy_check(args.space, samples=args.samples, latency=args.latency, **given)
    return 0


def _writable(path: str) -> Path:
    """An ``-o`` file: checked through composer.paths (its folder exists; no folder, FIFO, dangling link or name
    the OS refuses in its place) before anything is computed."""
    from .paths import At, writable_file

    return writable_file(path, At("--output"), "out.png")


def _write(out: Path, action) -> None:
    """Run ``action`` (which writes ``out``); a folder that refuses the file is a located error, not a crash."""
    from .paths import At, write

    write(out, At("--output"), action)


def _cmd_schema(args) -> int:
    import json

    from .schema import search_space_schema, spec_schema

    schema = search_space_schema() if args.search_space else spec_schema()
    text = json.dumps(schema, indent=2) + "\n"
    if args.output:
        out = _writable(args.output)
        _write(out, lambda: out.write_text(text))
        print(f"wrote {out} ({len(schema['definitions'])} definitions)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_graph(args) -> int:
    from .graph import SUFFIXES, to_dot, write
    from .plan import plan

    out = None
    if args.output:
        out = _writable(args.output)
        if out.suffix.lower() not in SUFFIXES:
            raise UsageError(f"cannot tell the format of {args.output}: use a file name ending in "
                             f"{', '.join(SUFFIXES)}")
    p = plan(args.spec)
    if out is None:
        sys.stdout.write(to_dot(p))
        return 0
    _write(out, lambda: write(p, out))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _cmd_profile(args) -> int:
    from .profile import parse_batch_sizes, profile, resolve_device

    try:
        sizes = parse_batch_sizes(args.batch_sizes)
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.warmup < 0 or args.iters < 1:
        raise UsageError(f"--warmup must be >= 0 and --iters >= 1, got {args.warmup} and {args.iters}")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.input_size is not None and args.input_size < 1:
        raise UsageError(f"--input-size must be a positive resolution, got {args.input_size}")
    result = profile(args.spec, sizes, str(device), args.input_size, args.warmup, args.iters,
                     args.specialize)
    print(result.table())
    return 0


def make_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="composer", description="Vision backbones from YAML specs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version",
                        version=f"composer {__version__} (the composer-vision distribution)")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="validate, build and print per-stage params/MACs")
    b.add_argument("spec", help="a spec file, a preset name or YAML text")
    b.add_argument("--count", action="store_true", help="also count MACs with the FLOP counter (meta device)")
    b.add_argument("--ignore-memory", action="store_true",
                   help="build even when parameters + batch-1 activations exceed this machine's available memory")
    b.set_defaults(func=_cmd_build)
    v = sub.add_parser("validate", help="check specs without building them")
    v.add_argument("specs", nargs="+")
    v.set_defaults(func=_cmd_validate)
    ls = sub.add_parser("list", help="presets, mixer symbols with their parameters, macros, search spaces")
    ls.set_defaults(func=_cmd_list)
    s = sub.add_parser("search", help="budgeted Optuna search over a search space (search/*.yaml)")
    s.add_argument("space", nargs="?", help="a search-space YAML file or the name of one (composer list shows "
                                            "them; default: metaformer_s18)")
    add_search_flags(s)   # composer.search.settings.SearchSettings' fields, each with its own help
    s.add_argument("--flush-denormal", action="store_true", help=FLUSH_DENORMAL_HELP)
    s.add_argument("--keep-freed-memory", action="store_true", help=KEEP_FREED_MEMORY_HELP)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    add_train_flags(s)
    s.set_defaults(func=_cmd_search)
    la = sub.add_parser("latency", help="latency predicted on this device from timed parts (and --measure)")
    la.add_argument("spec", nargs="?", help="a spec file, a preset name or YAML text")
    la.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    la.add_argument("--batch-size", type=int, default=1, help="default 1")
    la.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    la.add_argument("--measure", action="store_true",
                    help="also time the whole built model (the self-check: parts re-timed when they disagree)")
    la.add_argument("--retime", action="store_true",
                    help="time the spec's parts again, replacing the table's timings (after a busy spell)")
    la.add_argument("--no-check", action="store_true",
                    help="trust the table: no whole-model self-check, even for a new table or suspect parts")
    la.add_argument("--tables", action="store_true",
                    help="list the latency tables: fingerprint, parts, suspect parts, age, last self-check")
    la.add_argument("--clear", nargs="?", const="", metavar="FINGERPRINT",
                    help="remove every latency table, or the one with this fingerprint (composer latency --tables)")
    la.add_argument("--flush-denormal", action="store_true", help=FLUSH_DENORMAL_HELP)
    la.add_argument("--keep-freed-memory", action="store_true", help=KEEP_FREED_MEMORY_HELP)
    la.set_defaults(func=_cmd_latency)
    cm = sub.add_parser("check-mixer", help="the conformance kit: a mixer in every stage of every macro, params, "
                                            "MACs, forward/backward, checks, YAML/schema, state dict, jit/fx")
    cm.add_argument("symbol", help="a layout symbol (Hpx, gnConv, ...) or a mixer type (composer list shows them)")
    cm.add_argument("--macro", help="check in this macro only (default: every registered macro)")
    cm.add_argument("--quick", action="store_true", help="one macro (unified, or --macro), no TorchScript / FX")
    cm.add_argument("--verbose", "-v", action="store_true", help="one line per check and place")
    cm.set_defaults(func=_cmd_check_mixer)
    sw = sub.add_parser("sweep", help="every combination of a space's choices as a table (a paper's ablation)")
    sw.add_argument("space", help="a search-space YAML file or the name of one (composer list)")
    add_search_flags(sw, ["objective", "direction", "budget", "max_params", "max_latency", "latency_batch",
                          "run_dir", "storage", "study_name", "seed", "proxy_size", "proxy_batch"], help={
        "objective": "default macs: nothing is built, the table has params / MACs / FFT MACs; proxy, train, latency "
                     "or module:function evaluate every point",
        "direction": "for a module:function objective",
        "budget": "mark points over this MAC budget (default: the space's, or none)",
        "max_params": "mark points over this parameter budget",
        "max_latency": "mark points over this predicted latency (e.g. 25ms)",
        "run_dir": "output folder (default: runs/SPACE-sweep)", "study_name": "default: SPACE-sweep"})
    sw.add_argument("--flush-denormal", action="store_true", help=FLUSH_DENORMAL_HELP)
    sw.add_argument("--keep-freed-memory", action="store_true", help=KEEP_FREED_MEMORY_HELP)
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_train_flags(sw)
    sw.set_defaults(func=_cmd_sweep)
    pc = sub.add_parser("proxy-check", help="train random samples of a space briefly: how well each training-free "
                                            "proxy ranks them (Kendall tau, Spearman rho, plot, CSV)")
    pc.add_argument("space", help="a search-space YAML file or the name of one (composer list)")
    pc.add_argument("--samples", type=int, default=20, help="random architectures trained (default 20)")
    add_search_flags(pc, ["seed", "proxy_size", "proxy_batch", "budget", "min_macs", "max_params"], help={
        "budget": "draw samples within this MAC budget (default: the space's, or none)",
        "min_macs": "draw samples at or above this MAC floor (default: the space's, or none)",
        "max_params": "draw samples within this parameter budget", "seed": "seed of the samples drawn (default 0)"})
    pc.add_argument("--latency", action="store_true", help="also the latency predicted on this CPU (batch 1)")
    pc.add_argument("--run-dir", help="output folder (default: runs/SPACE-proxy-check)")
    add_train_flags(pc)
    pc.set_defaults(func=_cmd_proxy_check)
    tr = sub.add_parser("train", help="train one architecture (a spec, a preset, a run's best.yaml) into a bundle: "
                                      "spec, weights, metrics, curves; resumable; torchrun for several processes")
    tr.add_argument("spec", nargs="?", help="a spec file, a preset name or a run's best.yaml (default with --from-run: "
                                            "the run's best.yaml)")
    tr.add_argument("--out", help="the bundle's folder (default: runs/train-NAME)")
    tr.add_argument("--from-run", help="a search's run directory: its data, split and recipe (flags override them)")
    tr.add_argument("--top", type=int, help="with --from-run: retrain the search's K best feasible trials, each into "
                                            "RUN_DIR/train/trialN, and write RUN_DIR/leaderboard.csv")
    tr.add_argument("--test", action="store_true", help="with --top: also the test split's accuracy in the "
                                                        "leaderboard (the only place a test split is read)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_train_flags(tr)
    tr.set_defaults(func=_cmd_train)
    ev = sub.add_parser("eval", help="evaluate a bundle (composer train's folder) on its validation split or a test "
                                     "split: top-1 / top-5, per-class accuracy, img/s, confusion matrix")
    ev.add_argument("bundle", help="the folder composer train wrote")
    ev.add_argument("--split", choices=("val", "test"), default="val",
                    help="val: the split held out in training (reproduces its last accuracy); test: the data set's "
                         "test split, read here and nowhere else (default val)")
    ev.add_argument("--data", help="the data set (default: the one the bundle was trained on)")
    ev.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | mps (default cpu)")
    ev.add_argument("--batch", type=int, help="evaluation batch (default: twice the training batch)")
    ev.add_argument("--ema", action="store_true", help="the EMA weights (model_ema.safetensors)")
    ev.add_argument("--output", "-o", help="the confusion-matrix PNG (default: BUNDLE/confusion_SPLIT.png)")
    ev.set_defaults(func=_cmd_eval)
    sc = sub.add_parser("schema", help="JSON Schema of spec files (or search spaces) for editors")
    sc.add_argument("--output", "-o", help="write to FILE instead of printing")
    sc.add_argument("--search-space", action="store_true", help="the schema of search-space files (search/*.yaml)")
    sc.set_defaults(func=_cmd_schema)
    g = sub.add_parser("graph", help="the Plan as a picture (.png/.svg/.pdf) or as GraphML / DOT")
    g.add_argument("spec", help="a spec file, a preset name or YAML text")
    g.add_argument("--output", "-o", help="out.png | out.svg | out.pdf | out.graphml | out.dot (default: DOT on "
                                          "stdout)")
    g.set_defaults(func=_cmd_graph)
    pr = sub.add_parser("profile", help="measured latency / throughput beside the analytic MACs")
    pr.add_argument("spec", help="a spec file, a preset name or YAML text")
    pr.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes (default 1,8)")
    pr.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default: cuda if available)")
    pr.add_argument("--input-size", type=int, help="resolution to compile and time at (default: the spec's)")
    pr.add_argument("--warmup", type=int, default=3, help="untimed forwards per batch size (default 3)")
    pr.add_argument("--iters", type=int, default=10, help="timed forwards per batch size; the median is reported "
                                                         "(default 10)")
    pr.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's; 1 gives steadier "
                                                "timings on a busy machine)")
    pr.add_argument("--no-specialize", dest="specialize", action="store_false",
                    help="time the general build: plain convolutions throughout, none built for its map size "
                         "(docs/small-images.md)")
    pr.set_defaults(func=_cmd_profile)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    args.argv = raw
    try:
        return args.func(args)
    except (SpecError, UsageError) as exc:
        print(exc.report() if isinstance(exc, SpecError) else f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (composer list | head): stop quietly, as Unix tools do on SIGPIPE; stdout goes to
        # /dev/null so that Python's flush at exit does not raise again
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug in composer, not in the user's spec
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and "
              "please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
