"""composer search: spaces, the hard budget, objectives, crash-safe resume and several workers (tiny, fast)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

import composer
from composer.cli import main
from composer.search import load_space, run
from composer.spec import SpecError

from conftest import TINY_SPACE

REPO = Path(__file__).resolve().parents[1]

TINY = TINY_SPACE


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _study(run_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "composer.cli", *args]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def test_shipped_spaces_load_and_sample():
    import random

    for path in sorted((REPO / "search").glob("*.yaml")):
        space = load_space(path)
        rng = random.Random(0)
        for _ in range(5):
            data, drawn = space.sample_random(rng)
            check = space.check(data)
            assert check.error is None or "stage" in check.error
            for name in drawn:
                if name.startswith("mixers.") and "[" in name:   # drawn only where that mixer was chosen
                    symbol, stage = name.split(".")[1], int(name.split("[")[1].rstrip("]"))
                    assert drawn.get(f"layout[{stage}]", symbol) == symbol
                elif name.startswith("mixers."):   # a whole value ({whole: ...}): drawn when a stage uses it
                    assert name.split(".")[1] in str(data["layout"])


@pytest.mark.parametrize("text, where, what", [
    ("choices:\n  layuot: [Conv]\n", ":11:", "did you mean 'layout'"),
    ("choices:\n  layout: [[Conv, Atn], [Conv], [A], [A]]\n", ":11:", "unknown mixer symbol 'Atn'"),
    ("choices:\n  mixers.Conv.kernel_sise: [3, 5]\n", ":11:", "did you mean 'kernel_size'"),
    ("choices:\n  mixers.Conv.kernel_size: [3, 0]\n", ":11:", "kernel_size"),
    ("choices:\n  depths: [[1, 2], [1, 2]]\n", ":11:", "per-stage option lists"),
    ("choices:\n  mixers.Hpx.kernel_size: [3, 5]\n", ":11:", "not used in any stage"),
    ("choices:\n  depths: [1]\nbudget: {macs: 5Q}\n", ":12:", "cannot read"),
])
def test_bad_space_exits_2_with_file_line(tmp_path, capsys, text, where, what):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.split("choices:")[0].replace("  mixers: {A: {head_dim: 16}, M: {head_dim: 16}}\n", "")
                    + text)
    code = main(["search", str(path), "--trials", "1", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{path}{where}" in err and what in err, err
    assert "Traceback" not in err


def test_bad_base_points_at_the_space(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base: caformer_s1\nchoices:\n  depths: [1]\n")
    with pytest.raises(SpecError, match=r"bad.yaml:1: base: .*caformer_s18"):
        load_space(path)


def test_infeasible_samples_are_never_built(tiny, tmp_path, built_macs):
    built = built_macs
    result = run(tiny, budget="1.3M", trials=8, seed=1, run_dir=str(tmp_path / "run"), proxy_size=32,
                 proxy_batch=8, progress=False, log=lambda *a: None)
    trials = result.study.get_trials()
    infeasible = [t for t in trials if not t.user_attrs["feasible"]]
    feasible = [t for t in trials if t.user_attrs["feasible"] and "reused_from" not in t.user_attrs]
    assert infeasible, "the budget should cut some samples"
    assert len(built) == len(feasible) == result.counters.built
    assert result.counters.over_budget_built == 0
    for t in trials:
        assert t.user_attrs["slack_macs"] == 1_300_000 - t.user_attrs["macs"]
        assert (t.user_attrs["macs"] <= 1_300_000) == t.user_attrs["feasible"]
        assert dict(t.constraints)["macs"] == pytest.approx(t.user_attrs["macs"] / 1.3e6 - 1)
        if not t.user_attrs["feasible"]:
            assert "built" not in t.user_attrs and "naswot" not in t.user_attrs
    # the best spec is a plain spec: it loads, builds and fits the budget
    best = result.best_specs[0]
    assert composer.estimate(str(best)).macs <= 1_300_000
    assert (result.run_dir / "trials.csv").read_text().count("\n") == len(trials) + 1
    assert (result.run_dir / "history.png").stat().st_size > 1000
    assert main(["validate", str(best)]) == 0


def test_multi_objective_writes_pareto_front(tiny, tmp_path):
    result = run(tiny, objective="proxy,macs", budget="3M", trials=6, run_dir=str(tmp_path / "mo"), proxy_size=32,
                 proxy_batch=8, progress=False, log=lambda *a: None)
    assert result.best_specs and all(p.parent.name == "pareto" for p in result.best_specs)
    macs = [composer.estimate(str(p)).macs for p in result.best_specs]
    assert max(macs) <= 3_000_000
    assert (result.run_dir / "pareto.png").is_file()


def test_train_search_on_digits(tmp_path):
    path = tmp_path / "digits.yaml"
    path.write_text(TINY.replace("input_size: 32", "input_size: 16").replace("[16, 32, 32, 64]", "[8, 16, 16, 32]")
                    .replace("head_dim: 16", "head_dim: 8"))
    result = run(path, objective="train", epochs=2, trials=2, run_dir=str(tmp_path / "train"), progress=False,
                 log=lambda *a: None)
    trials = result.study.get_trials()
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 2
    for t in done:
        if t.user_attrs["feasible"] and "reused_from" not in t.user_attrs:
            assert 0 <= t.user_attrs["accuracy_epoch0"] <= 1
            assert t.intermediate_values   # reported per epoch, for pruning
    best = yaml.safe_load(result.best_specs[0].read_text())
    assert best["num_classes"] == 10


def _wait_for(predicate, timeout: float, every: float = 0.2) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError("timed out")


def _complete_sql(run_dir: Path) -> int:
    """COMPLETE trials in the run's SQLite study, read directly (fast enough to poll while trials finish)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{run_dir / 'study.db'}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _complete(run_dir: Path, name: str) -> int:
    try:
        return sum(1 for t in _study(run_dir, name).get_trials() if t.state.name == "COMPLETE")
    except Exception:   # the study is not created yet
        return 0


