"""The GPU checks in one run of under 6 minutes, for the rare session with a GPU (CI has none).

    python benchmarks/gpu_suite.py [--device cuda] [--samples 8] [--quick]

1. Latency predictor on the device at batch 1 and 64: ``--samples`` seeded samples of search/metaformer_s18,
   predicted from a table built from empty vs measured end to end (CUDA events): share within ±10%, median error.
2. Throughput (img/s, batch 64, 224 px) of caformer_s18 and convformer_s18 against timm's own models, in fp32 and
   with AMP (bf16) + channels_last.
3. TransNeXt's aggregated attention (u: transnext_micro's stage-1 mixer) against torch's
   ``scaled_dot_product_attention`` on the same tokens (the full attention it approximates).
4. HyenaPixel's FFT long convolution against a direct depthwise convolution of the same filter size.
5. A four-trial train search on the device (bf16, channels-last) on Fashion-MNIST (2,000 training images, one
   epoch), one worker per visible GPU: the trials' img/s and peak memory (composer.train). The machine has no
   network: Fashion-MNIST comes in the carried ``.data/fashion-mnist`` (gpu_run.sh sets $COMPOSER_DATA).
6. Small images (docs/small-images.md): ConvFormer and HorNet at 32 px, batch 128, inference and training img/s of
   the specialized build against the general one and timm's (benchmarks/small_image_speed.py on the device); on
   CUDA training once more with ``torch.backends.cudnn.benchmark`` on (``--conv-paths measured`` there), on a CPU
   with the measured training paths beside the rules'.

Every figure is printed with the device name; paste them into docs/latency.md (and the docs of each family)
with the device named. ``--device cpu --quick`` runs the same code on a CPU with tiny sizes (a smoke test).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def timed(fn, device, repeats: int = 10) -> float:
    """Median ms of fn() (CUDA events on a GPU)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def predictor_check(device: str, samples: int, batches: list[int]) -> None:
    import tempfile

    from latency_predictor import samples as draw

    from composer.latency import Predictor, measure

    folder = Path(tempfile.mkdtemp(prefix="composer-gpu-latency-"))
    specs = draw("metaformer_s18", samples)
    for batch in batches:
        p = Predictor(device=device, batch_size=batch, folder=folder)
        t0 = time.perf_counter()
        predicted = [p.predict(s).ms for s in specs]
        seconds = time.perf_counter() - t0
        measured = [measure(s, device=device, batch_size=batch) for s in specs]
        errors = sorted(abs(a / b - 1) for a, b in zip(predicted, measured))
        within = sum(e <= 0.10 for e in errors) / len(errors)
        print(f"predictor, batch {batch}: {within:.0%} within ±10%, median |error| {statistics.median(errors):.1%}, "
              f"table {len(p.table)} parts in {seconds:.1f} s, measured {min(measured):.2f}-{max(measured):.2f} ms")


def throughput_check(device, batch: int, size: int) -> None:
    import timm

    import composer

    for name in ("caformer_s18", "convformer_s18"):
        ours = composer.compose({"extends": name, "input_size": size}).eval().to(device)
        theirs = timm.create_model(name).eval().to(device)  # MetaFormers take any input size
        x = torch.randn(batch, 3, size, size, device=device)
        for label, amp in (("fp32", False), ("amp bf16 + channels_last", True)):
            row = []
            for model in (ours, theirs):
                m = model.to(memory_format=torch.channels_last) if amp else model
                xi = x.to(memory_format=torch.channels_last) if amp else x

                def run(m=m, xi=xi, amp=amp):
                    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
                        m(xi)

                row.append(batch / timed(run, device) * 1e3)
            print(f"throughput {name} {label}: composer {row[0]:.0f} img/s, timm {row[1]:.0f} img/s "
                  f"({row[0] / row[1]:.2f}x)")


def _mixer(preset: str, device, batch: int):
    """The first block's token mixer of ``preset``'s first stage and an input in the layout it takes."""
    import composer

    spec = composer.load_spec(preset)
    model = composer.compose(spec).eval().to(device)
    block = model.stages[0].blocks[0]
    mixer = block._modules[block.mixer_key]
    dim, side = spec.widths[0], spec.input_size // 4
    shape = (batch, dim, side, side) if block.layout == "channels_first" else (batch, side, side, dim)
    return mixer, torch.randn(*shape, device=device), dim, side


