"""composer.train: data sources read from disk (IDX, CIFAR batches, image folders, plugins), splits that cannot
leak, the recipe as data, and the search's train objective on them (composer/train/)."""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from composer.cli import main
from composer.registry import isolated, register_dataset
from composer.search import run
from composer.train import data as data_module
from composer.train.data import (
    ArraySplit,
    DataError,
    DataSource,
    open_source,
    read_idx,
    split_indices,
)

from conftest import ROOT, TINY_SPACE, idx_bytes, write_idx_set

# a 28-px grayscale space of tiny models (stride 16: trials train at 32 px)
SMALL_SPACE = (TINY_SPACE.replace("[16, 32, 32, 64]", "[8, 16, 16, 32]").replace("head_dim: 16", "head_dim: 8"))


# -- IDX ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_are_read_gzipped_or_not(tmp_path, gz):
    folder = write_idx_set(tmp_path / "fm", gz=gz)
    source = open_source(f"fashion-mnist:{folder}")
    assert source.train.images.shape == (200, 28, 28) and source.train.images.dtype == np.uint8
    assert list(source.train.labels[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert (source.num_classes, source.in_chans, source.natural_size) == (10, 1, 28)
    assert source.open_test().images.shape == (50, 28, 28)


def test_torchvisions_layout_is_found(tmp_path):
    write_idx_set(tmp_path / "root" / "FashionMNIST" / "raw", gz=False)
    write_idx_set(tmp_path / "mroot" / "MNIST" / "raw")
    assert len(open_source(f"fashion-mnist:{tmp_path / 'root'}").train) == 200
    assert open_source(f"mnist:{tmp_path / 'mroot'}").name == "mnist"


def test_damaged_idx_files_are_refused_in_one_line(tmp_path):
    folder = write_idx_set(tmp_path / "fm", gz=False)
    images = folder / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:-100])
    with pytest.raises(DataError, match=r"is truncated or damaged: its header promises 156800 values \(200 x 28 x "
                                        r"28\), the file holds 156700"):
        read_idx(images, 3)
    images.write_bytes(b"\x00\x00\x08\x01" + raw[4:])
    with pytest.raises(DataError, match="is not an IDX file of images"):
        open_source(f"fashion-mnist:{folder}")
    images.write_bytes(raw)
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(150)))
    with pytest.raises(DataError, match="train-images holds 200 images but train-labels holds 150 labels"):
        open_source(f"fashion-mnist:{folder}")
    (folder / "train-labels-idx1-ubyte").write_bytes(b"\x1f\x8b garbage")
    gz = folder / "train-labels-idx1-ubyte.gz"
    (folder / "train-labels-idx1-ubyte").unlink()
    gz.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    with pytest.raises(DataError, match="cannot read .*train-labels-idx1-ubyte.gz"):
        open_source(f"fashion-mnist:{folder}")