def test_sigkill_then_rerun_completes_the_study(tiny, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [str(tiny), "--trials", "6", "--seed", "3", "--run-dir", str(run_dir), "--proxy-size", "32",
            "--proxy-batch", "8", "--heartbeat", "1", "--no-progress"]
    proc = subprocess.Popen(_cli("search", *args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # polled with plain SQL every 50 ms (opening an Optuna storage per poll took long enough for the tiny
        # trials to finish the whole study before the kill)
        _wait_for(lambda: _complete_sql(run_dir) >= 2 or proc.poll() is not None, 60, every=0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _study(run_dir, "tiny-proxy").get_trials()
    assert sum(t.state.name == "COMPLETE" for t in before) < 6
    assert main(["search", *args]) == 0        # the same command again (in this process: no second import)
    out = capsys.readouterr().out
    assert "continuing study" in out
    assert "0 over-budget models built" in out
    trials = _study(run_dir, "tiny-proxy").get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert sum(t.state.name == "COMPLETE" for t in trials) == 6
    assert not any(t.state.name == "RUNNING" for t in trials)
    for t in trials:   # the trial the kill interrupted was failed as stale and re-run with its parameters
        if t.state.name == "FAIL":
            retry = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
            # a kill during sampling leaves only the parameters drawn so far; the retry keeps those
            assert retry and retry[0].state.name == "COMPLETE"
            assert all(retry[0].params.get(k) == v for k, v in t.params.items())


def test_two_workers_share_one_study(tiny, tmp_path):
    run_dir = tmp_path / "run"
    args = _cli("search", str(tiny), "--trials", "10", "--run-dir", str(run_dir), "--proxy-size", "32",
                "--proxy-batch", "8", "--heartbeat", "1", "--no-progress")
    procs = [subprocess.Popen(args + ["--worker-index", str(i)], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    trials = _study(run_dir, "tiny-proxy").get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert 10 <= len(complete) <= 11          # a race on the last trial may add one
    assert len({t.user_attrs["worker"] for t in complete}) == 2   # both did work


def test_changed_budget_on_existing_study_is_refused(tiny, tmp_path, capsys):
    args = ["search", str(tiny), "--trials", "1", "--run-dir", str(tmp_path / "r"), "--proxy-size", "32",
            "--no-progress"]
    assert main(args) == 0
    assert main([*args, "--budget", "2M"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_space_yaml_text_and_range(tmp_path):
    space = load_space(TINY.replace("depths: [1, 2]", "depths: {low: 1, high: 3}"))
    import random

    data, drawn = space.sample_random(random.Random(0))
    assert all(1 <= d <= 3 for d in data["depths"])


def test_a_trial_killed_before_its_first_heartbeat_is_retried(tiny, tmp_path, capsys):
    """A worker killed between creating a trial and its first heartbeat leaves a RUNNING trial without a
    heartbeat row, which Optuna alone never sees as stale; the rerun must still finish (CI caught this)."""
    run_dir = tmp_path / "run"
    args = ["search", str(tiny), "--seed", "3", "--run-dir", str(run_dir), "--proxy-size", "32",
            "--proxy-batch", "8", "--heartbeat", "1", "--no-progress"]
    assert main([*args, "--trials", "2"]) == 0
    orphan = _study(run_dir, "tiny-proxy").ask()  # RUNNING, never beaten: what such a kill leaves behind
    assert main([*args, "--trials", "4"]) == 0
    trials = _study(run_dir, "tiny-proxy").get_trials()
    assert sum(t.state.name == "COMPLETE" for t in trials) == 4
    assert trials[orphan.number].state.name == "FAIL"
    assert not any(t.state.name == "RUNNING" for t in trials)
    capsys.readouterr()


def test_feasibility_check_estimate_is_the_full_plans():
    """The check's fast path (one validation, repeated blocks sharing one Part, memoized mixer configs) gives
    exactly the full Plan's figures, stage by stage, and the same errors, for samples of every shipped space."""
    import random

    from composer.plan import plan

    for path in sorted((REPO / "search").glob("*.yaml")):
        space = load_space(path)
        rng = random.Random(11)
        for _ in range(40):
            data, _ = space.sample_random(rng)
            check = space.check(data)
            if check.error is not None:
                with pytest.raises(SpecError) as exc:
                    plan(data)
                assert str(exc.value.problems[0]) == check.error
                continue
            full = plan(check.spec).estimate()
            assert (check.estimate.params, check.estimate.macs, check.estimate.fft_macs) == \
                (full.params, full.macs, full.fft_macs)
            assert [s.cost for s in check.estimate.stages] == [s.cost for s in full.stages]
            assert check.estimate.macs == composer.estimate(data).macs
    # sampling never alters the base the samples share values with
    space = load_space(TINY)
    before = yaml.safe_dump(space.base_data)
    for seed in range(5):
        space.sample_random(random.Random(seed))
    assert yaml.safe_dump(space.base_data) == before


def test_storage_urls_get_a_driver_and_hide_passwords():
    from composer.search.study import database_url, shown_url

    assert database_url("postgres://u:p@db:5432/search").endswith("://u:p@db:5432/search")
    assert database_url("postgresql+psycopg://u@db/s") == "postgresql+psycopg://u@db/s"   # a named driver is kept
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
    assert shown_url("postgresql://u:s3cr%40t@db:5432/search") == "postgresql://u:***@db:5432/search"
    assert shown_url("sqlite:////tmp/study.db") == "sqlite:////tmp/study.db"


def test_train_search_trains_at_the_data_size_not_the_spec_size(tmp_path):
    from composer.search.objectives import default_train_size, natural_size

    assert natural_size("digits") == 8
    assert default_train_size(8, 32, 224) == 32 and default_train_size(40, 32, 224) == 64
    assert default_train_size(8, 32, 16) == 16   # never above the spec's own input_size
    path = tmp_path / "digits64.yaml"
    path.write_text(TINY.replace("input_size: 32", "input_size: 64").replace("[16, 32, 32, 64]", "[8, 16, 16, 32]")
                    .replace("head_dim: 16", "head_dim: 8"))
    lines = []
    result = run(path, objective="train", epochs=1, trials=2, run_dir=str(tmp_path / "default"), progress=False,
                 log=lines.append)
    line = next(str(x) for x in lines if str(x).startswith("training at"))
    assert line.startswith("training at 32 px on cpu (digits: training on ") and "validating on " in line
    assert line.endswith("(the test split is not read); the budget is checked at the spec's 64 px)")
    built = [t for t in result.study.get_trials() if t.user_attrs.get("built")]
    assert built and all(t.user_attrs["train_size"] == 32 for t in built)
    assert all(t.user_attrs["macs"] == composer.estimate(dict(t.user_attrs["spec"])).macs for t in built)
    assert all(t.user_attrs["spec"]["input_size"] == 64 for t in built)   # the budget's size is what is recorded
    small = run(path, objective="train", epochs=1, trials=1, run_dir=str(tmp_path / "small"), progress=False,
                log=lambda *a: None, train_size=16)
    assert [t.user_attrs["train_size"] for t in small.study.get_trials() if t.user_attrs.get("built")] == [16]
    with pytest.raises(SpecError, match="--train-size must be between 1 and the spec's input_size 64, got 65"):
        run(path, objective="train", trials=1, run_dir=str(tmp_path / "big"), log=lambda *a: None, train_size=65)