def attention_check(device, quick: bool) -> None:
    from torch.nn import functional as F

    b = 8 if quick else 64
    mixer, x, dim, side = _mixer("transnext_micro", device, b)
    heads = max(dim // 24, 1)  # TransNeXt's head_dim 24
    q = torch.randn(b, heads, side * side, dim // heads, device=device)
    with torch.inference_mode():
        ours = timed(lambda: mixer(x), device)
        full = timed(lambda: F.scaled_dot_product_attention(q, q, q), device)
    print(f"aggregated attention (transnext_micro stage 0, batch {b}, {side}x{side} tokens): {ours:.2f} ms; "
          f"scaled_dot_product_attention over all tokens: {full:.2f} ms ({ours / full:.2f}x)")


def hyena_check(device, quick: bool) -> None:
    b = 8 if quick else 64
    mixer, x, dim, side = _mixer("hpxformer_s18", device, b)
    k = 15 if quick else 2 * side - 1  # the filter Hpx covers the map with
    direct = torch.nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim).to(device).eval()
    xd = torch.randn(b, dim, side, side, device=device)
    with torch.inference_mode():
        fft = timed(lambda: mixer(x), device)
        conv = timed(lambda: direct(xd), device)
    print(f"Hpx (hpxformer_s18 stage 0, batch {b}, {side}x{side}): the FFT operator {fft:.2f} ms; one direct "
          f"depthwise {k}x{k} conv of its width alone {conv:.2f} ms")


def train_search_check(device, quick: bool) -> None:
    import csv
    import subprocess
    import tempfile

    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    run_dir = Path(tempfile.mkdtemp()) / "train-search"
    space = REPO / "tests" / "data" / "small_train_space.yaml"
    data = "digits" if quick else "fashion-mnist"
    cmd = [sys.executable, "-m", "composer.cli", "search", str(space), "--objective", "train", "--data", data,
           "--trials", "1" if quick else "4", "--epochs", "1", "--device", str(device), "--run-dir", str(run_dir),
           "--no-progress"]
    if not quick:
        cmd += ["--subset", "2000", "--amp", "bf16" if device.type == "cuda" else "off"]
    if device.type == "cuda":
        cmd += ["--channels-last"]
        if gpus > 1:
            cmd += ["--device", "cuda", "--workers", str(gpus), "--gpus", ",".join(map(str, range(gpus)))]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(f"train search ({' '.join(cmd[3:])}): exit {done.returncode} in {time.perf_counter() - t0:.0f} s")
    if done.returncode != 0:
        print(done.stderr[-2000:])
        return
    with (run_dir / "trials.csv").open() as handle:
        for row in csv.DictReader(handle):
            print(f"  trial {row['number']}: {row.get('state')} accuracy {row.get('accuracy')} img/s "
                  f"{row.get('img_per_s')} peak MB {row.get('peak_mem_mb')} on {row.get('val_split')}")


def small_image_check(device, quick: bool) -> None:
    import small_image_speed

    args = ["--device", str(device), "--families", "convformer", "hornet", "--sizes", "32",
            "--batches", "8" if quick else "128", "--rounds", "2" if quick else "5",
            "--threads", "1" if quick else str(torch.get_num_threads())]
    small_image_speed.main(args + (["--conv-paths-measured"] if device.type == "cpu" else []))
    if device.type == "cuda":   # what --conv-paths measured does there: cuDNN's own measurement
        print("training again with torch.backends.cudnn.benchmark = True (composer train --conv-paths measured):")
        before, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
        try:
            small_image_speed.main(args + ["--modes", "train"])
        finally:
            torch.backends.cudnn.benchmark = before


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test on a CPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    t0 = time.perf_counter()
    predictor_check(args.device, 2 if args.quick else args.samples, [1, 2] if args.quick else [1, 64])
    throughput_check(device, 2 if args.quick else 64, 64 if args.quick else 224)
    attention_check(device, args.quick)
    hyena_check(device, args.quick)
    train_search_check(device, args.quick)
    small_image_check(device, args.quick)
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
