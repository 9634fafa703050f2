"""The training loop, in the order of timm's train.py, each step a library call: loaders → optimizer
(``timm.optim.create_optimizer_v2``) → scheduler (``timm.scheduler.create_scheduler_v2``, stepped per update) →
Mixup / CutMix (``timm.data.Mixup``) and the matching loss (``timm.loss``) → EMA (``timm.utils.ModelEmaV3``) →
one train epoch / validate pair per epoch → checkpoint.

The device is the caller's (``TrainSettings.device``): the loop never chooses one. Every epoch starts from RNG
states derived from (seed, epoch) alone — model RNG (dropout, drop-path), data order, augmentation, Mixup — so a
run killed after epoch k and resumed from its checkpoint trains the remaining epochs exactly as an uninterrupted
run does (on a CPU; GPU kernels may not be bitwise deterministic).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .data import BatchPrep, DataSource, Splits, effective_augment, make_loader
from .recipe import TrainSettings

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class EpochRecord:
    """One epoch's figures (a row of ``metrics.csv``)."""

    epoch: int
    train_loss: float
    val_loss: float
    top1: float
    top5: float
    lr: float
    img_per_s: float
    seconds: float
    peak_mem_mb: float
    top1_ema: float | None = None


@dataclass
class TrainResult:
    history: list[EpochRecord]
    skipped_files: list[str] = field(default_factory=list)
    resumed_at_epoch: int | None = None
    ema_state: dict | None = None
    """The EMA weights at the end (``--ema``)."""

    @property
    def accuracy(self) -> float:
        return self.history[-1].top1 if self.history else 0.0


def resolve_device(text: str, flag: str = "--device") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked against what this process can see (ValueError)."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"{flag} {text}: not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{flag} {text}: no CUDA GPU is visible to this process (torch.cuda.is_available() is "
                             "False); use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{flag} {text}: this process sees {count} GPU{'s' if count > 1 else ''} "
                             f"(cuda:0{f' ... cuda:{count - 1}' if count > 1 else ''})")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"{flag} {text}: this PyTorch build or machine has no MPS device; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"{flag} {text}: not a training device; use cpu, cuda, cuda:N or mps")
    return device


def seed_everything(seed: int, epoch: int) -> None:
    """The RNG states an epoch starts from: a function of (seed, epoch) only (what makes resuming exact)."""
    value = (int(seed) * 1_000_003 + int(epoch)) % (2**31 - 1)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1024 if sys.platform != "darwin" else peak / 2**20   # KiB on Linux, bytes on macOS
    except (ImportError, OSError):
        return float("nan")


def build_optimizer(model: nn.Module, settings: TrainSettings):
    from timm.optim import create_optimizer_v2

    r = settings.recipe
    kwargs: dict[str, Any] = {}
    if r.layer_decay is not None:
        kwargs["layer_decay"] = r.layer_decay
    return create_optimizer_v2(model, opt=r.opt, lr=r.lr, weight_decay=r.weight_decay, momentum=r.momentum,
                               filter_bias_and_bn=True, **kwargs)


def build_scheduler(optimizer, settings: TrainSettings, updates_per_epoch: int):
    from timm.scheduler import create_scheduler_v2

    r = settings.recipe
    scheduler, _ = create_scheduler_v2(optimizer, sched=r.sched, num_epochs=r.epochs, warmup_epochs=r.warmup_epochs,
                                       warmup_lr=r.warmup_lr, min_lr=r.min_lr, step_on_epochs=False,
                                       updates_per_epoch=max(updates_per_epoch, 1))
    return scheduler


def build_mixup(settings: TrainSettings, num_classes: int):
    r = settings.recipe
    if not r.mixes:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=r.mixup, cutmix_alpha=r.cutmix, prob=r.mixup_prob, label_smoothing=r.smoothing,
                 num_classes=num_classes)


def build_loss(settings: TrainSettings, mixup) -> nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup is not None:
        return SoftTargetCrossEntropy()   # Mixup already smooths the targets
    if settings.recipe.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=settings.recipe.smoothing)
    return nn.CrossEntropyLoss()


