import gzip
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

# Two-core CI machines run much slower (and bimodally) with intra-op threading; pin it.
torch.set_num_threads(1)
# latency tables (composer.latency) of the tests go to a folder of their own, not to the user's ~/.cache
os.environ.setdefault("COMPOSER_CACHE_DIR", tempfile.mkdtemp(prefix="composer-test-cache-"))

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"

TINY_SPACE = """\
name: tiny
base:
  macro: metaformer
  input_size: 32
  num_classes: 10
  widths: [16, 32, 32, 64]
  depths: [1, 1, 1, 1]
  layout: Conv-Conv-A-A
  mixers: {A: {head_dim: 16}, M: {head_dim: 16}}
  drop_path_rate: 0.0
choices:
  layout: [[Conv, gnConv, Pool], [Conv, gnConv, Pool], [Conv, A, M], [Conv, A, M]]
  depths: [1, 2]
  mixers.Conv.kernel_size: [3, 5]
  mixers.gnConv.order: [2, 3]
budget: {macs: 10M}
"""
"""A search space of tiny 32-px models: trials take a fraction of a second (tests/test_search*.py)."""


@pytest.fixture
def run_cli(capsys):
    """Run ``composer ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from composer.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def built_macs(monkeypatch):
    """The MACs of every model a search builds (composer.composed.compose watched): a list filled as it runs."""
    import composer
    import composer.composed as build_module

    built, real = [], build_module.compose

    def counting(source):
        built.append(composer.estimate(source).macs)
        return real(source)

    monkeypatch.setattr(build_module, "compose", counting)
    return built


@pytest.fixture
def write_spec(tmp_path):
    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def readme_commands() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    install = re.search(r"## Install and run.*?```bash\n(.*?)\n```", text, re.S).group(1).strip()
    test = re.search(r"## Test.*?```bash\n(.*?)\n```", text, re.S).group(1).strip()
    return install, test


def idx_bytes(array: np.ndarray) -> bytes:
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 200, n_test: int = 50, gz: bool = True, seed: int = 0) -> Path:
    """Fashion-MNIST-shaped IDX files: class c's images are bright in row band c (learnable in an epoch)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 4: 2 * c + 7] = 250
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            raw = idx_bytes(array)
            path = folder / f"{prefix}-{kind}-ubyte{'.gz' if gz else ''}"
            path.write_bytes(gzip.compress(raw) if gz else raw)
    return folder
