"""Small-image speed (docs/small-images.md): inference and training images/s of small models at 32 and 64 px (224
with ``--sizes``), composer's shape-specialized build against its general build and against timm's model of the
same architecture holding the same weights, all measured in one run, interleaved round by round (so a machine
that speeds up or slows down mid-run affects every variant alike). Prints the ratios and each cell's spread
(max - min over the rounds, as a share of the median): the noise of a shared machine. No assertions.

Families: ConvFormer and CAFormer (timm's MetaFormer), InceptionNeXt (timm's MetaNeXt, ConvNeXt's macro design),
FocalNet and LowFormer (timm's), HorNet (gnConv: timm has no HorNet, so only specialized vs general). Small
widths, the models' own depths shortened.

    python benchmarks/small_image_speed.py [--quick] [--threads 2] [--sizes 32 64] [--batches 1 128]
        [--rounds 3] [--families convformer hornet ...] [--modes infer train] [--compile] [--device cuda]
        [--conv-paths-measured]

``--conv-paths-measured`` adds, in training on the CPU, a copy of the specialized model whose depthwise
convolutions' training paths were timed at that batch on this machine (``--conv-paths measured``,
composer.train.conv_paths; timings kept in the latency cache, so a second run reads them) and its ratio to the
rules' choice.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import composer
from composer.train.conv_paths import choose_conv_paths
from composer.weights import load

NUM_CLASSES = 10


@dataclass
class Family:
    spec: dict
    timm: Callable[[int], torch.nn.Module] | None   # the timm model at an input size, or None (timm has none)


def _metaformer(token_mixers, norm_layers, dims, depths):
    def make(size: int):
        from timm.models.metaformer import MetaFormer
        return MetaFormer(depths=depths, dims=dims, token_mixers=token_mixers, norm_layers=norm_layers,
                          num_classes=NUM_CLASSES)
    return make


def families() -> dict[str, Family]:
    import timm
    from timm.models.focalnet import FocalNet
    from timm.models.metaformer import Attention, LayerNorm2dNoBias, LayerNormNoBias, SepConv

    dims, depths = (32, 64, 128, 256), (2, 2, 4, 2)
    return {
        "convformer": Family({"extends": "convformer_s18", "widths": list(dims), "depths": list(depths)},
                             _metaformer(SepConv, LayerNorm2dNoBias, dims, depths)),
        "caformer": Family({"extends": "caformer_s18", "widths": list(dims), "depths": list(depths),
                            "mixers": {"A": {"head_dim": 32}}},
                           _metaformer([SepConv, SepConv, Attention, Attention],
                                       [LayerNorm2dNoBias] * 2 + [LayerNormNoBias] * 2, dims, depths)),
        "inception_next": Family({"extends": "inception_next_atto", "depths": list(depths)},
                                 lambda size: timm.create_model("inception_next_atto", depths=depths,
                                                                num_classes=NUM_CLASSES)),
        "focalnet": Family({"extends": "focalnet_tiny_srf", "widths": list(dims), "depths": list(depths)},
                           lambda size: FocalNet(embed_dim=dims[0], depths=depths, num_classes=NUM_CLASSES)),
        "lowformer": Family({"extends": "lowformer_b0"},
                            lambda size: timm.create_model("lowformer_b0", num_classes=NUM_CLASSES)),
        "hornet": Family({"extends": "hornet_tiny_7x7", "widths": list(dims), "depths": list(depths)}, None),
    }


def variants(family: Family, size: int, compiled: bool = False) -> dict[str, torch.nn.Module]:
    """The specialized and general composer models and timm's, all holding the same weights; ``compiled``: also
    ``torch.compile`` of a copy of the specialized one (compiled in its warm-up call, which is not timed)."""
    spec = {**family.spec, "input_size": size, "num_classes": NUM_CLASSES}
    torch.manual_seed(0)
    models = {"specialized": composer.compose(spec), "general": composer.compose(spec, specialize=False)}
    if family.timm is not None:
        models["timm"] = family.timm(size)
        load(models["specialized"], models["timm"].state_dict(), source="timm")
    models["general"].load_state_dict(models["specialized"].state_dict(), strict=True)
    if compiled:
        torch._dynamo.reset()   # a fresh cache per family and size: no recompile limit reached, no eager fallback
        models["compiled"] = torch.compile(copy.deepcopy(models["specialized"]))
    return models


def _step(model: torch.nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor, opt) -> Callable[[], None]:
    if mode == "infer":
        model.eval()

        def run():
            with torch.inference_mode():
                model(x)
    else:
        model.train()

        def run():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return run


def measure(models: dict[str, torch.nn.Module], mode: str, size: int, batch: int, rounds: int,
            device: torch.device | None = None) -> dict[str, list[float]]:
    """Seconds per call of each model, ``rounds`` interleaved rounds after one warm-up call each (on a GPU each
    call is synchronized before its time is read)."""
    device = device or torch.device("cpu")
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = {}
    for name, model in models.items():
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9) if mode == "train" else None
        steps[name] = _step(model, mode, x, y, opt)
        steps[name]()   # warm-up (oneDNN / cuDNN primitives, allocator)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


RATIOS = {"general": ("general", "specialized"), "timm": ("timm", "specialized"),
          "compiled": ("specialized", "compiled"), "measured": ("specialized", "measured")}
"""Each ratio's (slower, faster) pair: the specialized model's speed over the general one's and timm's; the compiled
and the measured-paths model's over the specialized one's (sp/gen, sp/timm, co/sp, me/sp)."""


def paired_ratio(slower: list[float], faster: list[float]) -> tuple[float, float]:
    """Speed ratio of the ``faster`` column over the ``slower`` one (time / time), round by round: (median, lowest).
    Each round times every model once, back to back, so a machine that slows down mid-run scales both times of a
    round alike and their ratio keeps; the median of the rounds' ratios is steadier than the ratio of medians."""
    ratios = sorted(s / f for s, f in zip(slower, faster))
    return statistics.median(ratios), ratios[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 px, batches 1 and 32, 2 rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 128])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    parser.add_argument("--families", nargs="+", default=None)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--compile", action="store_true",
                        help="also torch.compile of the specialized model (its first call, compiling, is not timed)")
    parser.add_argument("--conv-paths-measured", action="store_true",
                        help="in training on the CPU, also the specialized model with its depthwise convolutions' "
                             "training paths measured on this machine (composer train --conv-paths measured)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.batches, args.rounds = [32], [1, 32], 2
    torch.set_num_threads(args.threads)
    known = families()
    chosen = args.families or list(known)
    unknown = [f for f in chosen if f not in known]
    if unknown:
        parser.error(f"--families: unknown {unknown}; known: {', '.join(known)}")
    device = torch.device(args.device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads")
    print(f"{where}, torch {torch.__version__}, median of {args.rounds} interleaved rounds after a warm-up; load "
          f"{os.getloadavg()[0]:.2f} at the start")
    print(f"{'family':<15}{'px':>4}{'batch':>6}{'mode':>6}{'special':>9}{'general':>9}{'timm':>9}"
          f"{'sp/gen':>8}{'sp/timm':>8}{'spread':>8}{'low':>7}"
          + (f"{'compiled':>9}{'co/sp':>7}" if args.compile else "")
          + (f"{'measured':>9}{'me/sp':>7}" if args.conv_paths_measured else "")
          + "  (img/s; ratios: the median of the rounds' own ratios; spread = worst (max-min)/median of a model's "
            "times; low = the lowest round's sp/timm, or sp/gen without timm)")
    spreads = []
    for family in chosen:
        for size in args.sizes:
            models = {k: m.to(device) for k, m in variants(known[family], size, args.compile).items()}
            for batch in args.batches:
                for mode in args.modes:
                    models.pop("measured", None)
                    if args.conv_paths_measured and mode == "train" and device.type == "cpu":
                        models["measured"] = copy.deepcopy(models["specialized"])
                        chosen_paths = choose_conv_paths(models["measured"], (batch, 3, size, size))
                        print(f"  {family} {size} px batch {batch}: {chosen_paths.summary()}", flush=True)
                    try:
                        times = measure(models, mode, size, batch, args.rounds, device)
                    except (RuntimeError, ValueError) as exc:   # BatchNorm training on a 1x1 map at batch 1
                        print(f"{family:<15}{size:>4}{batch:>6}{mode:>6}  n/a: {str(exc).splitlines()[0][:70]}")
                        continue
                    ips = {k: batch / statistics.median(v) for k, v in times.items()}
                    spread = max((max(v) - min(v)) / statistics.median(v) for v in times.values())
                    spreads.append(spread)
                    timm_ips = ips.get("timm")
                    ratio = {k: paired_ratio(times[a], times[b]) for k, (a, b) in RATIOS.items() if k in times}
                    low = ratio["timm" if "timm" in ratio else "general"][1]   # the goal's ratio, worst round
                    print(f"{family:<15}{size:>4}{batch:>6}{mode:>6}{ips['specialized']:>9.1f}{ips['general']:>9.1f}"
                          + (f"{timm_ips:>9.1f}" if timm_ips else f"{'-':>9}")
                          + f"{ratio['general'][0]:>8.2f}"
                          + (f"{ratio['timm'][0]:>8.2f}" if "timm" in ratio else f"{'-':>8}")
                          + f"{spread:>7.0%}{low:>7.2f}"
                          + (f"{ips['compiled']:>10.1f}{ratio['compiled'][0]:>7.2f}" if "compiled" in ips else "")
                          + (f"{ips['measured']:>9.1f}{ratio['measured'][0]:>7.2f}" if "measured" in ips else ""),
                          flush=True)
    if spreads:
        print(f"spread over all cells: median {statistics.median(spreads):.0%}, max {max(spreads):.0%}; load "
              f"{os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
