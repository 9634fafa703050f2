"""TransNeXt aggregated attention (A) vs full attention at the stage-1 and stage-2 shapes of transnext_micro
(56x56 x 48 ch, 2 heads; 28x28 x 96 ch, 4 heads; 7x7 pool), CPU, one thread, float32, all figures from one run.

Compared mixers, each as composer builds it for that position:
* ``A``: aggregated attention (window 3, pool 7x7), the native-PyTorch path;
* ``M``: TransNeXt's full attention (cosine attention + CPB; an explicit N x N logit matrix, as the reference);
* ``MHSA``: plain multi-head attention (composer ``attention``, head_dim 24, fused SDPA).

Time: median of ``--reps`` runs after a warm-up, forward (inference) and forward + backward (training).
Peak memory: each case runs in a fresh process; the increase of the process's peak RSS (``ru_maxrss``) during the
measured call over its value right before it, i.e. the extra memory the call needed at its peak.

    python benchmarks/aggregated_attention.py [--batch 1] [--reps 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

from composer.mixers import MIXERS, MixerContext

SHAPES = {"stage 1": (48, 56), "stage 2": (96, 28)}  # (width, map side) of transnext_micro at 224
MIXER_CONFIGS = {
    "A": ("aggregated_attention", {"pool_size": 7}),
    "M": ("cosine_attention", {}),
    "MHSA": ("attention", {"head_dim": 24, "qkv_bias": True, "proj_bias": True}),
}


def _module(kind: str, dim: int, side: int, stage: int):
    type_name, values = MIXER_CONFIGS[kind]
    return MIXERS[type_name](**values).build(MixerContext(dim, side, side, stage=stage))


def _run(kind, dim, side, stage, batch, train, reps):
    """(median seconds, peak extra MiB); run in a child process."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = _module(kind, dim, side, stage).train(train)
    x = torch.randn(batch, side, side, dim, requires_grad=train)

    def call():
        if train:
            module(x).square().mean().backward()
        else:
            with torch.inference_mode():
                module(x)

    call()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _peak(kind, dim, side, stage, batch, train, queue):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = _module(kind, dim, side, stage).train(train)
    x = torch.randn(batch, side, side, dim, requires_grad=train)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if train:
        module(x).square().mean().backward()
    else:
        with torch.inference_mode():
            module(x)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((after - before) / 1024)  # ru_maxrss is in KiB on Linux


def _in_child(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value


def _time_child(kind, dim, side, stage, batch, train, reps, queue):
    queue.put(_run(kind, dim, side, stage, batch, train, reps))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, 1 thread, batch {args.batch}, float32, median of {args.reps}; "
          "memory = peak RSS increase during the call (fresh process per case)")
    print(f"{'shape':<8} {'mixer':<5} {'GMACs':>7} {'fwd ms':>8} {'fwd MiB':>8} {'f+b ms':>8} {'f+b MiB':>8}"
          f" {'fwd time / A':>12} {'fwd mem / A':>11} {'f+b time / A':>12} {'f+b mem / A':>11}")
    for stage, (name, (dim, side)) in enumerate(SHAPES.items()):
        rows = {}
        for kind in MIXER_CONFIGS:
            type_name, values = MIXER_CONFIGS[kind]
            macs = MIXERS[type_name](**values).cost(MixerContext(dim, side, side, stage=stage)).macs * args.batch
            fwd = _in_child(_time_child, kind, dim, side, stage, args.batch, False, args.reps)
            fwd_mem = _in_child(_peak, kind, dim, side, stage, args.batch, False)
            trn = _in_child(_time_child, kind, dim, side, stage, args.batch, True, args.reps)
            trn_mem = _in_child(_peak, kind, dim, side, stage, args.batch, True)
            rows[kind] = (macs, fwd, fwd_mem, trn, trn_mem)
        base = rows["A"]
        for kind, (macs, fwd, fwd_mem, trn, trn_mem) in rows.items():
            print(f"{name:<8} {kind:<5} {macs / 1e9:>7.3f} {fwd * 1e3:>8.1f} {fwd_mem:>8.1f} {trn * 1e3:>8.1f}"
                  f" {trn_mem:>8.1f} {fwd / base[1]:>11.2f}x {fwd_mem / max(base[2], 1e-9):>10.2f}x"
                  f" {trn / base[3]:>11.2f}x {trn_mem / max(base[4], 1e-9):>10.2f}x")


if __name__ == "__main__":
    main()
