"""--conv-paths measured: each depthwise convolution's CPU training path timed on the machine."""

import argparse
import copy

import pytest
import torch
from torch import nn

from composer import compose, load_spec
from composer.latency import LatencyTable, fingerprint
from composer.nn.specialize import MapConv2d
from composer.train import TrainSettings
from composer.train.conv_paths import ConvSignature, choose_conv_paths, time_paths

# 32 px through a stride-4 stem: stage maps 8x8, 4x4, 2x2 and 1x1; 7x7 depthwise convolutions in every stage
SPEC = {"name": "tiny-sepconv", "macro": "metaformer", "input_size": 32, "in_chans": 1, "num_classes": 10,
        "widths": [8, 16, 24, 32], "depths": [1, 1, 2, 1], "layout": "Conv-Conv-Conv-Conv"}


def _paths(model):
    return {name: (m.map_size, m.train_path) for name, m in model.named_modules() if type(m) is MapConv2d
            and m.groups == m.in_channels}


def test_the_fastest_path_is_set_each_kind_timed_once_and_read_back_from_the_table(tmp_path):
    """With a timer that makes channels-last fastest everywhere, every convolution that may take it does, each
    kind of convolution is timed once (stage 3's two blocks share theirs), a second model reads the table, and
    outputs and gradients equal the rules' model's."""
    torch.manual_seed(0)
    model = compose(SPEC)
    rules = copy.deepcopy(model)
    assert {path for _, path in _paths(rules).values()} == {"dense", "channels_last", ""}
    timed = []

    def timer(signature, paths, batch, **_):
        timed.append((signature.map_size, paths, batch))
        return {p: {"channels_last": 1.0, "dense": 2.0, "": 3.0}[p] for p in paths}

    found = choose_conv_paths(model, (4, 1, 32, 32), folder=tmp_path, timer=timer)
    # 8x8 (7x7 kernel: channels-last by rule), 4x4 (at batch 4 the convolution as built: the rules take the dense
    # operator from DENSE_MIN_BATCH on) and 2x2 (dense operator by rule); 1x1: a per-channel scale
    assert sorted(t[0] for t in timed) == [(2, 2), (4, 4), (8, 8)] and {t[2] for t in timed} == {4}
    assert len(found.choices) == 3 and sum(len(c.modules) for c in found.choices) == 4
    assert {(c.signature.map_size, c.rule, c.chosen) for c in found.choices} == {
        ((8, 8), "channels_last", "channels_last"), ((4, 4), "", "channels_last"),
        ((2, 2), "dense", "channels_last")}
    assert len(found.changed) == 2 and "2 kinds differ from the rules" in found.summary()
    assert {path for size, path in _paths(model).values() if size != (1, 1)} == {"channels_last"}
    x = torch.randn(4, 1, 32, 32)
    xm, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_m, out_r = model(xm), rules(xr)
    assert torch.allclose(out_m, out_r, atol=1e-5)
    out_m.sum().backward(), out_r.sum().backward()
    assert torch.allclose(xm.grad, xr.grad, atol=1e-5)
    for (name, a), b in zip(model.named_parameters(), rules.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name

    timed.clear()
    again = compose(SPEC)
    found = choose_conv_paths(again, (4, 1, 32, 32), folder=tmp_path, timer=timer)
    assert timed == [] and "0 timed now" in found.summary() and _paths(again) == _paths(model)
    # another batch is another fingerprint, so another table
    choose_conv_paths(compose(SPEC), (8, 1, 32, 32), folder=tmp_path, timer=timer)
    assert {t[2] for t in timed} == {8}
    rows = LatencyTable(fingerprint("cpu", batch_size=4), tmp_path)
    assert len(rows) == 3 + 3 + 3 and all("training step" in rows.what[k] for k in rows.rows)


def test_a_path_within_the_margin_keeps_the_rule_and_batchnorm_statistics_do_not_move(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 7, padding=3, groups=8))
    state = copy.deepcopy(model.state_dict())
    model.train()

    def timer(signature, paths, batch, **_):   # the others 4% faster than the rule's: within MARGIN (10%)
        return {p: 0.96 if i else 1.0 for i, p in enumerate(paths)}

    found = choose_conv_paths(model, (2, 1, 4, 4), folder=tmp_path, timer=timer)
    assert [c.ms for c in found.choices] == [{"": 1.0, "dense": 0.96, "channels_last": 0.96}]
    assert found.changed == [] and model.training and type(model[2]) is nn.Conv2d
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_plain_depthwise_convolutions_become_specialized_when_another_path_is_faster(tmp_path):
    """A 3x3 depthwise convolution on an 8x8 map keeps its whole kernel and, by the rules, the plain convolution;
    measured channels-last faster, it becomes a MapConv2d that trains channels-last (the same state dict)."""
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8))
    assert type(model[1]) is nn.Conv2d
    keys = {k: v.shape for k, v in model.state_dict().items()}
    found = choose_conv_paths(model, (2, 1, 8, 8), folder=tmp_path,
                              timer=lambda s, paths, b, **_: {p: 1.0 if p else 2.0 for p in paths})
    assert type(model[1]) is MapConv2d and model[1].train_path == "channels_last"
    assert [c.modules for c in found.choices] == [["1"]]
    assert {k: v.shape for k, v in model.state_dict().items()} == keys


