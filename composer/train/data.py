"""Data sources for training: what ``--data`` names, read from disk without ever downloading, split so that
nothing leaks, and streamed through a ``torch.utils.data.DataLoader``.

* ``digits``: scikit-learn's 1,797 8x8 handwritten digits (no test split).
* ``fashion-mnist`` / ``fashion-mnist:DIR``: Zalando's IDX files (60,000 training and 10,000 test images, 28x28,
  gzipped or not), found in DIR (or DIR/FashionMNIST/raw, torchvision's layout), ``$COMPOSER_DATA/fashion-mnist``
  or where Debian's ``dataset-fashion-mnist`` puts them (/usr/share/datasets/fashion-mnist).
* ``mnist:DIR``: the same format (DIR, or DIR/MNIST/raw).
* ``cifar10:DIR`` / ``cifar100:DIR``: the python batches torchvision leaves (DIR/cifar-10-batches-py,
  DIR/cifar-100-python), read by an unpickler that admits nothing but arrays, lists and dicts.
* a folder: an ImageFolder (one sub-folder of images per class); with ``train/`` and ``val/`` sub-folders, the
  first is the training split and the second serves as the test split.
* a plugin's dataset: ``register_dataset(name, factory)`` (entry-point group ``composer.datasets``), where
  ``factory(argument)`` returns a :class:`DataSource` (``--data NAME`` or ``--data NAME:ARGUMENT``).

A :class:`DataSource` holds its training split and, for the test split, only a function that opens it: a
search never calls it (``composer eval`` does). The validation split is held out of the training split
(seeded, stratified; :func:`split_indices`). Images that fit in memory many times over (digits, the IDX sets,
CIFAR) are kept as uint8 arrays and turned into float batches on the training device
(:class:`BatchPrep`); image folders are decoded in the loader's worker processes, so memory does not grow with
the dataset.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..paths import At, check_name, exists, readable_folder
from ..registry import DATASETS

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DATA_FORMS = ("digits, fashion-mnist, fashion-mnist:DIR, mnist:DIR, cifar10:DIR, cifar100:DIR, an ImageFolder "
              "path, or a registered dataset")


class DataError(ValueError):
    """A data source that cannot be read as asked: the message names the flag, what was given and what is
    allowed (the command line prints it in one line and exits 2)."""


@dataclass
class ArraySplit:
    """Images held in memory: uint8 ``images`` (N, H, W) or (N, H, W, C) and int ``labels`` (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> np.ndarray:
        return self.labels


@dataclass
class FolderSplit:
    """Image files, decoded only when a batch needs them: (path, class index) pairs."""

    samples: list[tuple[str, int]]
    skipped: int = 0   # files in the class folders that are not images by their extension

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


@dataclass
class DataSource:
    """One data set: its training split, a way to open its test split, and what a model needs to know."""

    name: str
    train: ArraySplit | FolderSplit
    num_classes: int
    in_chans: int
    natural_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    open_test: Callable[[], ArraySplit | FolderSplit] | None = None
    """Opens the test split; None where the data set has none. Only ``composer eval`` calls it."""
    natural_images: bool = False
    """Photographs (random-resized crops and RandAugment fit) rather than small glyph-like images."""
    flip: bool = True
    """Whether a horizontal flip keeps an image's class (not for digits)."""
    classes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def test_name(self) -> str | None:
        return None if self.open_test is None else "test"


# -- IDX (MNIST, Fashion-MNIST) --------------------------------------------------------------------------------

_IDX_MAGIC = {3: 2051, 1: 2049}   # images (3 dimensions), labels (1 dimension); type 0x08: unsigned bytes


def _read_bytes(path: Path, flag: str) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:   # gzip.BadGzipFile is an OSError
        raise DataError(f"{flag}: cannot read {path} ({getattr(exc, 'strerror', None) or exc}); the file is damaged "
                        "or truncated") from None


def read_idx(path: Path, dims: int, flag: str = "--data") -> np.ndarray:
    """An IDX file of unsigned bytes (16-byte header for images, 8 for labels; counts big-endian), checked."""
    raw = _read_bytes(path, flag)
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{flag}: {path} is not an IDX file (only {len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[dims]:
        what = "images" if dims == 3 else "labels"
        raise DataError(f"{flag}: {path} is not an IDX file of {what} (magic number {magic}, expected "
                        f"{_IDX_MAGIC[dims]})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise DataError(f"{flag}: {path} is truncated or damaged: its header promises {math.prod(shape)} values "
                        f"({' x '.join(map(str, shape))}), the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_pair(folder: Path, prefix: str, flag: str) -> ArraySplit:
    images = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"), 3, flag)
    labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"), 1, flag)
    if len(images) != len(labels):
        raise DataError(f"{flag}: {folder}: {prefix}-images holds {len(images)} images but {prefix}-labels holds "
                        f"{len(labels)} labels")
    return ArraySplit(images, labels.astype(np.int64))


def _idx_folder(candidates: Sequence[Path], flag: str, what: str, hint: str) -> Path:
    looked = []
    for folder in candidates:
        looked.append(str(folder))
        if _idx_file(folder, "train-images-idx3-ubyte") and _idx_file(folder, "train-labels-idx1-ubyte"):
            return folder
    raise DataError(f"{flag}: no {what} files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]) in "
                    f"{', '.join(looked)}; {hint}")


_FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"]


def _idx_source(name: str, folder: Path, classes: list[str], flip: bool, flag: str) -> DataSource:
    train = _idx_pair(folder, "train", flag)
    has_test = _idx_file(folder, "t10k-images-idx3-ubyte") and _idx_file(folder, "t10k-labels-idx1-ubyte")
    opener = (lambda: _idx_pair(folder, "t10k", flag)) if has_test else None
    num = int(train.labels.max()) + 1 if len(train.labels) else 0
    return DataSource(name, train, max(num, len(classes)), 1, int(min(train.images.shape[1:3])), (0.5,), (0.5,),
                      opener, natural_images=False, flip=flip, classes=classes,
                      notes=[f"{name}: {len(train)} training images from {folder}"])


def fashion_mnist(argument: str | None = None, flag: str = "--data") -> DataSource:
    if argument:
        root = check_name(argument, At(flag))   # a name no file can have: one located line, not an OSError
        candidates = [root, root / "FashionMNIST" / "raw", root / "raw"]
    else:
        candidates = []
        if os.environ.get("COMPOSER_DATA"):
            candidates.append(Path(os.environ["COMPOSER_DATA"]) / "fashion-mnist")
        candidates.append(DEBIAN_FASHION_MNIST)
    folder = _idx_folder(candidates, flag, "Fashion-MNIST",
                         "install Debian's package (apt-get install dataset-fashion-mnist), put the four IDX files in "
                         "$COMPOSER_DATA/fashion-mnist, or give --data fashion-mnist:DIR")
    return _idx_source("fashion-mnist", folder, _FASHION_CLASSES, True, flag)


def mnist(argument: str | None = None, flag: str = "--data") -> DataSource:
    if not argument:
        raise DataError(f"{flag} mnist: give the folder, --data mnist:DIR (torchvision's MNIST/raw layout or the "
                        "four IDX files); nothing is downloaded")
    root = check_name(argument, At(flag))
    folder = _idx_folder([root, root / "MNIST" / "raw", root / "raw"], flag, "MNIST",
                         "give the folder that holds them (or torchvision's root, with MNIST/raw inside)")
    return _idx_source("mnist", folder, [str(i) for i in range(10)], False, flag)


# -- CIFAR -------------------------------------------------------------------------------------------------------

class _ArraysOnly(pickle.Unpickler):
    """CIFAR's python batches are pickles; admit the few globals that rebuild a numpy array, nothing else (a
    pickle can otherwise run any code)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _cifar_batch(path: Path, key: str, flag: str) -> ArraySplit:
    try:
        with open(path, "rb") as handle:
            batch = _ArraysOnly(handle, encoding="latin1").load()
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[key], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{flag}: cannot read {path} as a CIFAR batch ({exc})") from None
    if len(images) != len(labels):
        raise DataError(f"{flag}: {path} holds {len(images)} images but {len(labels)} labels")
    return ArraySplit(np.ascontiguousarray(images), labels)


def _cifar(name: str, argument: str | None, flag: str) -> DataSource:
    hundred = name == "cifar100"
    sub = "cifar-100-python" if hundred else "cifar-10-batches-py"
    if not argument:
        raise DataError(f"{flag} {name}: give the folder, --data {name}:DIR (the folder torchvision's {name.upper()} "
                        f"leaves, with {sub} inside); nothing is downloaded")
    root = check_name(argument, At(flag))
    folder = root / sub if (root / sub).is_dir() else root
    train_files = [folder / "train"] if hundred else [folder / f"data_batch_{i}" for i in range(1, 6)]
    missing = [p.name for p in train_files if not p.is_file()]
    if missing:
        raise DataError(f"{flag} {name}:{argument}: {', '.join(missing)} missing in {folder} (expected torchvision's "
                        f"layout: {sub}/{'train, test' if hundred else 'data_batch_1 ... data_batch_5, test_batch'})")
    key = "fine_labels" if hundred else "labels"
    parts = [_cifar_batch(p, key, flag) for p in train_files]
    train = ArraySplit(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    test_file = folder / ("test" if hundred else "test_batch")
    opener = (lambda: _cifar_batch(test_file, key, flag)) if test_file.is_file() else None
    return DataSource(name, train, 100 if hundred else 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                      opener, natural_images=True, notes=[f"{name}: {len(train)} training images from {folder}"])


# -- digits, folders ---------------------------------------------------------------------------------------------

def digits(argument: str | None = None, flag: str = "--data") -> DataSource:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)
    return DataSource("digits", ArraySplit(images, d.target.astype(np.int64)), 10, 1, 8, (0.3,), (0.4,), None,
                      flip=False, classes=[str(i) for i in range(10)])


def _scan_folder(root: Path, flag: str) -> tuple[list[str], FolderSplit]:
    try:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{flag} {root}: cannot list the folder ({exc.strerror or exc})") from None
    if len(classes) < 2:
        found = f"only the class folder {classes[0]!r}" if classes else "no class folders"
        raise DataError(f"{flag} {root}: an ImageFolder needs one sub-folder of images per class and at least two "
                        f"classes; found {found}")
    samples, skipped, empty = [], 0, []
    for index, name in enumerate(classes):
        count = 0
        for dirpath, _, files in sorted(os.walk(root / name, followlinks=True)):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((os.path.join(dirpath, file), index))
                    count += 1
                elif not file.startswith("."):
                    skipped += 1
        if count == 0:
            empty.append(name)
    if empty:
        raise DataError(f"{flag} {root}: class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)} "
                        f"hold{'' if len(empty) > 1 else 's'} no images ({', '.join(IMAGE_EXTENSIONS)}); remove "
                        "them or add images")
    return classes, FolderSplit(samples, skipped)


def _first_image_size(split: FolderSplit) -> int:
    from PIL import Image

    for path, _ in split.samples[:50]:
        try:
            with Image.open(path) as img:
                return min(img.size)
        except (OSError, ValueError, SyntaxError):
            continue
    return 224


def image_folder(path: str, flag: str = "--data") -> DataSource:
    root = Path(path)
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train = _scan_folder(root / "train", flag)
        test_classes, _ = _scan_folder(root / "val", flag)   # checked now, read only when asked for
        if test_classes != classes:
            raise DataError(f"{flag} {root}: train/ and val/ name different classes ({len(classes)} against "
                            f"{len(test_classes)}); they must hold the same class folders")

        def opener() -> FolderSplit:
            return _scan_folder(root / "val", flag)[1]
    else:
        classes, train = _scan_folder(root, flag)
        opener = None
    size = _first_image_size(train)
    notes = [f"{root}: {len(train)} training images in {len(classes)} classes"]
    if train.skipped:
        notes.append(f"{root}: skipped {train.skipped} files that are not images (by their extension)")
    return DataSource(str(root), train, len(classes), 3, size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), opener,
                      natural_images=size > 64, classes=classes, notes=notes)


_BUILTIN = {"digits": digits, "fashion-mnist": fashion_mnist, "mnist": mnist,
            "cifar10": lambda a, flag="--data": _cifar("cifar10", a, flag),
            "cifar100": lambda a, flag="--data": _cifar("cifar100", a, flag)}


def open_source(text: str, flag: str = "--data") -> DataSource:
    """The data source ``--data`` names (see the module's docstring); a :class:`DataError` says why not."""
    text = str(text)
    name, sep, argument = text.partition(":")
    if name in _BUILTIN:
        return _BUILTIN[name](argument or None, flag)
    from ..registry import load_plugins

    load_plugins()
    if name in DATASETS:
        source = DATASETS[name](argument or None)
        if not isinstance(source, DataSource):
            raise DataError(f"{flag} {text}: the dataset plugin returned a {type(source).__name__}, not a DataSource")
        return source
    at = At(flag)
    if exists(text, at):   # a name no file can have (too long, a NUL) is a located error here, not an OSError
        if not os.path.isdir(text):
            raise DataError(f"{flag} {text}: not a folder; give {DATA_FORMS}")
        return image_folder(str(readable_folder(text, at)), flag)
    import difflib

    known = [*_BUILTIN, *DATASETS]
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise DataError(f"{flag} {text}: no such data set or folder{hint} use {DATA_FORMS} ({', '.join(known)})")


# -- splits ------------------------------------------------------------------------------------------------------

@dataclass
class Splits:
    """Indices into a source's training split: what trains and what validates (disjoint)."""

    train: np.ndarray
    val: np.ndarray


def split_indices(targets: Sequence[int], val_fraction: float, seed: int, subset: int | None = None,
                  flag: str = "--subset") -> Splits:
    """A seeded, stratified validation split held out of the training split (at least one image per class),
    then, with ``subset``, N training images drawn stratified from the rest (each class in proportion, largest
    remainders first; at least one per class)."""
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes = np.unique(targets)
    train_parts, val_parts = [], []
    for c in classes:
        idx = np.flatnonzero(targets == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = min(max(1, int(round(len(idx) * val_fraction))), len(idx) - 1) if len(idx) > 1 else 0
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    if subset is not None:
        available = sum(len(p) for p in train_parts)
        if subset < len(classes):
            raise DataError(f"{flag} {subset}: fewer images than the data's {len(classes)} classes; give at least "
                            f"{len(classes)}")
        if subset > available:
            raise DataError(f"{flag} {subset}: the training split holds {available} images once "
                            f"{sum(len(p) for p in val_parts)} are held out for validation; give at most {available}")
        shares = np.array([len(p) for p in train_parts], dtype=np.float64) * subset / available
        counts = np.maximum(np.floor(shares).astype(np.int64), 1)
        order = np.argsort(-(shares - np.floor(shares)), kind="stable")
        i = 0
        while counts.sum() < subset:
            c = order[i % len(order)]
            if counts[c] < len(train_parts[c]):
                counts[c] += 1
            i += 1
        while counts.sum() > subset:
            c = int(np.argmax(counts))
            counts[c] -= 1
        train_parts = [p[:n] for p, n in zip(train_parts, counts)]
    train = np.sort(np.concatenate(train_parts)) if train_parts else np.zeros(0, np.int64)
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    return Splits(train, val)


# -- loading -----------------------------------------------------------------------------------------------------

class ArrayImages:
    """A map-style dataset over some of an :class:`ArraySplit`'s images; ``__getitems__`` hands the DataLoader a
    whole uint8 batch at once (no per-image Python work)."""

    def __init__(self, split: ArraySplit, indices: np.ndarray | None = None):
        self.split = split
        self.indices = np.arange(len(split)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, positions: list[int]):
        import torch

        idx = self.indices[np.asarray(positions, dtype=np.int64)]
        return torch.from_numpy(self.split.images[idx]), torch.from_numpy(self.split.labels[idx]), []


class FolderImages:
    """A map-style dataset over some of a :class:`FolderSplit`'s files, decoded (and transformed) by the loader's
    workers; a file that cannot be decoded gives None and is dropped from its batch with its path counted."""

    def __init__(self, split: FolderSplit, indices: np.ndarray | None, transform):
        self.split = split
        self.indices = np.arange(len(split)) if indices is None else np.asarray(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.split.samples[int(self.indices[i])]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
            return self.transform(image), label, path
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None, label, path


def collate_files(items):
    """Stack the decoded images of a folder batch; files that failed to decode are dropped, their paths kept."""
    import torch

    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [p for x, _, p in items if x is None]
    if not good:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.long), bad


def _identity(batch):
    return batch


def folder_transform(size: int, source: DataSource, train: bool, augment: str):
    """Per-image PIL transforms for a folder: timm's (random-resized crop, flip, RandAugment) for natural images
    when training with ``randaugment``; otherwise resize + centre crop (augmentation then happens per batch)."""
    if train and augment == "randaugment":
        from timm.data import create_transform

        return create_transform(size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", mean=source.mean,
                                std=source.std, hflip=0.5 if source.flip else 0.0)
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
                               transforms.Normalize(source.mean, source.std)])


def effective_augment(augment: str, source: DataSource) -> str:
    if augment != "auto":
        return augment
    return "randaugment" if source.natural_images and isinstance(source.train, FolderSplit) else "light"


class GlobalBatches:
    """One epoch's batches of indices: a permutation of ``n`` images drawn from ``generator`` (when shuffling),
    cut into global batches of ``batch * world`` images of which rank ``rank`` takes the rank-th slice of
    ``batch``; when training, a last global batch that is not full is dropped. So K processes with ``batch`` each
    see exactly the global batches one process with ``batch * K`` sees (what makes a DDP run equal a single one)."""

    def __init__(self, n: int, batch: int, generator, *, world: int = 1, rank: int = 0, shuffle: bool = True,
                 drop_last: bool = True):
        self.n, self.batch, self.generator = n, batch, generator
        self.world, self.rank, self.shuffle = world, rank, shuffle
        self.drop_last = drop_last and n > batch * world

    def __iter__(self):
        import torch

        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        step = self.batch * self.world
        for start in range(0, self.n, step):
            chunk = order[start:start + step]
            if self.drop_last and len(chunk) < step:
                return
            part = chunk[self.rank * self.batch:(self.rank + 1) * self.batch]
            if len(part):
                yield part.tolist()

    def __len__(self) -> int:
        step = self.batch * self.world
        return self.n // step if self.drop_last else -(-self.n // step)


def make_loader(source: DataSource, split: ArraySplit | FolderSplit, indices: np.ndarray | None, *, size: int,
                batch: int, train: bool, seed: int, workers: int | None, augment: str = "none", world: int = 1,
                rank: int = 0):
    """A DataLoader over ``split[indices]``, batched by :class:`GlobalBatches` (shuffled by
    ``loader.batch_sampler.generator``, which the caller seeds per epoch); every batch full when training (Mixup
    needs even batches)."""
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    if isinstance(split, ArraySplit):
        dataset = ArrayImages(split, indices)
        collate = _identity
        workers = 0 if workers is None else workers
    else:
        dataset = FolderImages(split, indices, folder_transform(size, source, train, augment))
        collate = collate_files
        workers = min(4, os.cpu_count() or 1) if workers is None else workers
    batches = GlobalBatches(len(dataset), batch, torch.Generator().manual_seed(seed), world=world, rank=rank,
                            shuffle=train, drop_last=train)
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate, generator=generator,
                      persistent_workers=False, pin_memory=False)


class BatchPrep:
    """Turns a loader's batch into the model's input on the device: uint8 arrays become floats in [0, 1],
    resized to the training size, normalized; when training with ``light`` augmentation every image is cropped
    from a zero padding of 4 px (scaled with the size) at a random offset and flipped where the data allow it.
    Channels follow the model (a grayscale image repeated for a 3-channel model, an RGB image averaged for a
    1-channel one)."""

    def __init__(self, source: DataSource, size: int, in_chans: int, device, augment: str,
                 channels_last: bool = False):
        import torch

        self.size, self.in_chans, self.device = size, in_chans, torch.device(device)
        self.augment, self.flip, self.channels_last = augment, source.flip, channels_last
        self.mean = torch.tensor(source.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(source.std, device=self.device).view(1, -1, 1, 1)
        self.pad = max(1, round(4 * size / 32))

    def __call__(self, x, train: bool, generator=None):
        import torch
        from torch.nn import functional as F

        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
            x = x.float().div_(255)
            if x.shape[-1] != self.size or x.shape[-2] != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
            x = (x - self.mean[:, : x.shape[1]]) / self.std[:, : x.shape[1]]
        if train and self.augment == "light" and len(x):
            x = self._crop_flip(x, generator)
        if x.shape[1] != self.in_chans:
            x = x.mean(1, keepdim=True) if self.in_chans == 1 else x[:, :1].expand(-1, self.in_chans, -1, -1)
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        return x

    def _crop_flip(self, x, generator):
        import torch
        from torch.nn import functional as F

        b, c, h, w = x.shape
        p = self.pad
        padded = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * p)
        x = padded.gather(2, rows)
        cols = (ox[:, None] + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
        x = x.gather(3, cols)
        if self.flip:
            flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
        return x


def describe_split(source: DataSource, splits: Splits) -> str:
    return (f"{source.name}: training on {len(splits.train)} images, validating on {len(splits.val)} held out of "
            f"the training split (the test split is not read)")


__all__ = ["ArrayImages", "ArraySplit", "BatchPrep", "DataError", "DataSource", "FolderImages", "FolderSplit",
           "GlobalBatches",
           "Splits", "describe_split", "digits", "effective_augment", "fashion_mnist", "image_folder", "make_loader",
           "mnist", "open_source", "read_idx", "split_indices"]
