"""What a training run is, as data: the recipe (optimizer, schedule, regularisation, augmentation) and where it
runs (data, split, device, precision). Plain pydantic, no torch: a search space's ``train:`` section, the
command line's flags and a study's recorded settings are all this one object.

The defaults are a short-schedule recipe meant to rank architectures in a few epochs, not to reach their best
accuracy; docs/search.md says where each default comes from. Every field is also a command-line flag
(``--lr``, ``--train-batch``, ...; :func:`add_flags` declares them once for search, sweep and proxy-check).
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

AMP = ("off", "bf16", "fp16")
AUGMENT = ("auto", "none", "light", "randaugment")
CONV_PATHS = ("rules", "measured")


class Recipe(BaseModel):
    """How one architecture is trained: timm's optimizer, scheduler, Mixup / CutMix, EMA and transforms, set
    here and built by :mod:`composer.train.loop`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(3, ge=1, description="epochs per training run (a search's pruners use them as resource)")
    train_batch: int = Field(128, ge=1, description="training minibatch per process (validation uses twice it)")
    opt: str = Field("adamw", min_length=1,
                     description="optimizer, by timm.optim.create_optimizer_v2's name (adamw, sgd, lamb, ...)")
    lr: float = Field(2e-3, gt=0, description="peak learning rate (for --train-batch; not rescaled)")
    weight_decay: float = Field(0.05, ge=0, description="decoupled weight decay; never on norms and biases")
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise lr decay (timm's), off by default")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD-style optimizers' momentum")
    sched: str = Field("cosine", min_length=1,
                       description="schedule, by timm.scheduler.create_scheduler_v2's name, stepped per update")
    warmup_epochs: float = Field(0.5, ge=0, description="linear warm-up from --warmup-lr, in epochs")
    warmup_lr: float = Field(1e-5, ge=0, description="learning rate at the start of warm-up")
    min_lr: float = Field(1e-5, ge=0, description="learning rate at the end of the schedule")
    smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing")
    mixup: float = Field(0.0, ge=0, description="Mixup alpha (timm.data.Mixup); 0: off")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha (timm.data.Mixup); 0: off")
    mixup_prob: float = Field(1.0, ge=0, le=1, description="probability of Mixup or CutMix per batch")
    augment: Literal["auto", "none", "light", "randaugment"] = Field(
        "auto", description="training augmentation: none; light (random crop from a 4 px padding, flip where the "
        "data allow it); randaugment (timm.data.create_transform: random-resized crop, flip, RandAugment); "
        "auto: light for small images, randaugment for natural ones")
    ema: bool = Field(False, description="keep an EMA of the weights (timm.utils.ModelEmaV3), validated beside them")
    ema_decay: float = Field(0.999, gt=0, lt=1, description="EMA decay (with timm's warm-up)")
    clip_grad: float | None = Field(None, gt=0, description="clip the gradient norm to this value; off by default")

    @field_validator("opt", "sched")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @property
    def mixes(self) -> bool:
        return (self.mixup > 0 or self.cutmix > 0) and self.mixup_prob > 0


class TrainSettings(BaseModel):
    """Where and on what a training run happens, beside its recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field("digits", min_length=1, description="digits | fashion-mnist[:DIR] | mnist:DIR | cifar10:DIR | "
                      "cifar100:DIR | an ImageFolder path | a plugin's dataset (composer list)")
    subset: int | None = Field(None, ge=1, description="train on N images of the training split (seeded, "
                               "stratified); default: all of it")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the training split held out for "
                                "validation (seeded, stratified); a test split is never read by a search")
    train_size: int | None = Field(None, ge=1, description="resolution models are compiled and trained at "
                                   "(default: the data's own size rounded up to the network's stride)")
    loader_workers: int | None = Field(None, ge=0, description="DataLoader worker processes (default: 0 for data "
                                       "held in memory, up to 4 for image folders)")
    device: str = Field("cpu", min_length=1, description="cpu | cuda | cuda:N | mps: where trials train and what "
                        "latency is predicted for")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision: off | bf16 | fp16 (fp16 with a "
                                                "gradient scaler; not on a CPU)")
    channels_last: bool = Field(False, description="train in channels-last memory format")
    specialize: bool = Field(True, description="build each convolution for its map size (docs/small-images.md: "
                             "cropped kernels, matrix products, CPU training paths); --no-specialize builds plain "
                             "convolutions throughout (the same results, slower on small maps)")
    conv_paths: Literal["rules", "measured"] = Field(
        "rules", description="each depthwise convolution's CPU training path (as built, dense operator, "
        "channels-last): rules | measured (timed on this machine at the training batch, kept in the latency "
        "table; docs/small-images.md; on CUDA: torch.backends.cudnn.benchmark); the same results up to float "
        "rounding")
    recipe: Recipe = Field(default_factory=Recipe)

    @model_validator(mode="after")
    def _amp_fits_device(self) -> TrainSettings:
        if self.amp == "fp16" and self.device.split(":")[0] == "cpu":
            raise ValueError("--amp fp16 needs a GPU (a CPU has no fp16 autocast); use --amp bf16 or --amp off")
        return self

    def recorded(self) -> dict[str, Any]:
        """What a study records and compares (a changed value refuses to continue it): everything that changes
        what a trial's number means; loader workers, the specialized build and the convolutions' training paths (speed
        only) do not."""
        out = self.model_dump(exclude={"loader_workers", "specialize", "conv_paths"})
        out["recipe"] = self.recipe.model_dump()
        return out


# -- flags, declared once ------------------------------------------------------------------------------------------

_FLAG_FIELDS = {  # TrainSettings / Recipe field -> flag; search, sweep, proxy-check and train take the same
    "data": "--data", "subset": "--subset", "val_fraction": "--val-fraction", "train_size": "--train-size",
    "loader_workers": "--loader-workers", "amp": "--amp", "channels_last": "--channels-last",
}


_CHOICES = {"amp": AMP, "augment": AUGMENT, "conv_paths": CONV_PATHS}


def _flag(name: str) -> str:
    return _FLAG_FIELDS.get(name, "--" + name.replace("_", "-"))


def _type_of(annotation) -> Any:
    text = str(annotation)
    for name, kind in (("float", float), ("int", int)):
        if name in text:
            return kind
    return str


def add_flags(parser: argparse.ArgumentParser, *, recipe: bool = True, device: bool = True) -> None:
    """Declare the training flags on ``parser`` from the fields' own descriptions (one declaration for every
    command). Every flag defaults to None (not given), so :func:`from_flags` can tell a flag from a default and a
    space file's ``train:`` section keeps what the command line leaves alone."""
    group = parser.add_argument_group("training (--objective train)")
    fields = dict(TrainSettings.model_fields)
    fields.pop("recipe")
    if not device:
        for name in ("device", "amp", "channels_last"):
            fields.pop(name)
    items = list(fields.items()) + (list(Recipe.model_fields.items()) if recipe else [])
    for name, info in items:
        flag = _flag(name)
        default = info.get_default(call_default_factory=True)
        help_text = f"{info.description} (default {default})" if default is not None else info.description
        if info.annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif name in _CHOICES:
            group.add_argument(flag, dest=name, choices=_CHOICES[name], default=None, help=help_text)
        else:
            group.add_argument(flag, dest=name, type=_type_of(info.annotation), default=None,
                               metavar=name.upper(), help=help_text)
    # the first spelling of --train-batch: today's --batch-size is the latency batch, so the two cannot be confused


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The training flags the user gave (None: not given), split into settings and recipe keys."""
    given = {}
    for name in [*TrainSettings.model_fields, *Recipe.model_fields]:
        value = getattr(args, name, None)
        if value is not None and name != "recipe":
            given[name] = value
    return given


def merge(base: dict[str, Any] | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """A ``train:`` mapping (settings and recipe keys side by side, as a space file writes them) with
    ``overrides`` (the command line's) on top, as the nested mapping :class:`TrainSettings` takes."""
    flat = {**(base or {}), **{k: v for k, v in overrides.items() if v is not None}}
    settings = {k: v for k, v in flat.items() if k in TrainSettings.model_fields and k != "recipe"}
    recipe = {k: v for k, v in flat.items() if k in Recipe.model_fields}
    unknown = [k for k in flat if k not in settings and k not in recipe]
    if unknown:
        allowed = sorted([*[k for k in TrainSettings.model_fields if k != "recipe"], *Recipe.model_fields])
        raise KeyError(unknown[0], allowed)
    return {**settings, "recipe": recipe}


def problems(train: dict, overrides: dict | None = None) -> list[tuple[str | None, str]]:
    """(key, message) for every problem of a ``train:`` mapping (with ``overrides``, the command line's, on top):
    unknown keys with the nearest known one, and the values pydantic refuses, each with what was given."""
    overrides = overrides or {}
    allowed = sorted([*(k for k in TrainSettings.model_fields if k != "recipe"), *Recipe.model_fields])
    unknown = [k for k in {**train, **overrides} if k not in allowed]
    if unknown:
        out = []
        for k in unknown:
            near = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            out.append((k, f"unknown training setting {k!r}{hint} allowed: {', '.join(allowed)}"))
        return out
    try:
        TrainSettings.model_validate(merge(train, overrides))
    except ValidationError as exc:
        out = []
        for error in exc.errors():
            loc = [p for p in error["loc"] if p != "recipe"]
            key = str(loc[0]) if loc else None
            given = overrides[key] if key in overrides else train.get(key)   # what the merge validated
            text = error["msg"].removeprefix("Value error, ")
            out.append((key, f"{text}, got {given!r}" if key else text))
        return out
    return []


__all__ = ["AMP", "AUGMENT", "CONV_PATHS", "Recipe", "TrainSettings", "add_flags", "flag_values", "merge", "problems"]