@torch.no_grad()
def evaluate(model: nn.Module, loader, prep: BatchPrep, amp: str = "off", num_classes: int | None = None,
             confusion: bool = False) -> dict[str, Any]:
    """Top-1, top-5 and cross-entropy of ``model`` over ``loader`` (and the confusion matrix when asked)."""
    model.eval()
    device = prep.device
    correct1 = correct5 = seen = 0
    loss_sum = 0.0
    skipped: list[str] = []
    matrix = None
    if confusion and num_classes:
        matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    with torch.autocast(device.type, dtype=_DTYPES.get(amp, torch.float32), enabled=amp != "off"):
        for x, y, bad in loader:
            skipped.extend(bad)
            if not len(y):
                continue
            x = prep(x, train=False)
            y = y.to(device, non_blocking=True)
            out = model(x).float()
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            k = min(5, out.shape[1])
            top = out.topk(k, dim=1).indices
            correct1 += int((top[:, 0] == y).sum())
            correct5 += int((top == y[:, None]).any(1).sum())
            seen += len(y)
            if matrix is not None:
                matrix += torch.bincount((y * num_classes + top[:, 0]).cpu(), minlength=num_classes ** 2
                                         ).view(num_classes, num_classes)
    n = max(seen, 1)
    out = {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n, "images": seen, "skipped": skipped}
    if matrix is not None:
        out["confusion"] = matrix
    return out


