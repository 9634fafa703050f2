"""``composer build | validate | list | search``: the command line.

Every problem with user input ends with exit code 2 and a message naming file:line and field; no
traceback. ``--debug`` shows tracebacks for bug reports.
"""

from __future__ import annotations

import argparse
import sys

from .spec import SpecError

EXIT_USAGE = 2


def _cmd_build(args) -> int:
    from .build import build
    from .plan import plan
    from .report import stage_table

    p = plan(args.spec)
    print(stage_table(p))
    model = build(p)
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
    from .plan import estimate

    for source in args.specs:
        est = estimate(source)
        print(f"ok  {source}: {est}")
    return 0


def _cmd_list(args) -> int:
    from .macro import MACROS
    from .mixers import MIXERS, SYMBOLS
    from .plan import estimate
    from .spec.source import preset_names

    print("presets (specs/):")
    for name in preset_names():
        try:
            est = estimate(name)
            print(f"  {name:<24} {est.params / 1e6:8.2f}M params  {est.macs / 1e9:7.3f} GMACs")
        except SpecError as exc:
            print(f"  {name:<24} invalid: {str(exc).splitlines()[0]}")
    print("\nmixer symbols:")
    for symbol in sorted(SYMBOLS):
        for macro, entry in sorted(SYMBOLS[symbol].items(), key=lambda kv: kv[0] or ""):
            scope = f" (macro {macro})" if macro else ""
            extra = ", ".join(f"{k}={v}" for k, v in entry.defaults.items())
            print(f"  {symbol:<8} -> {entry.type}{'(' + extra + ')' if extra else ''}{scope}  {entry.doc}")
    print("\nmixer types and parameters (defaults):")
    for type_name, cls in sorted(MIXERS.items()):
        params = ", ".join(f"{k}={f.default!r}" for k, f in cls.model_fields.items() if k != "type") or "-"
        print(f"  {type_name:<14} {params}\n  {'':<14} {cls.summary}")
    print("\nmacros:")
    for name, macro in MACROS.items():
        print(f"  {name:<14} {macro.summary}")
    return 0


def _cmd_search(args) -> int:
    from .search import run

    argv = [a for a in (args.argv or []) if a]
    result = run(args.space, budget=args.budget, max_params=args.max_params, trials=args.trials,
                 objective=args.objective, seed=args.seed, storage=args.storage, run_dir=args.run_dir,
                 study_name=args.study_name, workers=args.workers, data=args.data, epochs=args.epochs,
                 proxy_size=args.proxy_size, proxy_batch=args.proxy_batch, heartbeat=args.heartbeat,
                 progress=not args.no_progress, report=not args.no_report, worker_index=args.worker_index,
                 argv=argv)
    return 0 if result.counters.over_budget_built == 0 else 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="composer", description="Vision backbones from YAML specs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="validate, build and print per-stage params/MACs")
    b.add_argument("spec", help="a spec file, a preset name or YAML text")
    b.add_argument("--count", action="store_true", help="also count MACs with the FLOP counter (meta device)")
    b.set_defaults(func=_cmd_build)
    v = sub.add_parser("validate", help="check specs without building them")
    v.add_argument("specs", nargs="+")
    v.set_defaults(func=_cmd_validate)
    ls = sub.add_parser("list", help="presets, mixer symbols with their parameters, macros")
    ls.set_defaults(func=_cmd_list)
    s = sub.add_parser("search", help="budgeted Optuna search over a search space (search/*.yaml)")
    s.add_argument("space", help="a search-space YAML file")
    s.add_argument("--budget", help="hard MAC budget, e.g. 5GFLOPs (a FLOP is a MAC here); default: the space's")
    s.add_argument("--max-params", help="hard parameter budget, e.g. 30M; default: the space's (or none)")
    s.add_argument("--trials", type=int, default=20, help="finished trials the study should hold (default 20)")
    s.add_argument("--objective", help="proxy | naswot | gradnorm | train, or several joined by commas with "
                                       "macs | params | latency for a Pareto search (default: the space's, or proxy)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--storage", help="Optuna storage URL (default: sqlite:///RUN_DIR/study.db)")
    s.add_argument("--run-dir", help="output folder (default: runs/SPACE-OBJECTIVE)")
    s.add_argument("--study-name", help="default: SPACE-OBJECTIVE")
    s.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (default 1)")
    s.add_argument("--data", default="digits", help="train: 'digits' (scikit-learn) or an ImageFolder path")
    s.add_argument("--epochs", type=int, default=3, help="train: epochs per trial (default 3)")
    s.add_argument("--proxy-size", type=int, default=64, help="proxy: input resolution for scoring (default 64)")
    s.add_argument("--proxy-batch", type=int, default=16, help="proxy: minibatch size (default 16)")
    s.add_argument("--heartbeat", type=float, default=5.0,
                   help="seconds between heartbeats; a trial silent for 3x this is failed and retried")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    s.add_argument("--worker-index", type=int, default=0,
                   help="this process's index among processes sharing one study (offsets the sampler seed)")
    s.set_defaults(func=_cmd_search)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    args.argv = raw
    try:
        return args.func(args)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in composer, not in the user's spec
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and "
              "please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
