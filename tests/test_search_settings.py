"""One settings object for a search (composer.search.settings.SearchSettings): the command line's flags are built
from its fields, run(space, settings) takes it, refusals name the flag; and a new study.db another worker created a
moment ago is waited for, not refused."""

import os
import sqlite3
import threading
import time

import pytest

from composer.search import SearchSettings
from composer.spec import SpecError

from conftest import TINY_SPACE


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


def _flags(parser_name: str) -> dict:
    from composer.cli import make_parser

    parser = make_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[parser_name]
    return {a.dest: a for a in sub._actions}


def test_every_search_setting_is_a_flag_with_the_fields_own_help():
    actions = _flags("search")
    for name, info in SearchSettings.model_fields.items():
        if name == "train":   # composer.train's flags, declared from TrainSettings and Recipe
            continue
        assert name in actions, name
        assert actions[name].help == info.description
        assert actions[name].default is None   # not given: the field's default, and a space's value, apply
    assert actions["latency_batch"].option_strings == ["--latency-batch", "--batch-size"]
    assert actions["pruner"].choices == ("median", "hyperband", "successive-halving", "none")
    # sweep and proxy-check take the fields they share from the same declaration (help reworded where they mark
    # or draw rather than refuse)
    sweep = _flags("sweep")
    assert sweep["proxy_size"].help == SearchSettings.model_fields["proxy_size"].description
    assert sweep["budget"].help.startswith("mark points over this MAC budget")
    assert "trials" not in sweep and "trials" not in _flags("proxy-check")


def test_flags_become_one_settings_object_with_training_settings_under_train():
    from composer.cli import make_parser

    args = make_parser().parse_args(["search", "x", "--trials", "3", "--batch-size", "2", "--pruner", "hyperband",
                                     "--epochs", "2", "--data", "digits", "--lr", "0.01"])
    settings = SearchSettings.from_flags(args)
    assert (settings.trials, settings.latency_batch, settings.pruner) == (3, 2, "hyperband")
    assert settings.train == {"data": "digits", "epochs": 2, "lr": 0.01}
    assert settings.model_fields_set == {"trials", "latency_batch", "pruner", "train"}
    assert SearchSettings.from_flags(make_parser().parse_args(["search"])).train is None


@pytest.mark.parametrize("options, message", [
    ({"trials": 0}, "--trials must be at least 1, got 0"),
    ({"latency_batch": -2}, "--latency-batch must be at least 1, got -2"),
    ({"batch_size": 0}, "--latency-batch must be at least 1, got 0"),
    ({"heartbeat": float("nan")}, "--heartbeat must be a number of seconds between 0.1 and 86400, got nan"),
    ({"pruner": "asha"}, "--pruner 'asha': not a pruner; use one of median, hyperband, successive-halving, none"),
    ({"sampler": "cmaes"}, "--sampler 'cmaes': not a sampler; use one of auto, random"),
    ({"trials": "many"}, "--trials: input should be a valid integer"),
    ({"trails": 3}, "'trails': not a search setting; use one of budget, max_params"),
])
def test_a_refused_setting_names_its_flag_and_what_was_given(options, message):
    with pytest.raises(SpecError) as info:
        SearchSettings.of(**options)
    assert message in str(info.value)


def test_keyword_options_go_over_the_object_and_the_shorthands_into_train():
    base = SearchSettings(trials=4, seed=3, train={"data": "digits", "lr": 0.01})
    merged = SearchSettings.of(base, trials=6, epochs=2, device="cpu", batch_size=8)
    assert (merged.trials, merged.seed, merged.latency_batch) == (6, 3, 8)
    assert merged.train == {"data": "digits", "lr": 0.01, "epochs": 2, "device": "cpu"}
    assert base.trials == 4 and "epochs" not in base.train   # the caller's object is not changed


def test_run_takes_the_settings_object_as_it_takes_keywords(tiny, tmp_path):
    from composer.search import run

    by_object = run(str(tiny), SearchSettings(trials=3, objective="macs", seed=1, run_dir=str(tmp_path / "a")),
                    progress=False, log=lambda *a: None)
    by_keywords = run(str(tiny), trials=3, objective="macs", seed=1, run_dir=str(tmp_path / "b"), progress=False,
                      log=lambda *a: None)
    assert by_object.study.user_attrs["settings"] == by_keywords.study.user_attrs["settings"]
    assert [t.params for t in by_object.study.trials] == [t.params for t in by_keywords.study.trials]
    assert len(by_object.study.trials) == 3


