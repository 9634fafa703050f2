"""The operations behind docs/small-images.md's rules, timed one by one on small maps: a depthwise convolution
(oneDNN's, channels-first and channels-last, against its dense per-channel operator) and a pointwise (1x1)
convolution (oneDNN's, against a matrix product on the channels-last view), in inference (forward, no gradient)
and training (forward and backward). Every variant of a row runs interleaved, round by round, in one process;
the median of the rounds is printed with the ratio of each variant to oneDNN's channels-first convolution, and the
spread (max - min over the rounds, as a share of the median) of the row's noisiest variant. No assertions.

    python benchmarks/small_map_ops.py [--threads 1] [--batch 128] [--rounds 5]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torch.nn.functional as F

from composer.nn.specialize import dense_depthwise, dense_operator_index


def _time(fn, rounds_out: list[float]) -> None:
    start = time.perf_counter()
    fn()
    rounds_out.append(time.perf_counter() - start)


def _step(f, train: bool):
    """One call of the operation ``f``: forward and backward (``train``) or a forward without gradients."""
    def step():
        if train:
            f().sum().backward()
        else:
            with torch.no_grad():
                f()
    return step


def _variants_depthwise(batch: int, channels: int, kernel: int, size: int, train: bool):
    x = torch.randn(batch, channels, size, size, requires_grad=train)
    w = torch.randn(channels, 1, kernel, kernel, requires_grad=train)
    pad = kernel // 2
    index = torch.tensor(dense_operator_index(size, size, (kernel, kernel), (1, 1), (pad, pad), (1, 1)))

    run = functools.partial(_step, train=train)
    variants = {"conv": run(lambda: F.conv2d(x, w, None, 1, pad, 1, channels)),
                # converted to channels-last and back, as a module between channels-first ones must
                "conv-nhwc": run(lambda: F.conv2d(x.contiguous(memory_format=torch.channels_last), w, None, 1, pad,
                                                  1, channels).contiguous())}
    if size * size < kernel * kernel:
        variants["dense"] = run(lambda: dense_depthwise(x, w, index, None, (size, size)))
    return variants


def _variants_pointwise(batch: int, cin: int, cout: int, size: int, train: bool, kernel: int = 1):
    """A 1x1 convolution, or (``kernel`` = ``size``) a dense convolution whose kernel covers its map, i.e. one
    output pixel: a matrix product either way."""
    x = torch.randn(batch, cin, size, size, requires_grad=train)
    w = torch.randn(cout, cin, kernel, kernel, requires_grad=train)

    run = functools.partial(_step, train=train)
    if kernel > 1:
        return {"conv": run(lambda: F.conv2d(x, w)),
                "linear": run(lambda: F.linear(x.flatten(1), w.flatten(1)).view(batch, cout, 1, 1))}
    return {"conv": run(lambda: F.conv2d(x, w)),
            "linear-nhwc": run(lambda: F.linear(x.permute(0, 2, 3, 1), w.flatten(1)).permute(0, 3, 1, 2))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for train in (False, True):
        for channels, kernel, size in ((512, 3, 2), (256, 3, 2), (256, 7, 4), (128, 7, 4), (64, 7, 4), (64, 7, 8),
                                       (32, 7, 8), (128, 5, 4), (64, 3, 2), (64, 7, 16), (32, 7, 16)):
            rows.append((f"depthwise {channels}ch {kernel}x{kernel} on {size}x{size}", train,
                         _variants_depthwise(args.batch, channels, kernel, size, train)))
        for cin, cout, size in ((256, 1024, 1), (1024, 256, 1), (128, 512, 2), (512, 128, 2), (64, 256, 4),
                                (256, 64, 4), (32, 128, 8), (128, 32, 8), (64, 128, 8), (32, 64, 16)):
            rows.append((f"pointwise {cin}->{cout} on {size}x{size}", train,
                         _variants_pointwise(args.batch, cin, cout, size, train)))
        for cin, cout in ((128, 256), (64, 128)):   # a 3x3 stride-2 downsampling on a 2x2 map: its 2x2 live taps
            rows.append((f"dense 2x2 {cin}->{cout} on 2x2", train,
                         _variants_pointwise(args.batch, cin, cout, 2, train, kernel=2)))
    print(f"CPU, torch {torch.__version__}, {args.threads} threads, batch {args.batch}, median of {args.rounds} "
          "interleaved rounds after a warm-up (ms; ratio = conv's time / the variant's: > 1 is faster)")
    print(f"{'operation':38s} {'mode':5s} {'variant':12s} {'ms':>8s} {'ratio':>6s} {'spread':>7s}")
    for name, train, variants in rows:
        times = {k: [] for k in variants}
        for fn in variants.values():
            fn()
        for _ in range(args.rounds):
            for k, fn in variants.items():
                _time(fn, times[k])
        med = {k: statistics.median(v) for k, v in times.items()}
        spread = max((max(v) - min(v)) / med[k] for k, v in times.items())
        for k in variants:
            print(f"{name:38s} {'train' if train else 'infer':5s} {k:12s} {med[k] * 1e3:8.2f} "
                  f"{med['conv'] / med[k]:6.2f} {spread:7.0%}")


if __name__ == "__main__":
    main()
