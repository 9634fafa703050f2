"""A search that trains: checkpointed trials resume after a kill, pruners with epochs as the resource, warm
starts from published designs, ZiCo, ``composer proxy-check``, whole-value choices and the paper-ablation spaces
(search/hornet_orders.yaml, search/hyenapixel_stages.yaml)."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch import nn

import composer
from composer.cli import main
from composer.search import load_space, run
from composer.search.checkpoints import TrialCheckpoint
from composer.search.objectives import proxy_scores
from composer.search.space import warm_start_params

from conftest import ROOT, TINY_SPACE

DIGITS_SPACE = (TINY_SPACE.replace("input_size: 32", "input_size: 16").replace("[16, 32, 32, 64]", "[8, 16, 16, 32]")
                .replace("head_dim: 16", "head_dim: 8"))


def _tiny_net() -> nn.Module:
    return composer.compose({"macro": "metaformer", "input_size": 8, "in_chans": 1, "num_classes": 10,
                             "widths": [8, 16], "depths": [1, 1], "layout": "Conv-Conv", "drop_path_rate": 0.0})


# -- resumable training ------------------------------------------------------------------------------------------

class _Stop(Exception):
    pass


def test_resumed_training_ends_where_an_uninterrupted_one_does(tmp_path):
    """Killed in epoch 2 of 3 and resumed from epoch 1's checkpoint: the same weights and accuracy as a run never
    stopped, the 2 remaining epochs trained (composer.train's loop, with EMA and Mixup on: their state and RNG
    are part of what resumes)."""
    from composer.train import TrainSettings
    from composer.train.loop import train
    from composer.train.trial import prepare

    settings = TrainSettings(data="digits", train_size=8, recipe={"epochs": 3, "train_batch": 64, "ema": True,
                                                                 "mixup": 0.2})
    base = composer.spec.load_spec({"macro": "metaformer", "input_size": 8, "in_chans": 1, "num_classes": 10,
                                    "widths": [8, 16], "depths": [1, 1], "layout": "Conv-Conv"})
    data = prepare(settings, base, seed=0)

    def fit(model, **kw):
        return train(model, data.source, data.splits, settings, size=8, in_chans=1, seed=0, **kw)

    torch.manual_seed(0)
    reference = _tiny_net()
    expected = fit(reference)

    identity = {"study": "s", "params": {}, "spec": "x"}
    first = TrialCheckpoint(tmp_path / "trial0.pt", identity)

    def stop(epoch, acc):   # killed after epoch 1's training, before its checkpoint: epoch 0's is on disk
        if epoch == 1:
            raise _Stop

    torch.manual_seed(0)
    with pytest.raises(_Stop):
        fit(_tiny_net(), report=stop, checkpoint=first)
    assert (tmp_path / "trial0.pt").is_file()

    torch.manual_seed(123)   # a fresh process: other initial weights, other RNG; the checkpoint restores both
    retry = TrialCheckpoint(tmp_path / "trial1.pt", identity, source=tmp_path / "trial0.pt")
    epochs = []
    model = _tiny_net()
    resumed = fit(model, report=lambda e, a: epochs.append(e), checkpoint=retry)
    assert retry.resumed_at_epoch == 1 and epochs == [1, 2] and resumed.resumed_at_epoch == 1
    assert [h.top1 for h in resumed.history] == [h.top1 for h in expected.history]
    assert resumed.history[-1].top1_ema == expected.history[-1].top1_ema
    for (name, a), (_, b) in zip(reference.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    assert not (tmp_path / "trial0.pt").exists()     # taken over, not copied
    retry.finish(keep=False)
    assert not (tmp_path / "trial1.pt").exists()


def test_a_checkpoint_is_taken_over_once_and_only_by_a_matching_trial(tmp_path):
    identity = {"study": "s", "params": {"depths[0]": "1"}, "spec": "x"}
    TrialCheckpoint(tmp_path / "trial3.pt", identity).save({"history": [0.5], "model": {}})
    other = TrialCheckpoint(tmp_path / "trial9.pt", dict(identity, params={"depths[0]": "2"}),
                            source=tmp_path / "trial3.pt")
    assert other.load() is None   # other parameters: trains from epoch 0
    TrialCheckpoint(tmp_path / "trial3.pt", identity).save({"history": [0.5], "model": {}})
    a = TrialCheckpoint(tmp_path / "trial4.pt", identity, source=tmp_path / "trial3.pt")
    b = TrialCheckpoint(tmp_path / "trial5.pt", identity, source=tmp_path / "trial3.pt")
    assert a.load()["history"] == [0.5] and a.resumed_at_epoch == 1
    assert b.load() is None and b.resumed_at_epoch is None   # a second worker never resumes the same checkpoint


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def test_a_sigkilled_training_trial_resumes_from_its_checkpoint(tmp_path, capsys):
    space = tmp_path / "digits.yaml"
    space.write_text(DIGITS_SPACE.replace("depths: [1, 2]", "depths: [2]"))
    run_dir = tmp_path / "run"
    args = ["search", str(space), "--objective", "train", "--epochs", "3", "--trials", "1", "--train-size", "16",
            "--run-dir", str(run_dir), "--heartbeat", "1", "--no-progress", "--seed", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "composer.cli", *args], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    first = run_dir / "checkpoints" / "trial0.pt"
    try:
        end = time.time() + 120
        while not first.exists() and proc.poll() is None and time.time() < end:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)   # after the first checkpoint, before the trial finished
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert main(args) == 0   # the same command again
    out = capsys.readouterr().out
    assert "resuming the training of trial 0 at epoch" in out
    trials = optuna.load_study(study_name="tiny-train", storage=f"sqlite:///{run_dir / 'study.db'}").get_trials()
    killed = trials[0]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert killed.state.name == "FAIL" and retry.state.name == "COMPLETE"
    assert retry.params == killed.params
    assert retry.user_attrs["resumed_at_epoch"] >= 1
    assert killed.user_attrs["epochs_trained"] == retry.user_attrs["resumed_at_epoch"]
    # total epochs trained = epochs, not more
    assert killed.user_attrs["epochs_trained"] + retry.user_attrs["epochs_trained"] == 3
    assert sorted(k for k in retry.user_attrs if k.startswith("accuracy_epoch")) == [
        "accuracy_epoch0", "accuracy_epoch1", "accuracy_epoch2"]
    assert "epochs trained: 3 in all" in out
    assert not any((run_dir / "checkpoints").iterdir())   # a finished trial's checkpoint is removed


def test_hyperband_prunes_with_epochs_as_resource_and_counts_them(tmp_path):
    space = tmp_path / "digits.yaml"
    space.write_text(DIGITS_SPACE)
    lines = []
    result = run(space, objective="train", epochs=3, trials=6, pruner="hyperband", keep_checkpoints=True,
                 run_dir=str(tmp_path / "hb"), progress=False, log=lines.append, train_size=16)
    assert isinstance(result.study.pruner, optuna.pruners.HyperbandPruner)
    trials = result.study.get_trials()
    trained = sum(t.user_attrs.get("epochs_trained", 0) for t in trials)
    ran = [t for t in trials if t.user_attrs.get("built")]
    line = next(x for x in lines if x.startswith("epochs trained:"))
    assert line.startswith(f"epochs trained: {trained} in all, against {len(ran)} trained trials x 3 epochs = "
                           f"{3 * len(ran)}")
    for t in ran:   # steps are epochs trained (1..3), as Hyperband's resource
        assert set(t.intermediate_values) <= {1, 2, 3} and t.user_attrs["epochs_trained"] == len(t.intermediate_values)
    kept = {p.name for p in (tmp_path / "hb" / "checkpoints").iterdir()}
    complete = {f"trial{t.number}.pt" for t in ran if t.state.name == "COMPLETE"}
    assert complete and complete <= kept <= {f"trial{t.number}.pt" for t in ran}   # --keep-checkpoints


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_trial_is_never_pruned_after_its_last_epoch(tmp_path, monkeypatch):
    # a pruner that would stop every trial at every step: with 2 epochs each trial stops after its first; with 1,
    # every trial has trained all it was going to and completes (its accuracy counts for the pick)
    import composer.search.study as study_module

    space = tmp_path / "digits.yaml"
    space.write_text(DIGITS_SPACE)
    monkeypatch.setattr(study_module, "_pruner", lambda settings: _AlwaysPrune())
    for epochs, state in ((2, "PRUNED"), (1, "COMPLETE")):
        result = run(space, objective="train", epochs=epochs, trials=2, run_dir=str(tmp_path / f"e{epochs}"),
                     progress=False, log=lambda *a: None, train_size=16)
        ran = [t for t in result.study.get_trials() if t.user_attrs.get("built")]
        assert ran and {t.state.name for t in ran} == {state}, (epochs, [t.state.name for t in ran])
        assert {t.user_attrs["epochs_trained"] for t in ran} == {1}


@pytest.mark.parametrize("args, message", [
    (["--pruner", "hyperband", "--objective", "proxy,macs"], "prunes single-objective studies only"),
])
def test_pruner_misuse_exits_2(tmp_path, capsys, args, message):
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    assert main(["search", str(space), "--trials", "1", "--run-dir", str(tmp_path / "r"), "--no-progress",
                 *args]) == 2
    assert message in capsys.readouterr().err


# -- warm starts -------------------------------------------------------------------------------------------------

def test_warm_start_enqueues_the_published_designs_first(tmp_path):
    result = run("metaformer_s18", objective="macs", trials=3, warm_start="caformer_s18,convformer_s18",
                 run_dir=str(tmp_path / "w"), progress=False, log=lambda *a: None)
    first, second = sorted(result.study.get_trials(), key=lambda t: t.number)[:2]
    assert first.user_attrs["macs"] == composer.estimate("caformer_s18").macs
    assert first.user_attrs["params"] == composer.estimate("caformer_s18").params
    assert second.user_attrs["params"] == composer.estimate("convformer_s18").params
    assert first.params["layout[2]"] == "A" and second.params["layout[2]"] == "Conv"


def test_the_shipped_space_warm_starts_from_its_base_and_convformer():
    space = load_space(ROOT / "search" / "metaformer_s18.yaml")
    assert [name for name, _ in space.warm_start] == ["caformer_s18", "convformer_s18"]
    params = warm_start_params(space, "caformer_s18")
    assert params["layout[0]"] == "Conv" and params["depths[2]"] == 9 and params["mixers.Conv.kernel_size[0]"] == 7


@pytest.mark.parametrize("start, message", [
    ("transnext_micro", "stage 0 uses A, not among the space's layout options (Conv, Hpx, Hb, gnConv)"),
    ("hornet_tiny_7x7", "depths[2] is 18, not among the space's options (6, 9, 12)"),
    ("hpxformer_s18", "head is"),
    ("ensemble_hpx_conv_s18", "an ensemble"),
    ("no_such_preset", "no_such_preset"),
])
def test_a_warm_start_outside_the_space_is_a_located_error(tmp_path, capsys, start, message):
    space = tmp_path / "space.yaml"
    space.write_text((ROOT / "search" / "metaformer_s18.yaml").read_text().split("warm_start")[0]
                     + f"warm_start: [caformer_s18, {start}]\n")
    assert main(["search", str(space), "--trials", "1", "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    line = next(i for i, text in enumerate(space.read_text().splitlines(), 1) if text.startswith("warm_start"))
    assert f"space.yaml:{line}: warm_start[1]: {start}: " in err and message in err
    assert main(["search", "metaformer_s18", "--warm-start", start, "--trials", "1", "--run-dir",
                 str(tmp_path / "r2"), "--no-progress"]) == 2
    assert f"--warm-start {start}: " in capsys.readouterr().err


# -- whole values and the ablation spaces ------------------------------------------------------------------------

def test_hornet_orders_sweep_gives_one_row_per_order(tmp_path, capsys):
    run_dir = tmp_path / "h"
    assert main(["sweep", "hornet_orders", "--run-dir", str(run_dir), "--no-progress"]) == 0
    rows = list(csv.DictReader((run_dir / "table.csv").open()))
    assert [r["mixers.gnConv.order"] for r in rows] == ["[1, 1, 1, 1]", "[2, 2, 2, 2]", "[3, 3, 3, 3]",
                                                         "[4, 4, 4, 4]", "[2, 3, 4, 5]"]
    base = {"extends": "hornet_tiny_7x7", "widths": [96, 192, 384, 768], "depths": [2, 2, 6, 2]}
    for row, order in zip(rows, [1, 2, 3, 4, [2, 3, 4, 5]]):
        est = composer.estimate({**base, "mixers": {"gnConv": {"order": order}}})
        assert (int(row["params"]), int(row["macs"])) == (est.params, est.macs)
    # a higher order costs more, with bounded growth (HorNet's claim: FLOPs bounded as n grows)
    macs = [int(r["macs"]) for r in rows[:4]]
    assert macs == sorted(macs) and macs[3] < 1.08 * macs[0]


def test_hyenapixel_stages_sweep_has_the_papers_six_rows(tmp_path):
    run_dir = tmp_path / "hp"
    assert main(["sweep", "hyenapixel_stages", "--run-dir", str(run_dir), "--no-progress"]) == 0
    rows = list(csv.DictReader((run_dir / "table.csv").open()))
    assert [(r["layout"], r["mixers.Hpx.long_kernel_size"]) for r in rows] == [
        ("Hpx-Hpx-Hpx-Hpx", "auto"), ("Hpx-Hpx-Hpx-Hpx", "[55, 27, 13, 7]"), ("Hpx-Hpx-Hpx-Hpx", "[27, 13, 7, 3]"),
        ("Hpx-Hpx-Hpx-Hpx", "[9, 9, 9, 9]"), ("Hyena-Hyena-Hyena-Hyena", ""), ("Hb-Hb-Hb-Hb", "")]
    base = {"extends": "hpxformer_s18", "depths": [2, 2, 6, 2]}
    est = composer.estimate({**base, "mixers": {"Hpx": {"filter_emb_dim": [32, 32, 48, 64], "use_layernorm": True,
                                                        "long_kernel_size": [27, 13, 7, 3]}}})
    assert (int(rows[2]["params"]), int(rows[2]["macs"])) == (est.params, est.macs)


@pytest.mark.parametrize("choice, where, message", [
    ("mixers.gnConv.order: {whole: [[2, 3], [2, 2, 2, 2]]}", "choices.mixers.gnConv.order.whole[0]",
     "2 values but the base has 4 stages"),
    ("mixers.gnConv.order: {whole: [[2, 2, 2, 2], [2, 2, 2, 2]]}", "choices.mixers.gnConv.order.whole[1]",
     "repeats"),
    ("mixers.gnConv.order: {whole: [[2, 2, 2, 0]]}", "choices.mixers.gnConv.order.whole[0]",
     "whole value [2, 2, 2, 0]"),
    ("drop_path_rate: {whole: [[0.1, 0.2]]}", "choices.drop_path_rate.whole[0]", "not a per-stage field"),
    ("mixers.gnConv.order: {whole: [], low: 1}", "choices.mixers.gnConv.order", "write whole values as"),
])
def test_bad_whole_values_are_located(tmp_path, choice, where, message):
    path = tmp_path / "space.yaml"
    path.write_text(f"base: hornet_tiny_7x7\nchoices:\n  {choice}\n")
    with pytest.raises(composer.SpecError) as info:
        load_space(path)
    text = str(info.value)
    assert f"space.yaml:3: {where}" in text and message in text


# -- ZiCo and proxy-check ----------------------------------------------------------------------------------------

def test_zico_is_the_papers_formula_on_per_minibatch_gradients():
    """Against the formula written out with numpy (ZiCo, Eq. 7): for every conv / linear weight, the mean |g| over
    two minibatches divided by std(g), summed per layer, log-summed over layers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    from composer.search.objectives import _minibatch

    grads = {0: [], 3: []}
    for batch_seed in (7, 8):
        x, y = _minibatch(4, 8, 3, 5, batch_seed)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for i in grads:
            grads[i].append(model[i].weight.grad.detach().numpy().reshape(-1).astype(np.float64).copy())
    expected = 0.0
    for per_batch in grads.values():
        g = np.array(per_batch)
        std = np.std(g, axis=0)
        nz = np.nonzero(std)[0]
        expected += math.log(np.sum(np.mean(np.abs(g), axis=0)[nz] / std[nz]))
    scores = proxy_scores(model, 8, 4, 3, 5, seed=7, zico=True)
    assert scores["zico"] == pytest.approx(expected, rel=1e-9)
    assert "zico" not in proxy_scores(model, 8, 4, 3, 5, seed=7)   # only when asked: it costs a second pass


