"""Training throughput of composer's trial loop (composer.train: DataLoader, per-batch preparation on the device,
timm's optimizer / scheduler / loss), data loading included, against two references measured in the same run:

* ``plain``: a plain PyTorch loop written here: the same model, batch and optimizer (AdamW), the images already
  resized and normalized as one float tensor in memory, shuffled by ``randperm``;
* ``timm``: the same loop with timm's pieces by hand (``create_optimizer_v2``, ``create_scheduler_v2`` stepped per
  update, ``LabelSmoothingCrossEntropy``).

    python benchmarks/train_throughput.py [--data fashion-mnist] [--images 2000] [--batch 128] [--threads 2]

Each variant trains the same freshly initialised model (the base of tests/data/small_train_space.yaml, or
``--spec``) for one epoch over ``--images`` images after one untimed warm-up epoch; img/s counts training steps only
(composer's validation pass is excluded, its loader is not). Variants of composer's loop: augmentation off (the
references' work) and on (the default, ``light``), ``--loader-workers`` 0 and 2, channels-last; with ``--compile``,
the plain loop also channels-last and under ``torch.compile``. Every variant is timed ``--repeats`` times, round-robin,
and its median reported with the spread; ratios are of medians against ``plain`` from the same run (one epoch per
timing is a few seconds: single timings swung 1.7x between two runs on a quiet machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _model(spec):
    from composer import compose

    torch.manual_seed(0)
    return compose(spec)


def plain_loop(spec, x, y, batch: int, lr: float, use_timm: bool, compile_model: bool = False,
               channels_last: bool = False) -> float:
    model = _model(spec)
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_model else model   # compiled in the warm-up epoch
    if use_timm:
        from timm.loss import LabelSmoothingCrossEntropy
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        opt = create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=0.05)
        updates = len(y) // batch
        sched, _ = create_scheduler_v2(opt, num_epochs=2, warmup_epochs=0, step_on_epochs=False,
                                       updates_per_epoch=updates)
        loss_fn = LabelSmoothingCrossEntropy(0.1)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
        sched, loss_fn = None, F.cross_entropy
    seconds = []
    step = 0
    for _ in range(2):   # the first epoch warms up
        t0 = time.perf_counter()
        perm = torch.randperm(len(y))
        seen = 0
        for i in range(0, len(perm) - batch + 1, batch):
            idx = perm[i:i + batch]
            loss = loss_fn(step_model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if sched is not None:
                sched.step_update(step)
            seen += len(idx)
        seconds.append(seen / (time.perf_counter() - t0))
    return seconds[-1]


def composer_loop(spec, training, augment: str, workers: int, channels_last: bool) -> float:
    from composer.train.loop import train

    settings = training.settings.model_copy(update={
        "loader_workers": workers, "channels_last": channels_last,
        "recipe": training.settings.recipe.model_copy(update={"epochs": 2, "augment": augment})})
    model = _model(spec)
    result = train(model, training.source, training.splits, settings, size=training.size, in_chans=model.in_chans,
                   seed=0)
    return result.history[-1].img_per_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spec", default=str(REPO / "tests" / "data" / "small_train_space.yaml"))
    ap.add_argument("--quick", action="store_true", help="digits, 300 images, batch 64 (a smoke test)")
    ap.add_argument("--repeats", type=int, default=3, help="each variant timed this many times, round-robin; "
                                                         "medians are reported (default 3)")
    ap.add_argument("--compile", action="store_true", help="also the plain loop with torch.compile (inductor; its "
                                                           "compilation falls in the untimed warm-up epoch) and "
                                                           "channels-last")
    args = ap.parse_args()
    if args.quick:
        args.data, args.images, args.batch = "digits", 300, 64
    torch.set_num_threads(args.threads)
    from composer.search import load_space
    from composer.train import TrainSettings
    from composer.train.data import BatchPrep, make_loader
    from composer.train.trial import prepare

    space = load_space(args.spec)
    settings = TrainSettings(data=args.data, subset=args.images, val_fraction=0.05,
                             recipe={"train_batch": args.batch, "epochs": 2})
    training = prepare(settings, space.base, seed=0)
    spec = dict(space.base_data, num_classes=training.source.num_classes, in_chans=training.source.in_chans)
    spec, _ = space.at_size(spec, training.size)
    # the references' data: the same images, prepared once, held in memory as one float tensor
    prep = BatchPrep(training.source, training.size, training.source.in_chans, "cpu", "none")
    loader = make_loader(training.source, training.source.train, training.splits.train, size=training.size,
                         batch=4096, train=False, seed=0, workers=0)
    xs, ys = zip(*((prep(x, train=False), y) for x, y, _ in loader))
    x, y = torch.cat(xs), torch.cat(ys)
    print(f"{args.data}: {len(y)} images at {training.size} px, batch {args.batch}, {args.threads} threads, torch "
          f"{torch.__version__}; model {space.name} base ({sum(p.numel() for p in _model(spec).parameters()):,} "
          "params)")
    lr = settings.recipe.lr
    variants = [("plain PyTorch loop, data in memory", lambda: plain_loop(spec, x, y, args.batch, lr, False)),
                ("timm's pieces by hand, data in memory", lambda: plain_loop(spec, x, y, args.batch, lr, True))]
    if args.compile:
        variants += [("plain PyTorch loop, channels-last",
                      lambda: plain_loop(spec, x, y, args.batch, lr, False, channels_last=True)),
                     ("plain PyTorch loop, torch.compile",
                      lambda: plain_loop(spec, x, y, args.batch, lr, False, compile_model=True))]
    composer_from = len(variants)
    for augment, workers, cl in (("none", 0, False), ("light", 0, False), ("none", 2, False), ("none", 0, True)):
        label = f"composer.train, augment {augment}, loader workers {workers}{', channels-last' if cl else ''}"
        variants.append((label, lambda a=augment, w=workers, c=cl: composer_loop(spec, training, a, w, c)))
    # round-robin repeats: a noisy minute then slows every variant once rather than one variant every time
    rates: dict[str, list[float]] = {label: [] for label, _ in variants}
    for _ in range(args.repeats):
        for label, measure in variants:
            rates[label].append(measure())
    median = {label: statistics.median(r) for label, r in rates.items()}
    plain = median[variants[0][0]]
    width = max(len(label) for label in rates)
    for label, r in rates.items():
        spread = f"  ({min(r):.0f}-{max(r):.0f} over {len(r)} repeats)" if len(r) > 1 else ""
        print(f"{label:<{width}}  {median[label]:8.0f} img/s  {median[label] / plain:5.2f}x plain{spread}")
    ratios = [median[label] / plain for label, _ in variants[composer_from:]]
    print(f"median ratio of composer's variants: {statistics.median(ratios):.2f}x (medians of {args.repeats} "
          "repeats each)")


if __name__ == "__main__":
    main()