def _measure_conv_paths(model: nn.Module, settings: TrainSettings, input_shape: tuple[int, ...],
                        device: torch.device, log: Callable[[str], None] | None) -> None:
    """``--conv-paths measured``: on the CPU, time the depthwise convolutions' training paths
    (composer.train.conv_paths) and set the fastest; on CUDA, let cuDNN time its convolution algorithms per shape
    (``torch.backends.cudnn.benchmark``, process-wide, as timm's train.py sets it). Said in one line."""
    say = log or (lambda line: None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        say("--conv-paths measured on cuda: cuDNN times its convolution algorithms for each shape "
            "(torch.backends.cudnn.benchmark = True in this process)")
        return
    why_not = ("the model is not specialized (--no-specialize)" if not settings.specialize else
               f"they are CPU paths, this trains on {device.type}" if device.type != "cpu" else
               "mixed precision is on (the paths are timed in float32)" if settings.amp != "off" else "")
    if why_not:
        say(f"--conv-paths measured: the rules kept, {why_not}")
        return
    from .conv_paths import choose_conv_paths

    say(choose_conv_paths(model, input_shape, channels_last=settings.channels_last).summary())


def train(model: nn.Module, source: DataSource, splits: Splits, settings: TrainSettings, *, size: int,
          in_chans: int, seed: int = 0, report: Callable[[int, float], None] | None = None,
          checkpoint: Any = None, progress: bool = False, desc: str = "train", log: Callable[[str], None] | None = None,
          device: torch.device | None = None) -> TrainResult:
    """Train ``model`` on ``source``'s training split (``splits.train``), validating on ``splits.val`` after every
    epoch; ``report(epoch, top1)`` after each (it may raise to prune: nothing is saved for that epoch), then
    ``checkpoint.save(state)``. A ``checkpoint`` whose ``load()`` gives a state resumes from it."""
    r = settings.recipe
    device = device or resolve_device(settings.device)
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    if settings.conv_paths == "measured":
        _measure_conv_paths(model, settings, (r.train_batch, in_chans, size, size), device, log)
    dist = torch.distributed if torch.distributed.is_available() and torch.distributed.is_initialized() else None
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist is not None else (1, 0)
    augment = effective_augment(r.augment, source)
    train_loader = make_loader(source, source.train, splits.train, size=size, batch=r.train_batch, train=True,
                               seed=seed, workers=settings.loader_workers, augment=augment, world=world, rank=rank)
    val_loader = make_loader(source, source.train, splits.val, size=size, batch=2 * r.train_batch, train=False,
                             seed=seed, workers=settings.loader_workers)
    prep = BatchPrep(source, size, in_chans, device, augment if augment == "light" else "none",
                     settings.channels_last)
    updates = len(train_loader)
    net = model
    if dist is not None:   # gradients averaged over the processes: one step of the global batch
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, settings, updates)
    mixup = build_mixup(settings, source.num_classes)
    criterion = build_loss(settings, mixup)
    scaler = torch.amp.GradScaler(device.type) if settings.amp == "fp16" else None
    ema = None
    if r.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=r.ema_decay, use_warmup=True)
    history: list[EpochRecord] = []
    skipped: list[str] = []
    logged: set[str] = set()
    state = checkpoint.load() if checkpoint is not None else None
    resumed = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        history = [EpochRecord(**row) for row in state["history"]]
        resumed = len(history)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dtype = _DTYPES.get(settings.amp, torch.float32)
    for epoch in range(len(history), r.epochs):
        seed_everything(seed, epoch)
        train_loader.batch_sampler.generator.manual_seed(seed * 7919 + epoch)
        train_loader.generator.manual_seed(seed * 6007 + epoch)
        aug_gen = torch.Generator().manual_seed(seed * 104_729 + epoch)
        model.train()
        t0 = time.perf_counter()
        images, loss_sum, steps = 0, 0.0, 0
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=updates, desc=f"{desc} epoch {epoch + 1}/{r.epochs}", unit="step", leave=False,
                       file=sys.stderr, dynamic_ncols=True)
        for x, y, bad in train_loader:
            skipped.extend(bad)
            if len(y) < 2:
                continue
            x = prep(x, train=True, generator=aug_gen)
            y = y.to(device, non_blocking=True)
            if mixup is not None:
                if len(y) % 2:
                    x, y = x[:-1], y[:-1]
                x, y = mixup(x, y)
            with torch.autocast(device.type, dtype=dtype, enabled=settings.amp != "off"):
                out = net(x)
            loss = criterion(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if r.clip_grad is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), r.clip_grad)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if r.clip_grad is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), r.clip_grad)
                optimizer.step()
            steps += 1
            scheduler.step_update(num_updates=epoch * updates + steps)
            if ema is not None:
                ema.update(model, step=epoch * updates + steps)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"the training loss became {value} at epoch {epoch}, step {steps}")
            loss_sum += value
            images += len(y) * world
            if bar is not None:
                rate = images / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"loss {value:.3f}, {rate:,.0f} img/s", refresh=False)
                bar.update(1)
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        if dist is not None:   # every process reports the mean over all of them
            totals = torch.tensor([loss_sum, float(steps)], dtype=torch.float64, device=device)
            dist.all_reduce(totals)
            loss_sum, steps = float(totals[0]) / world, int(totals[1]) // world
        scheduler.step(epoch + 1)
        metrics = evaluate(model, val_loader, prep, settings.amp)
        skipped.extend(metrics["skipped"])
        top1_ema = evaluate(ema.module, val_loader, prep, settings.amp)["top1"] if ema is not None else None
        record = EpochRecord(epoch, loss_sum / max(steps, 1), metrics["loss"], metrics["top1"], metrics["top5"],
                             optimizer.param_groups[0]["lr"], images / max(seconds, 1e-9), seconds,
                             peak_memory_mb(device), top1_ema)
        history.append(record)
        fresh = sorted(set(skipped) - logged)
        if log is not None and fresh:
            log(f"{desc}: skipped {len(fresh)} images that could not be decoded (first: {fresh[0]})")
        logged.update(fresh)
        if report is not None:   # first: a prune raised here leaves no checkpoint of this epoch behind
            report(epoch, record.top1)
        if checkpoint is not None and rank == 0:
            checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict() if scaler is not None else None,
                             "ema": ema.module.state_dict() if ema is not None else None,
                             "history": [asdict(h) for h in history], "epochs": r.epochs})
    return TrainResult(history, sorted(set(skipped)), resumed, ema.module.state_dict() if ema is not None else None)


__all__ = ["EpochRecord", "TrainResult", "build_loss", "build_mixup", "build_optimizer",
           "build_scheduler", "evaluate", "peak_memory_mb", "resolve_device", "seed_everything", "train"]
