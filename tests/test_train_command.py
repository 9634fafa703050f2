"""composer train / composer eval: bundles that rebuild the trained model, resuming after a kill, DDP under
torchrun, timm loading a bundle, and the bad input of both commands (composer/train/command.py, bundle.py)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from composer import compose
from composer.cli import main
from composer.train.bundle import BundleError
from composer.train.command import _RunCheckpoint, train_command

from conftest import ROOT, write_idx_set

SMALL_SPEC = """\
name: small
macro: metaformer
input_size: 32
num_classes: 10
widths: [8, 16, 24, 32]
depths: [1, 1, 1, 1]
layout: Conv-Conv-A-A
mixers: {A: {head_dim: 8}}
drop_path_rate: 0.0
"""


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_SPEC)
    return path


@pytest.fixture
def fm(tmp_path) -> str:
    return f"fashion-mnist:{write_idx_set(tmp_path / 'fm', n_train=300, n_test=60)}"


def _flags(data: str, **extra) -> dict:
    return {"data": data, "epochs": 2, "train_batch": 32, **extra}


def test_a_bundle_rebuilds_the_trained_model_and_eval_reproduces_its_accuracy(tmp_path, spec_file, fm, capsys):
    folder, model, result = train_command(str(spec_file), _flags(fm, ema=True), out=str(tmp_path / "b"),
                                          progress=False, log=lambda *a: None)
    for name in ("spec.yaml", "model.safetensors", "model_ema.safetensors", "train.yaml", "metrics.csv",
                 "curves.png", "config.json"):
        assert (folder / name).is_file(), name
    assert not (folder / "checkpoint.pt").exists()   # removed once the run is complete
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1] and float(rows[-1]["top1"]) == result.history[-1].top1
    x = torch.randn(3, 1, 32, 32)
    rebuilt = compose(str(folder))
    model.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert rebuilt.in_chans == 1 and rebuilt.num_classes == 10
    assert main(["eval", str(folder), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert f"top-1 {float(rows[-1]['top1']):.4f}" in out and "validation split held out" in out
    assert (folder / "confusion_val.png").stat().st_size > 1000
    assert main(["eval", str(folder), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "on the test split of fashion-mnist (60 images)" in out and "Ankle boot" in out


def test_timm_loads_a_bundle(tmp_path, spec_file, fm):
    import timm

    folder, model, _ = train_command(str(spec_file), _flags(fm, epochs=1), out=str(tmp_path / "b"), progress=False,
                                     log=lambda *a: None)
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    by_dir = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    by_file = timm.create_model("composer_spec", spec=str(folder / "spec.yaml"), pretrained=True,
                                pretrained_cfg_overlay={"file": str(folder / "model.safetensors")}).eval()
    with torch.no_grad():
        assert torch.equal(by_dir(x), model(x)) and torch.equal(by_file(x), model(x))
    config = timm.data.resolve_data_config({}, model=by_dir)
    assert config["input_size"] == (1, 32, 32) and config["mean"] == (0.5,) and config["std"] == (0.5,)


class _Killed(Exception):
    pass


def test_a_run_killed_after_epoch_1_resumes_at_epoch_2_to_the_uninterrupted_weights(tmp_path, spec_file, fm,
                                                                                  monkeypatch):
    _, reference, _ = train_command(str(spec_file), _flags(fm, epochs=3), out=str(tmp_path / "whole"),
                                    progress=False, log=lambda *a: None)
    save = _RunCheckpoint.save

    def killed_after_first_save(self, state):
        save(self, state)
        raise _Killed   # the process dies right after epoch 1's checkpoint is on disk

    monkeypatch.setattr(_RunCheckpoint, "save", killed_after_first_save)
    with pytest.raises(_Killed):
        train_command(str(spec_file), _flags(fm, epochs=3), out=str(tmp_path / "cut"), progress=False,
                      log=lambda *a: None)
    monkeypatch.setattr(_RunCheckpoint, "save", save)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file() and not (tmp_path / "cut" / "model.safetensors").exists()
    lines: list[str] = []
    torch.manual_seed(99)   # another process: other RNG state; the checkpoint and the per-epoch seeds restore it
    _, resumed, result = train_command(str(spec_file), _flags(fm, epochs=3), out=str(tmp_path / "cut"),
                                       progress=False, log=lines.append)
    assert result.resumed_at_epoch == 1 and any("resumed at epoch 1 of 3" in line for line in lines)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_torchrun_with_two_cpu_processes_writes_one_bundle_and_matches_one_process(tmp_path, spec_file, fm):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    common = [str(spec_file), "--data", fm, "--epochs", "1", "--augment", "none", "--no-progress"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                          "--master-port", "29533", "-m", "composer.cli", "train", *common, "--train-batch", "16",
                          "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("done: small") == 1   # one log, from rank 0
    assert "global batch 32 (16 per process)" in two.stdout
    one = subprocess.run([sys.executable, "-m", "composer.cli", "train", *common, "--train-batch", "32", "--out",
                          str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    loss = [float(next(csv.DictReader((tmp_path / d / "metrics.csv").open()))["train_loss"]) for d in ("ddp", "one")]
    assert abs(loss[0] - loss[1]) < 1e-4, loss
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


# -- bad input ---------------------------------------------------------------------------------------------------

def test_bad_bundles_and_weights_are_named(tmp_path, spec_file, fm, capsys):
    folder, _, _ = train_command(str(spec_file), _flags(fm, epochs=1), out=str(tmp_path / "b"), progress=False,
                                 log=lambda *a: None)
    other = SMALL_SPEC.replace("[8, 16, 24, 32]", "[8, 16, 24, 40]")
    with pytest.raises(BundleError, match=r"model\.safetensors: the weights do not fit the spec: 17 with other "
                                          r"shapes, first stages\.3\.downsample\.conv\.weight: weights \(32, 24, 3, "
                                          r"3\) vs model \(40, 24, 3, 3\)$"):
        compose({**__import__("yaml").safe_load(other), "in_chans": 1}, weights=folder / "model.safetensors")
    (folder / "train.yaml").unlink()
    assert main(["eval", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {folder}: not a complete bundle: train.yaml missing (composer train writes spec.yaml, "
                   "model.safetensors, train.yaml at the end of a run)")


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--out", "FILE"], "a file, not a folder; give a folder for the bundle"),
    (["--data", "digits", "--lr", "0"], "--lr: Input should be greater than 0, got 0.0"),
])
def test_bad_train_flags_exit_2(tmp_path, spec_file, capsys, args, message):
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    assert main(["train", str(spec_file), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_split_test_on_digits_and_a_changed_resume_are_refused(tmp_path, spec_file, monkeypatch, capsys):
    folder, _, _ = train_command(str(spec_file), {"data": "digits", "epochs": 1, "train_batch": 64},
                                 out=str(tmp_path / "b"), progress=False, log=lambda *a: None)
    assert main(["eval", str(folder), "--split", "test"]) == 2
    assert "--split test: digits has no test split" in capsys.readouterr().err
    save = _RunCheckpoint.save
    monkeypatch.setattr(_RunCheckpoint, "save", lambda self, state: (save(self, state), (_ for _ in ()).throw(
        _Killed()))[0])
    with pytest.raises(_Killed):
        train_command(str(spec_file), {"data": "digits", "epochs": 2, "train_batch": 64}, out=str(tmp_path / "c"),
                      progress=False, log=lambda *a: None)
    monkeypatch.setattr(_RunCheckpoint, "save", save)
    assert main(["train", str(spec_file), "--data", "digits", "--epochs", "2", "--train-batch", "64", "--lr", "0.01",
                 "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the unfinished run there was started with other settings" in err
    assert "(lr: 0.002 then, 0.01 now)" in err


def test_the_top_trials_of_a_search_are_retrained_into_bundles_and_a_leaderboard(tmp_path, fm, capsys):
    from composer.search import run

    space = tmp_path / "space.yaml"
    space.write_text((ROOT / "tests" / "data" / "small_train_space.yaml").read_text())
    run(space, objective="train", trials=3, run_dir=str(tmp_path / "run"), progress=False, log=lambda *a: None,
        train={"data": fm, "epochs": 1, "train_batch": 32})
    assert main(["train", "--from-run", str(tmp_path / "run"), "--top", "2", "--epochs", "2", "--test",
                 "--no-progress"]) == 0
    rows = list(csv.DictReader((tmp_path / "run" / "leaderboard.csv").open()))
    assert [r["rank"] for r in rows] == ["1", "2"] and float(rows[0]["search_val_top1"]) >= float(
        rows[1]["search_val_top1"])
    for r in rows:
        assert r["epochs"] == "2" and 0 <= float(r["test_top1"]) <= 1
        assert compose(r["bundle"]).in_chans == 1   # each a bundle of its own
    assert "leaderboard:" in capsys.readouterr().out
    assert main(["train", "--from-run", str(tmp_path / "run"), "--top", "0"]) == 2
