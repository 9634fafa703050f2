"""Activation memory and time of a training step with and without ``set_grad_checkpointing(True)``.

Each configuration runs in a fresh process (peak resident memory is per process): build the model, one
warm-up step, then the median time of ``--steps`` forward + backward steps at ``--batch``. Printed: the
process's peak resident MB (model, gradients and activations: only the activations differ between the two
runs) and seconds per step, and the ratios of checkpointed to plain measured in the same run. On a GPU
(``--device cuda``) the peak is ``torch.cuda.max_memory_allocated``.
No assertions.

    python benchmarks/grad_checkpointing.py [--presets caformer_s18 hornet_tiny_7x7 ...] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PRESETS = ["caformer_s18", "hornet_tiny_7x7", "transnext_micro", "u_swin_tiny"]

_CHILD = r"""
import json, resource, statistics, sys, time
import torch, composer
preset, batch, steps, checkpointing, device, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    sys.argv[4] == "1", sys.argv[5], int(sys.argv[6])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = composer.compose(preset).to(device).train()
model.set_grad_checkpointing(checkpointing)
size = composer.load_spec(preset).input_size
x = torch.randn(batch, 3, size, size, device=device)
def step():
    model.zero_grad(set_to_none=True)
    model(x).logsumexp(1).mean().backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
step()  # warm-up: gradients allocated, allocator settled
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
if device.startswith("cuda"):
    peak = torch.cuda.max_memory_allocated()
else:  # the whole process's peak: model, gradients and optimiser-free step, the same in both runs but activations
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak, "seconds": statistics.median(times)}))
"""


def _run(preset: str, batch: int, steps: int, checkpointing: bool, device: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, preset, str(batch), str(steps), "1" if checkpointing else "0",
                          device, str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=PRESETS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"batch {args.batch} at each preset's input size, {args.device}, median of {args.steps} steps")
    print(f"{'preset':<18} {'plain MB':>9} {'ckpt MB':>9} {'ratio':>6} {'plain s':>8} {'ckpt s':>8} {'ratio':>6}")
    for preset in args.presets:
        plain = _run(preset, args.batch, args.steps, False, args.device, args.threads)
        ckpt = _run(preset, args.batch, args.steps, True, args.device, args.threads)
        mem_plain, mem_ckpt = plain["peak"], ckpt["peak"]
        print(f"{preset:<18} {mem_plain / 2**20:9.0f} {mem_ckpt / 2**20:9.0f} {mem_ckpt / mem_plain:6.2f} "
              f"{plain['seconds']:8.2f} {ckpt['seconds']:8.2f} {ckpt['seconds'] / plain['seconds']:6.2f}")


if __name__ == "__main__":
    main()
