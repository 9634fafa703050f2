"""A trained model as one folder that rebuilds it with its weights: what ``composer train`` writes, ``composer
eval`` and ``compose(DIR)`` read, and timm loads (``timm.create_model("local-dir:DIR")``, timm's own layout of a
``config.json`` beside ``model.safetensors``).

    DIR/spec.yaml            the exact spec that was built (compose(DIR) builds it)
    DIR/model.safetensors    the weights (model_ema.safetensors too when EMA was on)
    DIR/train.yaml           data, split, recipe, seed, world size, versions: what reproduces the run
    DIR/metrics.csv          per epoch: losses, validation top-1 / top-5, learning rate, img/s, seconds
    DIR/curves.png           the learning curves
    DIR/config.json          timm's pretrained cfg (mean, std, input size, crop) and the spec as model_args
    DIR/checkpoint.pt        the training state while a run is unfinished (resumed on rerun; removed at the end)
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "model_ema.safetensors"
REQUIRED = ("spec.yaml", WEIGHTS, "train.yaml")


class BundleError(ValueError):
    """A folder that is not a usable bundle: the message names the folder, the file and what is wrong."""


def is_bundle(path: Any) -> bool:
    try:
        p = Path(os.fspath(path))
        return p.is_dir() and (p / "spec.yaml").is_file()
    except (TypeError, OSError, ValueError):
        return False


@dataclass
class Bundle:
    folder: Path
    spec: Any                 # composer.spec.Spec
    train: dict               # train.yaml

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS


def read_bundle(folder: str | os.PathLike) -> Bundle:
    from ..spec import load_spec

    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder}: not a folder (a bundle is the folder composer train writes)")
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise BundleError(f"{folder}: not a complete bundle: {', '.join(missing)} missing (composer train writes "
                          f"{', '.join(REQUIRED)} at the end of a run)")
    spec = load_spec(str(folder / "spec.yaml"))
    try:
        info = yaml.safe_load((folder / "train.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise BundleError(f"{folder / 'train.yaml'}: not YAML ({str(exc).splitlines()[0]})") from None
    return Bundle(folder, spec, info)


def read_weights(path: str | os.PathLike) -> dict:
    """A state dict from a ``.safetensors`` file or a torch checkpoint (tensors only)."""
    from ..weights import read_state_dict

    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise BundleError(f"no weights file at {path}")
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:   # safetensors raises its own errors for a damaged file
            raise BundleError(f"{path}: cannot read the weights ({type(exc).__name__}: {exc})") from None
    return read_state_dict(path)


def load_strict(model, state: dict, where: str) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch names the first mismatched key (in the model's order,
    from the stem on) and both shapes, and lists missing and unexpected keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]   # in the model's order
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes, first {k}: weights {tuple(state[k].shape)} vs model "
                         f"{tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:5])}"
                         f"{', ...' if len(unexpected) > 5 else ''})")
        raise BundleError(f"{where}: the weights do not fit the spec: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def timm_config(spec, data: dict) -> dict:
    """timm's ``config.json`` (its hub layout): the generic ``composer_spec`` architecture with the spec as
    ``model_args``, and a pretrained cfg with the data's normalisation and the training resolution."""
    from ..spec import spec_to_data

    size = spec.input_size
    return {"architecture": "composer_spec", "num_classes": spec.num_classes,
            "model_args": {"spec": spec_to_data(spec)},
            "pretrained_cfg": {"input_size": [spec.in_chans, size, size], "interpolation": "bilinear",
                               "mean": list(data["mean"]), "std": list(data["std"]), "crop_pct": 1.0,
                               "crop_mode": "center", "num_classes": spec.num_classes,
                               "label_names": data.get("classes") or None, "license": "apache-2.0"}}


def write_metrics(path: Path, history) -> None:
    from dataclasses import asdict

    rows = [asdict(h) for h in history]
    keys = ["epoch", "train_loss", "val_loss", "top1", "top5", "top1_ema", "lr", "img_per_s", "seconds",
            "peak_mem_mb"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in keys})


def plot_curves(path: Path, history, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch + 1 for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    loss_ax.plot(epochs, [h.train_loss for h in history], marker="o", label="train")
    loss_ax.plot(epochs, [h.val_loss for h in history], marker="o", label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [h.top1 for h in history], marker="o", label="top-1")
    if any(h.top1_ema is not None for h in history):
        acc_ax.plot(epochs, [h.top1_ema for h in history], marker="o", label="top-1 (EMA)")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy")
    acc_ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


__all__ = ["EMA_WEIGHTS", "WEIGHTS", "Bundle", "BundleError", "is_bundle", "load_strict",
           "read_bundle", "read_weights", "timm_config", "write_metrics"]