def test_fashion_mnist_missing_everywhere_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setenv("COMPOSER_DATA", str(tmp_path / "mine"))
    space = tmp_path / "s.yaml"
    space.write_text(SMALL_SPACE)
    code = main(["search", str(space), "--objective", "train", "--data", "fashion-mnist", "--trials", "1",
                 "--run-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: --data: no Fashion-MNIST files")
    assert f"{tmp_path / 'mine' / 'fashion-mnist'}, {tmp_path / 'debian'}" in err
    assert "apt-get install dataset-fashion-mnist" in err
    write_idx_set(tmp_path / "mine" / "fashion-mnist")
    assert len(open_source("fashion-mnist").train) == 200   # $COMPOSER_DATA/fashion-mnist


@pytest.mark.skipif(not data_module.DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not "
                    "installed (.ci/run installs it)")
def test_debians_fashion_mnist_is_the_real_one(monkeypatch):
    monkeypatch.delenv("COMPOSER_DATA", raising=False)
    source = open_source("fashion-mnist")
    assert source.train.images.shape == (60000, 28, 28)
    assert np.bincount(source.train.labels).tolist() == [6000] * 10
    test = source.open_test()
    assert test.images.shape == (10000, 28, 28) and np.bincount(test.labels).tolist() == [1000] * 10


# -- CIFAR -------------------------------------------------------------------------------------------------------

def test_cifar_batches_are_read_and_a_hostile_pickle_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        batch = {"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8), "labels": [j % 10 for j in range(20)]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    source = open_source(f"cifar10:{tmp_path}")
    assert source.train.images.shape == (100, 32, 32, 3) and source.num_classes == 10 and source.in_chans == 3
    assert source.open_test is None   # no test_batch: no test split

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned > " + str(tmp_path / "owned"),))

    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DataError, match="refused to load"):
        open_source(f"cifar10:{tmp_path}")
    assert not (tmp_path / "owned").exists()
    with pytest.raises(DataError, match=r"train missing in .* \(expected torchvision's layout"):
        open_source(f"cifar100:{tmp_path}")


# -- splits ------------------------------------------------------------------------------------------------------

def test_the_validation_split_is_held_out_stratified_and_seeded():
    targets = np.repeat(np.arange(10), [100, 90, 80, 70, 60, 50, 40, 30, 20, 10])
    a = split_indices(targets, 0.1, seed=3)
    b = split_indices(targets, 0.1, seed=3)
    c = split_indices(targets, 0.1, seed=4)
    assert np.array_equal(a.val, b.val) and not np.array_equal(a.val, c.val)
    assert not set(a.train) & set(a.val) and len(a.train) + len(a.val) == len(targets)
    assert np.bincount(targets[a.val]).tolist() == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    sub = split_indices(targets, 0.1, seed=3, subset=45)
    assert len(sub.train) == 45 and np.array_equal(sub.val, a.val) and set(sub.train) <= set(a.train)
    assert np.bincount(targets[sub.train], minlength=10).min() >= 1
    with pytest.raises(DataError, match="--subset 5: fewer images than the data's 10 classes"):
        split_indices(targets, 0.1, seed=0, subset=5)
    with pytest.raises(DataError, match="--subset 500: the training split holds 495 images once 55 are held out"):
        split_indices(targets, 0.1, seed=0, subset=500)


# -- image folders -----------------------------------------------------------------------------------------------

def _png(path: Path, value: int, size: int = 12) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def make_folder(root: Path, classes: int = 3, per_class: int = 20, size: int = 12) -> Path:
    for c in range(classes):
        for i in range(per_class):
            _png(root / f"class{c}" / f"{i}.png", 40 + 80 * c + i, size)
    return root


@pytest.mark.parametrize("layout, message", [
    ({}, "found no class folders"),
    ({"only": 2}, "found only the class folder 'only'"),
    ({"a": 2, "b": 0}, "class folder b holds no images"),
])
def test_bad_image_folders_exit_2_with_one_line(tmp_path, capsys, layout, message):
    root = tmp_path / "images"
    root.mkdir()
    for name, count in layout.items():
        (root / name).mkdir()
        for i in range(count):
            _png(root / name / f"{i}.png", 100)
    space = tmp_path / "s.yaml"
    space.write_text(SMALL_SPACE)
    code = main(["search", str(space), "--objective", "train", "--data", str(root), "--trials", "1", "--run-dir",
                 str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err and err.startswith("error: --data ")


def test_files_that_are_not_images_are_skipped_and_a_broken_image_never_ends_the_trial(tmp_path, capsys):
    root = make_folder(tmp_path / "images", per_class=12)
    (root / "class0" / "notes.txt").write_text("not an image")
    (root / "class1" / "README").write_text("nor this")
    broken = root / "class2" / "broken.png"
    broken.write_bytes((root / "class2" / "0.png").read_bytes()[:40])   # a truncated PNG
    source = open_source(str(root))
    assert len(source.train) == 37 and source.train.skipped == 2
    assert any("skipped 2 files that are not images" in n for n in source.notes)
    space = tmp_path / "s.yaml"
    space.write_text(SMALL_SPACE)
    code = main(["search", str(space), "--objective", "train", "--data", str(root), "--trials", "1", "--epochs", "1",
                 "--val-fraction", "0.2", "--train-batch", "4", "--run-dir", str(tmp_path / "r"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped 2 files that are not images" in out
    trial = optuna.load_study(study_name="tiny-train", storage=f"sqlite:///{tmp_path / 'r' / 'study.db'}").trials[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs.get("skipped_images") == 1
    assert f"could not be decoded (first: {broken})" in out


# -- the search on real-format data ------------------------------------------------------------------------------

def test_a_train_search_on_fashion_mnist_never_opens_the_test_split(tmp_path):
    """The acceptance run at test scale: --data fashion-mnist:DIR --subset --epochs 1 --trials 2; trials.csv
    names the validation split; no file of the test split is opened (an audit hook sees every open)."""
    folder = write_idx_set(tmp_path / "fm", n_train=300)
    opened: list[str] = []
    watching = [True]

    def hook(event, args):
        if watching[0] and event == "open" and args and "t10k" in str(args[0]):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    space = tmp_path / "s.yaml"
    space.write_text(SMALL_SPACE)
    try:
        result = run(space, objective="train", trials=2, run_dir=str(tmp_path / "r"), progress=False,
                     log=lambda *a: None, train={"data": f"fashion-mnist:{folder}", "subset": 100, "epochs": 1,
                                                 "train_batch": 32})
    finally:
        watching[0] = False
    assert opened == []
    rows = (tmp_path / "r" / "trials.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "val_split" in header and "img_per_s" in header and "peak_mem_mb" in header
    built = [t for t in result.study.trials if t.user_attrs.get("built")]
    assert built and all(t.user_attrs["val_split"].startswith("val (30 images held out of fashion-mnist's training")
                         for t in built)
    assert all(t.user_attrs["train_images"] == 100 and t.user_attrs["spec"]["in_chans"] == 1 for t in built)
    assert result.study.user_attrs["settings"]["train"]["recipe"]["epochs"] == 1
    # a changed recipe refuses to continue the study
    with pytest.raises(Exception, match="was run with other settings"):
        run(space, objective="train", trials=3, run_dir=str(tmp_path / "r"), progress=False, log=lambda *a: None,
            train={"data": f"fashion-mnist:{folder}", "subset": 100, "epochs": 1, "train_batch": 32, "lr": 0.01})


def test_a_plugins_dataset_trains_through_the_registry(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 4
    images = rng.integers(0, 50, (120, 20, 20)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 5 * c: 5 * c + 5] = 255

    with isolated():
        @register_dataset("stripes")
        def stripes(argument):
            return DataSource("stripes", ArraySplit(images, labels), 4, 1, 20, (0.5,), (0.5,))

        space = tmp_path / "s.yaml"
        space.write_text(SMALL_SPACE)
        result = run(space, objective="train", trials=1, run_dir=str(tmp_path / "r"), progress=False,
                     log=lambda *a: None, train={"data": "stripes", "epochs": 1, "train_batch": 16})
    trial = result.study.trials[0]
    assert trial.state.name == "COMPLETE" and trial.user_attrs["spec"]["num_classes"] == 4


# -- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--amp", "fp16"], "--amp fp16 needs a GPU (a CPU has no fp16 autocast)"),
    (["--lr", "-1"], "--lr: Input should be greater than 0, got -1.0"),
    (["--subset", "0"], "--subset: Input should be greater than or equal to 1, got 0"),
    (["--val-fraction", "1.5"], "--val-fraction: Input should be less than 1, got 1.5"),
    (["--gpus", "0", "--device", "cpu"], "--gpus 0: GPUs train only with --device cuda (got --device cpu)"),
    (["--data", "fashion-mnst"], "did you mean 'fashion-mnist'?"),
])
def test_bad_training_flags_exit_2_with_one_line(tmp_path, capsys, args, message):
    space = tmp_path / "s.yaml"
    space.write_text(SMALL_SPACE)
    code = main(["search", str(space), "--objective", "train", "--trials", "1", "--run-dir", str(tmp_path / "r"),
                 "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "--device cuda: no CUDA GPU is visible to this process"),
    (["--device", "cuda", "--gpus", "0,1"], "--gpus 0,1: GPU 0 does not exist; this machine shows no GPU"),
])
def test_gpus_that_are_not_there_exit_2(tmp_path, capsys, args, message):
    space = tmp_path / "s.yaml"
    space.write_text(SMALL_SPACE)
    code = main(["search", str(space), "--objective", "train", "--trials", "1", "--run-dir", str(tmp_path / "r"),
                 "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("section, message", [
    ("train: {epochs: 2, lerning_rate: 0.1}", "s.yaml:17: train.lerning_rate: unknown training setting "
                                              "'lerning_rate'"),
    ("train: {lr: -0.5}", "s.yaml:17: train.lr: Input should be greater than 0, got -0.5"),
    ("train: {mixup: 0.2, smoothing: 1.5}", "s.yaml:17: train.smoothing: Input should be less than 1, got 1.5"),
])
def test_a_spaces_train_section_is_validated_where_it_is_written(tmp_path, capsys, section, message):
    space = tmp_path / "s.yaml"
    space.write_text(SMALL_SPACE + section + "\n")
    code = main(["search", str(space), "--objective", "train", "--trials", "1", "--run-dir", str(tmp_path / "r"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err, err


def test_the_old_batch_flag_still_works_with_a_note(tmp_path, capsys):
    space = tmp_path / "s.yaml"
    space.write_text(SMALL_SPACE)
    code = main(["search", str(space), "--objective", "macs", "--trials", "1", "--batch-size", "2", "--run-dir",
                 str(tmp_path / "r"), "--no-progress"])
    assert code == 0
    assert "note: --batch-size is the latency batch, now spelled --latency-batch" in capsys.readouterr().err


# -- resuming with loader workers --------------------------------------------------------------------------------

def test_a_sigkilled_trial_with_loader_workers_resumes_from_its_last_epoch(tmp_path, capsys):
    root = make_folder(tmp_path / "images", classes=3, per_class=40, size=16)
    space = tmp_path / "s.yaml"
    space.write_text(SMALL_SPACE.replace("depths: [1, 2]", "depths: [2]"))
    run_dir = tmp_path / "run"
    args = ["search", str(space), "--objective", "train", "--data", str(root), "--loader-workers", "2", "--epochs",
            "3", "--train-batch", "8", "--trials", "1", "--run-dir", str(run_dir), "--heartbeat", "1", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "composer.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    first = run_dir / "checkpoints" / "trial0.pt"
    try:
        end = time.time() + 180
        while not first.exists() and proc.poll() is None and time.time() < end:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.3)   # into the next epoch, loader workers running
        os.killpg(proc.pid, signal.SIGKILL)   # the worker and its loader processes
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resuming the training of trial 0 at epoch" in out
    trials = optuna.load_study(study_name="tiny-train", storage=f"sqlite:///{run_dir / 'study.db'}").get_trials()
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state.name == "COMPLETE" and retry.user_attrs["resumed_at_epoch"] >= 1
    assert trials[0].user_attrs["epochs_trained"] + retry.user_attrs["epochs_trained"] == 3


def test_train_spec_builds_its_model_from_the_seed_whatever_ran_before(monkeypatch):
    # benchmarks/search_quality.py trains architecture after architecture in one process: a resumed stage must
    # start each from the same weights as an uninterrupted one
    from composer import load_spec
    from composer.train import TrainSettings, loop
    from composer.train.trial import prepare, train_spec

    first = []
    monkeypatch.setattr(loop, "train", lambda model, *a, **k: first.append(
        torch.cat([p.detach().flatten() for p in model.parameters()])))
    spec = {"name": "tiny", "macro": "metaformer", "input_size": 8, "in_chans": 1, "num_classes": 10,
            "widths": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "layout": "Conv-Conv-A-A",
            "mixers": {"A": {"head_dim": 8}}}
    training = prepare(TrainSettings.model_validate({"data": "digits", "subset": 100}), load_spec(spec), 3)
    train_spec(spec, training)
    torch.rand(1000)   # the global generator moves on, as other work in the process moves it
    train_spec(spec, training)
    assert len(first) == 2 and torch.equal(first[0], first[1])


def test_no_specialize_trains_plain_convolutions(monkeypatch):
    from composer import load_spec
    from composer.nn.specialize import MapConv2d
    from composer.train import TrainSettings, loop
    from composer.train.recipe import add_flags, flag_values
    from composer.train.trial import prepare, train_spec

    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert flag_values(parser.parse_args(["--no-specialize"])) == {"specialize": False}
    assert flag_values(parser.parse_args([])) == {}
    built = []
    monkeypatch.setattr(loop, "train", lambda model, *a, **k: built.append(
        sum(isinstance(m, MapConv2d) for m in model.modules())))
    spec = {"name": "tiny", "macro": "metaformer", "input_size": 8, "in_chans": 1, "num_classes": 10,
            "widths": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "layout": "Conv-Conv-Conv-Conv"}
    for specialize in (True, False):
        settings = TrainSettings.model_validate({"data": "digits", "subset": 100, "specialize": specialize})
        train_spec(spec, prepare(settings, load_spec(spec), 3))
        # a speed-only setting: a study that changes it compares as the same
        assert "specialize" not in settings.recorded()
    assert built[0] > 0 and built[1] == 0
