"""What a search maximises or minimises, evaluated only for samples that passed the budget check.

* ``naswot`` (= ``proxy``): NASWOT (Mellor et al., 2021): log|K| of the Hamming-kernel of the binary
  activation patterns (sign of every activation's input) of one minibatch. Training-free.
* ``gradnorm``: the sum over parameters of the L2 norm of the cross-entropy gradient at initialisation on the
  same minibatch (Abdelfattah et al., 2021, "Zero-cost proxies"). Training-free.
  Both come from one forward + one backward pass; a proxy trial records both.
* ``zico``: ZiCo (Li et al., ICLR 2023): for every conv and linear layer, the sum over its weights of the mean
  absolute gradient divided by the gradient's standard deviation across minibatches, log-summed over layers
  (the paper's Eq. 7, on two minibatches; one more forward + backward than naswot). Training-free.
* ``train``: validation accuracy after a short training run (composer.train: ``--data`` digits, Fashion-MNIST,
  MNIST, CIFAR, an ImageFolder or a plugin's dataset; the validation split is held out of the training split).
* ``macs``, ``params`` (GMACs and M params from the Plan, minimised), ``latency`` (measured ms per image at
  the proxy resolution on this machine, minimised): partners for a multi-objective (Pareto) search.
* anything else: ``function(model, spec, reporter) -> float`` (:class:`Reporter`), registered by a plugin
  (entry-point group ``composer.objectives``), by ``composer.registry.register_objective`` or given as
  ``--objective module:function``. The names and directions live in ``composer.search.results``.
"""

from __future__ import annotations

import math
import time

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
                 zico: bool = False, device: str | torch.device = "cpu") -> dict:
    """NASWOT and grad-norm of ``model`` on one random minibatch (same for every trial of a run); with ``zico``,
    also ZiCo from that minibatch's gradient and a second one's. ``device``: where the model runs (the minibatch
    is drawn on the CPU, so every device scores the same images)."""
    device = torch.device(device)
    model.to(device)
    x, y = (t.to(device) for t in _minibatch(batch, size, in_chans, num_classes, seed))
    kernel = torch.zeros(batch, batch, dtype=torch.float64, device=device)

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
        x2, y2 = (t.to(device) for t in _minibatch(batch, size, in_chans, num_classes, seed + 1))
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


# -- training lives in composer.train (data sources, recipe, loop, checkpoints) ----------------------------------

def natural_size(source: str) -> int:
    """The resolution a ``--data`` source comes at (8 for digits, 28 for Fashion-MNIST, an ImageFolder's first
    image's smaller side)."""
    from ..train.data import open_source

    return open_source(source).natural_size


def default_train_size(natural: int, stride: int, input_size: int) -> int:
    from ..train.trial import default_train_size as _default

    return _default(natural, stride, input_size)
