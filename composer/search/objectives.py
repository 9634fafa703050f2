"""What a search maximises or minimises, evaluated only for samples that passed the budget check.

* ``naswot`` (= ``proxy``): NASWOT (Mellor et al., 2021): log|K| of the Hamming-kernel of the binary
  activation patterns (sign of every activation's input) of one minibatch. Training-free.
* ``gradnorm``: the sum over parameters of the L2 norm of the cross-entropy gradient at initialisation on the
  same minibatch (Abdelfattah et al., 2021, "Zero-cost proxies"). Training-free.
  Both come from one forward + one backward pass; a proxy trial records both.
* ``zico``: ZiCo (Li et al., ICLR 2023): for every conv and linear layer, the sum over its weights of the mean
  absolute gradient divided by the gradient's standard deviation across minibatches, log-summed over layers
  (the paper's Eq. 7, on two minibatches; one more forward + backward than naswot). Training-free.
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

from .. import paths
from ..nn.layers import ACTIVATIONS

_ACT_TYPES = tuple({cls for cls in ACTIVATIONS.values() if isinstance(cls, type)} | {nn.ReLU, nn.GELU, nn.SiLU})


def _minibatch(batch: int, size: int, in_chans: int, num_classes: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_chans, size, size, generator=gen)
    y = torch.randint(0, max(num_classes, 1), (batch,), generator=gen)
    return x, y


def _loss(out: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.cross_entropy(out, y) if num_classes > 0 else out.pow(2).mean()


def _zico_layers(model: nn.Module) -> list[nn.Parameter]:
    """The weights ZiCo reads: those of every convolution and linear layer (as the official code does)."""
    return [m.weight for m in model.modules()
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(m.weight, nn.Parameter)
            and m.weight.requires_grad]


def zico_score(grads: list[list[torch.Tensor]]) -> float:
    """ZiCo from per-minibatch gradients (``grads[layer][batch]``, each the gradient of one minibatch alone):
    sum over layers of log(sum over weights of mean|g| / std(g)), weights whose gradient does not vary across
    the minibatches left out, layers whose sum is 0 too (the paper's Eq. 7 and its official code's rule).

    The official code (SLDGroup/ZiCo, compute_zico.py) does not zero the gradients between minibatches, so its
    second "gradient" is the sum of the first two; here every minibatch's gradient is its own, as the
    paper's definition (statistics over minibatches) reads."""
    score = 0.0
    for per_batch in grads:
        g = torch.stack([t.reshape(-1).to(torch.float64) for t in per_batch])
        std = g.std(dim=0, unbiased=False)   # numpy's np.std, as the official code
        varying = std > 0
        total = float((g.abs().mean(dim=0)[varying] / std[varying]).sum())
        if total > 0 and math.isfinite(total):
            score += math.log(total)
    return score


def proxy_scores(model: nn.Module, size: int, batch: int, in_chans: int, num_classes: int, seed: int,
                 zico: bool = False) -> dict:
    """NASWOT and grad-norm of ``model`` on one random minibatch (same for every trial of a run); with ``zico``,
    also ZiCo from that minibatch's gradient and a second one's."""
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
    _loss(out, y, num_classes).backward()
    grad_norm = sum(float(p.grad.norm()) for p in model.parameters() if p.grad is not None)
    if handles:
        sign, logdet = torch.linalg.slogdet(kernel)
        naswot = float(logdet) if float(sign) > 0 else -1e3
    else:
        naswot = 0.0
    scores = {"naswot": naswot, "gradnorm": grad_norm if math.isfinite(grad_norm) else 0.0}
    if zico:
        layers = _zico_layers(model)
        grads = [[torch.zeros_like(w) if w.grad is None else w.grad.detach().clone()] for w in layers]
        x2, y2 = _minibatch(batch, size, in_chans, num_classes, seed + 1)
        model.zero_grad(set_to_none=True)
        _loss(model(x2), y2, num_classes).backward()
        for per_batch, w in zip(grads, layers):
            per_batch.append(torch.zeros_like(w) if w.grad is None else w.grad.detach().clone())
        scores["zico"] = zico_score(grads)
    model.zero_grad(set_to_none=True)
    scores.update(score_seconds=time.perf_counter() - t0, activation_layers=len(handles))
    return scores


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
    from PIL import Image

    root = image_folder(source)

    def first_size() -> int | None:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            for image in sorted(folder.iterdir()):
                try:
                    with Image.open(image) as img:
                        return min(img.size)
                except OSError:  # not an image: ImageFolder skips it too
                    continue
        return None

    size = paths.guarded(DATA_AT, root, first_size, "cannot read it")
    if size is None:
        raise ValueError(f"--data: no images in the class folders of {source!r}")
    return size


DATA_AT = paths.At("--data")


def image_folder(source: str):
    """The ImageFolder ``--data`` names, through composer.paths: a name the OS refuses, a folder that cannot be
    listed, is a located error; a path that is no folder gets the hint of what --data takes."""
    try:
        return paths.readable_folder(source, DATA_AT)
    except ValueError as exc:  # a SpecError: say what --data takes too
        raise ValueError(f"{exc}; --data takes 'digits' or an ImageFolder directory (one sub-folder of images per "
                         "class)") from None


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
        from torchvision import datasets, transforms

        root = image_folder(source)
        tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                                 transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

        def read_images():
            folder = datasets.ImageFolder(str(root), transform=tf)
            return folder, zip(*(folder[i] for i in range(len(folder))))

        folder, (xs, ys) = paths.guarded(DATA_AT, root, read_images, "cannot read it")
        x, y = torch.stack(xs), torch.tensor(ys)
        classes = len(folder.classes)
    if x.shape[1] != in_chans:
        x = x[:, :1].expand(-1, in_chans, -1, -1).contiguous() if in_chans != 1 else x.mean(1, keepdim=True)
    order = torch.randperm(len(y), generator=gen)
    n_val = max(1, int(len(y) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return Dataset(source, x[train], y[train], x[val], y[val], classes)


def train_and_validate(model: nn.Module, data: Dataset, epochs: int, seed: int, report=None,
                       batch_size: int = 64, lr: float = 2e-3, checkpoint=None) -> float:
    """Train ``epochs`` epochs (AdamW, one-cycle cosine); ``report(epoch, accuracy)`` after each (it may raise
    to prune).

    ``checkpoint`` (composer.search.checkpoints.TrialCheckpoint): its ``load()`` state, if any, is resumed
    from (model, optimizer, scheduler, RNG, epochs done, accuracies so far), and ``save(state)`` is called
    after every epoch's ``report``: a run killed after epoch k and resumed trains the remaining epochs to the
    same weights and accuracy as one that was never stopped."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(data.train_y) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    history: list[float] = []
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        history = list(state["history"])
    acc = history[-1] if history else 0.0
    for epoch in range(len(history), epochs):
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
        history.append(acc)
        if report is not None:   # first: the trial records the epoch it trained (a prune ends it here)
            report(epoch, acc)
        if checkpoint is not None:
            checkpoint.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                             "history": history, "epochs": epochs})
    return acc


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data.val_y), batch_size):
            correct += int((model(data.val_x[i:i + batch_size]).argmax(1) == data.val_y[i:i + batch_size]).sum())
    return correct / len(data.val_y)