# -- a study.db being created by another worker --------------------------------------------------------------------

def _storage(path):
    from composer.search.study import check_storage

    return check_storage(f"sqlite:///{path}")


def test_an_empty_study_db_that_another_worker_is_creating_is_waited_for(tmp_path):
    path = tmp_path / "study.db"
    path.write_bytes(b"")   # as sqlite leaves it between creating the file and writing the first page

    def create():
        time.sleep(0.4)
        with sqlite3.connect(path) as db:
            db.execute("create table t (x)")

    thread = threading.Thread(target=create)
    thread.start()
    t0 = time.monotonic()
    _storage(path)   # no refusal: the header arrived
    thread.join()
    assert 0.3 < time.monotonic() - t0 < 5


def test_an_old_empty_or_foreign_study_db_is_refused_and_left_as_it_is(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    os.utime(empty, (time.time() - 60, time.time() - 60))
    with pytest.raises(SpecError, match=r"is empty \(0 bytes\), so it holds no study; it is left as it is"):
        _storage(empty)
    foreign = tmp_path / "notes.db"
    foreign.write_text("my notes\n")
    with pytest.raises(SpecError, match="is not an SQLite database"):
        _storage(foreign)
    assert empty.read_bytes() == b"" and foreign.read_text() == "my notes\n"


# -- the search-quality follow-ups' options (docs/search.md, "What is tried next") ---------------------------------

def test_tpe_grouped_models_the_parameters_jointly_and_is_recorded(tiny, tmp_path):
    import optuna

    from composer.search import run

    result = run(str(tiny), trials=2, objective="macs", sampler="tpe-grouped", run_dir=str(tmp_path / "g"),
                 progress=False, log=lambda *a: None)
    sampler = result.study.sampler
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._multivariate and sampler._group
    assert result.study.user_attrs["settings"]["sampler"] == "tpe-grouped"


def test_count_trials_feasible_scores_as_many_architectures_as_trials_asked(tiny, tmp_path):
    from composer import estimate
    from composer.search import load_space, run

    space = load_space(str(tiny))
    base = estimate(space.base_data).macs   # about half of this space's samples are over their own base's MACs
    kwargs = dict(trials=4, objective="macs", budget=str(base), progress=False, log=lambda *a: None)
    every = run(str(tiny), run_dir=str(tmp_path / "all"), **kwargs).study.get_trials()
    assert len(every) == 4   # over-budget samples count (the default)
    result = run(str(tiny), run_dir=str(tmp_path / "feasible"), count_trials="feasible", **kwargs)
    trials = result.study.get_trials()
    feasible = [t for t in trials if t.user_attrs.get("feasible") and "reused_from" not in t.user_attrs]
    assert len(feasible) == 4 and len(trials) > 4, [t.user_attrs.get("macs") for t in trials]
    assert all(t.user_attrs["macs"] <= base for t in feasible)
    assert result.study.user_attrs["settings"]["count_trials"] == "feasible"


def test_count_trials_feasible_counts_distinct_architectures_not_repeats(tmp_path):
    # three points in all: random draws repeat some; each repeat reuses its twin's value and does not count, so the
    # study holds every one of the three architectures scored
    from composer.search import run

    path = tmp_path / "three.yaml"
    path.write_text(TINY_SPACE.split("choices:")[0]
                    + "choices:\n  depths: {whole: [[1, 1, 1, 1], [1, 1, 1, 2], [1, 1, 2, 1]]}\nbudget: {macs: 10M}\n")
    result = run(str(path), trials=3, objective="macs", sampler="random", count_trials="feasible",
                 run_dir=str(tmp_path / "run"), progress=False, log=lambda *a: None)
    trials = result.study.get_trials()
    repeats = [t for t in trials if "reused_from" in t.user_attrs]
    scored = [t for t in trials if t.user_attrs.get("feasible") and "reused_from" not in t.user_attrs]
    assert repeats, "a 3-point space drawn at random should repeat within a few draws"
    assert len(scored) == 3 and len({str(t.params) for t in scored}) == 3
