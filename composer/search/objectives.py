"""What a search maximises or minimises, evaluated only for samples that passed the budget check.

* ``naswot`` (= ``proxy``): NASWOT (Mellor et al., 2021): log|K| of the Hamming-kernel of the binary
  activation patterns (sign of every activation's input) of one minibatch. Training-free.
* ``gradnorm``: the sum over parameters of the L2 norm of the cross-entropy gradient at initialisation on the
  same minibatch (Abdelfattah et al., 2021, "Zero-cost proxies"). Training-free.
  Both come from one forward + one backward pass; a proxy trial records both.
* ``train``: validation accuracy after a short training run (digits from scikit-learn, or an ImageFolder).
* ``macs``, ``params`` (GMACs and M params from the Plan, minimised), ``latency`` (measured ms per image at
  the proxy resolution on this machine, minimised): partners for a multi-objective (Pareto) search.
* anything else: ``function(model, spec, reporter) -> float`` (:class:`Reporter`), registered by a plugin
  (entry-point group ``composer.objectives``), by ``composer.registry.register_objective`` or given as
  ``--objective module:function``. The names and directions live in ``composer.search.results``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.layers import ACTIVATIONS

_ACT_TYPES = tuple({cls for cls in ACTIVATIONS.values() if isinstance(cls, type)} | {nn.ReLU, nn.GELU, nn.SiLU})


def _minibatch(batch: int, size: int, in_chans: int, num_classes: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_chans, size, size, generator=gen)
    y = torch.randint(0, max(num_classes, 1), (batch,), generator=gen)
    return x, y


def proxy_scores(model: nn.Module, size: int, batch: int, in_chans: int, num_classes: int, seed: int) -> dict:
    """NASWOT and grad-norm of ``model`` on one random minibatch (same for every trial of a run)."""
    x, y = _minibatch(batch, size, in_chans, num_classes, seed)
    kernel = torch.zeros(batch, batch, dtype=torch.float64)

    def hook(module, inputs, output):
        codes = (inputs[0].detach() > 0).reshape(batch, -1).to(torch.float64)
        kernel.add_(codes @ codes.T).add_((1 - codes) @ (1 - codes).T)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _ACT_TYPES)]
    model.train()
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    if num_classes > 0:
        loss = F.cross_entropy(out, y)
    else:
        loss = out.pow(2).mean()
    loss.backward()
    grad_norm = sum(float(p.grad.norm()) for p in model.parameters() if p.grad is not None)
    if handles:
        sign, logdet = torch.linalg.slogdet(kernel)
        naswot = float(logdet) if float(sign) > 0 else -1e3
    else:
        naswot = 0.0
    return {"naswot": naswot, "gradnorm": grad_norm if math.isfinite(grad_norm) else 0.0,
            "score_seconds": time.perf_counter() - t0, "activation_layers": len(handles)}


class Reporter:
    """What a user objective gets besides the model and its spec: ``report(value, step)`` records an
    intermediate value (Optuna's pruner reads it and may stop the trial: :class:`optuna.TrialPruned` is raised
    out of ``report``; let it propagate), ``set(key, value)`` records a user attribute of the trial."""

    def __init__(self, trial, prune: bool):
        self.trial = trial
        self._prune = prune  # Optuna's pruners work on single-objective studies only

    @property
    def number(self) -> int:
        """The trial's number in the study."""
        return self.trial.number

    def report(self, value: float, step: int) -> None:
        import optuna

        value = float(value)
        self.trial.set_user_attr(f"value_step{int(step)}", value)
        if self._prune:
            self.trial.report(value, int(step))
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (value {value:.4g})")

    def set(self, key: str, value) -> None:
        self.trial.set_user_attr(str(key), value)


# -- training ------------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    _sizes: dict = field(default_factory=dict, repr=False, compare=False)  # at_size's resized copies

    @property
    def size(self) -> int:
        return self.train_x.shape[-1]

    def at_size(self, size: int) -> Dataset:
        """The same images resized (bilinear) to ``size`` x ``size``, for a trial whose architecture needs a
        larger training resolution than the search's ``--train-size``; cached per size."""
        if size == self.size:
            return self
        if size not in self._sizes:
            def resize(x):
                return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

            self._sizes[size] = Dataset(self.name, resize(self.train_x), self.train_y, resize(self.val_x),
                                        self.val_y, self.num_classes)
        return self._sizes[size]


DIGITS_SIZE = 8  # scikit-learn's digits are 8x8


def natural_size(source: str) -> int:
    """The resolution a dataset comes at: 8 for digits, the smaller side of an ImageFolder's first image."""
    if source == "digits":
        return DIGITS_SIZE
    from pathlib import Path

    from PIL import Image

    root = Path(source)
    if not root.is_dir():
        raise ValueError(f"--data: {source!r} is neither 'digits' nor an ImageFolder directory "
                         "(one sub-folder of images per class)")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(folder.iterdir()):
            try:
                with Image.open(image) as img:
                    return min(img.size)
            except OSError:  # not an image: ImageFolder skips it too
                continue
    raise ValueError(f"--data: no images in the class folders of {source!r}")


def default_train_size(natural: int, stride: int, input_size: int) -> int:
    """The dataset's natural size rounded up to a multiple of the network's total stride (``stride``), so that
    every stage keeps a map of at least 1 x 1; never above the spec's own ``input_size``."""
    return min(-(-natural // stride) * stride, input_size)


def load_dataset(source: str, size: int, in_chans: int, seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    """``digits`` (scikit-learn's 1,797 8x8 handwritten digits, resized to ``size``) or an ImageFolder path."""
    gen = torch.Generator().manual_seed(seed)
    if source == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = (x - 0.3) / 0.4
        y = torch.tensor(digits.target, dtype=torch.long)
        classes = 10
    else:
        from pathlib import Path

        from torchvision import datasets, transforms

        if not Path(source).is_dir():
            raise ValueError(f"--data: {source!r} is neither 'digits' nor an ImageFolder directory "
                             "(one sub-folder of images per class)")
        tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                 transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        folder = datasets.ImageFolder(source, transform=tf)
        xs, ys = zip(*(folder[i] for i in range(len(folder))))
        x, y = torch.stack(xs), torch.tensor(ys)
        classes = len(folder.classes)
    if x.shape[1] != in_chans:
        x = x[:, :1].expand(-1, in_chans, -1, -1).contiguous() if in_chans != 1 else x.mean(1, keepdim=True)
    order = torch.randperm(len(y), generator=gen)
    n_val = max(1, int(len(y) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return Dataset(source, x[train], y[train], x[val], y[val], classes)


def train_and_validate(model: nn.Module, data: Dataset, epochs: int, seed: int, report=None,
                       batch_size: int = 64, lr: float = 2e-3) -> float:
    """Train ``epochs`` epochs (AdamW, cosine); ``report(epoch, accuracy)`` after each (it may raise to prune)."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(data.train_y) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    acc = 0.0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(data.train_y))
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(model, data)
        if report is not None:
            report(epoch, acc)
    return acc


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data.val_y), batch_size):
            correct += int((model(data.val_x[i:i + batch_size]).argmax(1) == data.val_y[i:i + batch_size]).sum())
    return correct / len(data.val_y)