def test_the_timer_times_every_path_of_a_signature():
    signature = ConvSignature(8, (7, 7), (1, 1), (3, 3), (1, 1), True, (4, 4))
    ms = time_paths(signature, ("dense", "", "channels_last"), 16, rounds=1)
    assert set(ms) == {"dense", "", "channels_last"} and all(0 < v < 1e4 for v in ms.values())
    assert signature.describe() == "depthwise 8 ch 7x7 on 4x4"
    assert len({signature.key(p) for p in ms}) == 3


def test_the_flag_and_training_say_what_was_chosen(monkeypatch, tmp_path):
    from composer.train.recipe import add_flags, flag_values
    from composer.train.trial import prepare, train_spec

    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert flag_values(parser.parse_args(["--conv-paths", "measured"])) == {"conv_paths": "measured"}
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--conv-paths", "fastest"])
    assert exit_info.value.code == 2
    monkeypatch.setenv("COMPOSER_CACHE_DIR", str(tmp_path))
    lines = []
    for extra in ({}, {"specialize": False}):
        base = {"data": "digits", "subset": 64, "recipe": {"epochs": 1, "train_batch": 16}}
        settings = TrainSettings.model_validate({**base, "conv_paths": "measured", **extra})
        assert settings.recorded() == TrainSettings.model_validate({**base, **extra}).recorded()   # speed only
        spec = {**SPEC, "input_size": 8}
        train_spec(spec, prepare(settings, load_spec(spec), 3), log=lines.append)
    measured = [line for line in lines if "CPU training paths measured" in line]
    assert len(measured) == 1 and "timed now" in measured[0]
    assert any("--conv-paths measured: the rules kept, the model is not specialized" in line for line in lines)


def test_below_the_dense_batch_the_rule_is_the_convolution_and_a_measured_dense_operator_runs_at_any_batch(
        tmp_path, monkeypatch):
    """On a 4x4 map the rules take the dense operator from DENSE_MIN_BATCH on: at batch 2 their choice is the
    convolution as built; measured faster there, the dense operator runs at batch 2."""
    import composer.nn.specialize as sp_module

    calls = []
    dense = sp_module.dense_depthwise
    monkeypatch.setattr(sp_module, "dense_depthwise", lambda *a: calls.append(a[0].shape[0]) or dense(*a))
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.Conv2d(8, 8, 7, padding=3, groups=8))
    found = choose_conv_paths(model, (2, 1, 4, 4), folder=tmp_path,
                              timer=lambda s, paths, b, **_: {p: 1.0 if p == "dense" else 2.0 for p in paths})
    assert [(c.rule, c.chosen) for c in found.choices] == [("", "dense")] and sp_module.DENSE_MIN_BATCH > 2
    model(torch.randn(2, 1, 4, 4)).sum().backward()
    assert calls == [2]


def test_on_cuda_measured_means_cudnn_benchmark(monkeypatch):
    """No GPU needed: on a CUDA device the loop only turns cuDNN's own benchmark on (process-wide) and says so."""
    from composer.train.loop import _measure_conv_paths

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    lines = []
    settings = TrainSettings.model_validate({"data": "digits", "conv_paths": "measured"})
    _measure_conv_paths(nn.Conv2d(1, 1, 3), settings, (2, 1, 8, 8), torch.device("cuda"), lines.append)
    assert torch.backends.cudnn.benchmark is True and "cudnn.benchmark = True" in lines[0]


def test_each_convolution_is_timed_on_its_input_laid_out_as_the_model_hands_it_over(tmp_path):
    """A channels-last input (as a channels-last norm before a 1x1 convolution leaves it) is another signature
    than a contiguous one, and the timer's input has that layout."""
    from composer.train.conv_paths import memory_order

    class ChannelsLastBefore(nn.Module):
        def forward(self, x):
            return x.contiguous(memory_format=torch.channels_last)

    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.Conv2d(8, 8, 7, padding=3, groups=8), ChannelsLastBefore(),
                          nn.Conv2d(8, 8, 7, padding=3, groups=8))
    seen = []

    def timer(signature, paths, batch, **_):
        seen.append((signature.layout, memory_order(signature.input(batch))))
        return {p: 1.0 for p in paths}

    found = choose_conv_paths(model, (16, 1, 8, 8), folder=tmp_path, timer=timer)
    assert seen == [("NCHW", "NCHW"), ("NHWC", "NHWC")] and len(found.choices) == 2
    assert found.choices[1].signature.describe() == "depthwise 8 ch 7x7 on 8x8 (channels-last input)"
    assert found.choices[0].signature.key("") != found.choices[1].signature.key("")
    x = ConvSignature(8, (7, 7), (1, 1), (3, 3), (1, 1), True, (4, 5), "NHWC").input(2)
    assert x.shape == (2, 8, 4, 5) and x.is_contiguous(memory_format=torch.channels_last)