def test_zico_is_a_search_objective(tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    result = run(space, objective="zico", trials=2, run_dir=str(tmp_path / "z"), progress=False, proxy_size=32,
                 proxy_batch=8, log=lambda *a: None)
    done = [t for t in result.study.get_trials() if t.user_attrs.get("built")]
    assert done and all(t.value == t.user_attrs["zico"] and math.isfinite(t.value) for t in done)


def test_proxy_check_runs_end_to_end_on_digits(tmp_path, capsys):
    space = tmp_path / "digits.yaml"
    space.write_text(DIGITS_SPACE)
    run_dir = tmp_path / "pc"
    args = ["proxy-check", str(space), "--samples", "4", "--epochs", "1", "--proxy-size", "16", "--proxy-batch",
            "8", "--run-dir", str(run_dir)]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((run_dir / "samples.csv").open()))
    assert len(rows) == 4 and len({r["drawn"] for r in rows}) == 4
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1 and int(r["train_size"]) == 16 and int(r["proxy_size"]) == 16
        # digits are grayscale: the samples were built with in_chans 1
        assert int(r["params"]) == load_space(space).check({**eval_spec(space, r), "in_chans": 1}).estimate.params
    corr = {r["proxy"]: r for r in csv.DictReader((run_dir / "correlations.csv").open())}
    assert set(corr) == {"naswot", "gradnorm", "zico", "params", "macs"}
    assert all(int(c["samples"]) == 4 and -1 <= float(c["kendall_tau"]) <= 1 for c in corr.values()
               if c["kendall_tau"] != "nan")
    assert (run_dir / "proxy_check.png").stat().st_size > 1000
    assert "kendall tau" in out
    assert main(args) == 0   # resumable: the second run trains nothing
    assert "4 done before" in capsys.readouterr().out
    assert len(list(csv.DictReader((run_dir / "samples.csv").open()))) == 4


def eval_spec(space: Path, row: dict) -> dict:
    """The sample a samples.csv row names, drawn again from its parameters."""
    import json

    drawn = json.loads(row["drawn"])
    data, _ = load_space(space).sample(lambda name, domain: drawn[name])
    return data


@pytest.mark.parametrize("args, message", [
    (["--samples", "0"], "--samples must be at least 1, got 0"),
    (["--data", "/no/such/folder"], "--data"),
])
def test_proxy_check_bad_flags_exit_2(tmp_path, capsys, args, message):
    space = tmp_path / "digits.yaml"
    space.write_text(DIGITS_SPACE)
    assert main(["proxy-check", str(space), "--run-dir", str(tmp_path / "pc"), *args]) == 2
    assert message in capsys.readouterr().err
