"""A MAC floor (--min-macs, a space's budget: {min_macs}): a sample below it is as infeasible as one over the
budget (never built, never trained), the constraint Optuna sees says how far outside the band it lies, the floor is
part of the study's settings, and bad floors exit 2 with a located message."""

import pytest

import composer
from composer.search import load_space, run
from composer.search.proxy_check import draw_samples
from composer.spec import SpecError

from conftest import TINY_SPACE

FLOOR, BUDGET = 1_000_000, 1_200_000   # about a third of the tiny space's samples lie in this band


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


def test_samples_outside_the_band_are_never_built_and_feasible_trials_fill_it(tiny, tmp_path, built_macs):
    built = built_macs
    result = run(str(tiny), budget=str(BUDGET), min_macs="1M", trials=4, count_trials="feasible", seed=3,
                 run_dir=str(tmp_path / "run"), proxy_size=32, proxy_batch=8, progress=False, log=lambda *a: None)
    trials = result.study.get_trials()
    feasible = [t for t in trials if t.user_attrs["feasible"]]
    below = [t for t in trials if t.user_attrs["macs"] < FLOOR]
    assert len(feasible) == 4 and below, [t.user_attrs["macs"] for t in trials]
    assert built and all(FLOOR <= m <= BUDGET for m in built)
    assert len(built) == result.counters.built and result.counters.over_budget_built == 0
    for t in trials:
        macs = t.user_attrs["macs"]
        assert t.user_attrs["feasible"] == (FLOOR <= macs <= BUDGET)
        # one MAC constraint: how far outside the band (<= 0 inside it)
        assert dict(t.constraints)["macs"] == pytest.approx(max(macs / BUDGET - 1, 1 - macs / FLOOR))
        if not t.user_attrs["feasible"]:
            assert "built" not in t.user_attrs and "naswot" not in t.user_attrs
    assert result.study.user_attrs["settings"]["budget_min_macs"] == FLOOR
    assert FLOOR <= composer.estimate(str(result.best_specs[0])).macs <= BUDGET
    assert "budget 1.00M-1.20M MACs" in result.best_specs[0].read_text().splitlines()[0]


def test_a_study_continues_only_with_the_same_floor(tiny, tmp_path):
    kwargs = dict(budget=str(BUDGET), trials=2, objective="macs", run_dir=str(tmp_path / "run"), progress=False,
                  log=lambda *a: None)
    run(str(tiny), min_macs="1M", **kwargs)
    with pytest.raises(SpecError, match=r"budget_min_macs: 1000000 then, 900000 now"):
        run(str(tiny), min_macs="0.9M", trials=3, **{k: v for k, v in kwargs.items() if k != "trials"})
    # a study without a floor records none: studies from before --min-macs continue unchanged
    plain = run(str(tiny), budget=str(BUDGET), trials=1, objective="macs", run_dir=str(tmp_path / "plain"),
                progress=False, log=lambda *a: None)
    assert "budget_min_macs" not in plain.study.user_attrs["settings"]


def test_a_space_carries_its_floor_and_the_log_shows_the_band(tmp_path):
    path = tmp_path / "band.yaml"
    path.write_text(TINY_SPACE.replace("budget: {macs: 10M}", "budget: {macs: 1.2M, min_macs: 1M}"))
    space = load_space(str(path))
    assert (space.budget_min_macs, space.budget_macs) == (FLOOR, BUDGET)
    lines = []
    result = run(str(path), trials=3, objective="macs", count_trials="feasible", run_dir=str(tmp_path / "run"),
                 progress=False, log=lines.append)
    assert any("budget 1.00M-1.20M MACs" in line for line in lines), lines
    assert any("outside the budget" in line for line in lines), lines
    assert all(FLOOR <= t.user_attrs["macs"] <= BUDGET for t in result.study.get_trials()
               if t.user_attrs["feasible"])
    # --budget moved below the space's floor: refused, naming both
    with pytest.raises(SpecError, match=r"--budget 900K under the space's min_macs: the MAC floor 1.00M"):
        run(str(path), budget="900K", trials=1, objective="macs", run_dir=str(tmp_path / "r2"), progress=False,
            log=lambda *a: None)


@pytest.mark.parametrize("budget, message", [
    ("{macs: 1M, min_macs: 1M}", r"band.yaml:\d+: budget.min_macs: the MAC floor 1.00M \(1,000,000\) is not below "
                                 r"the MAC budget 1.00M"),
    ("{macs: 1M, min_macs: 0}", r"band.yaml:\d+: budget.min_macs: a MAC floor must be at least 1, got 0"),
    ("{macs: 1M, min_macs: lots}", r"band.yaml:\d+: budget.min_macs: cannot read 'lots' as a count"),
    ("{macs: 1M, min_mac: 1K}", r"band.yaml:\d+: budget.min_mac: unknown budget 'min_mac'; did you mean 'min_macs'"),
])
def test_bad_floors_in_a_space_are_located(tmp_path, budget, message):
    path = tmp_path / "band.yaml"
    path.write_text(TINY_SPACE.replace("budget: {macs: 10M}", f"budget: {budget}"))
    with pytest.raises(SpecError, match=message):
        load_space(str(path))


@pytest.mark.parametrize("flag, message", [
    ("12M", "error: --min-macs: the MAC floor 12.00M (12,000,000) is not below the MAC budget 10.00M (10,000,000): "
            "no model would fit"),
    ("0", "error: --min-macs: a MAC floor must be at least 1, got '0'"),
    ("abc", "error: --min-macs: cannot read 'abc' as a count"),
])
def test_bad_min_macs_flag_exits_2_with_one_line(run_cli, tiny, tmp_path, flag, message):
    code, out, err = run_cli("search", str(tiny), "--objective", "macs", "--min-macs", flag, "--trials", "1",
                             "--run-dir", str(tmp_path / "run"), "--no-progress")
    assert code == 2
    assert err.strip().startswith(message) and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_proxy_check_draws_within_the_band(tiny):
    space = load_space(str(tiny))
    samples = draw_samples(space, 6, 0, BUDGET, None, FLOOR)
    assert len(samples) == 6
    assert all(FLOOR <= space.check(data).estimate.macs <= BUDGET for data, _ in samples)
    unbounded = draw_samples(space, 20, 0, BUDGET, None)
    assert any(space.check(data).estimate.macs < FLOOR for data, _ in unbounded)


def test_sweep_marks_the_points_under_a_spaces_floor(tmp_path):
    from composer.search.sweep import sweep

    path = tmp_path / "three.yaml"   # 941,696 / 990,976 / 991,872 MACs
    path.write_text(TINY_SPACE.split("choices:")[0] + "choices:\n  depths: {whole: [[1, 1, 1, 1], [1, 1, 1, 2], "
                    "[1, 1, 2, 1]]}\nbudget: {macs: 10M, min_macs: 950K}\n")
    _, rows = sweep(str(path), run_dir=str(tmp_path / "sweep"), progress=False, log=lambda *a: None)
    states = {row["macs"]: row["state"] for row in rows}
    assert states == {941_696: "under the MAC floor", 990_976: "COMPLETE", 991_872: "COMPLETE"}
    assert "under the MAC floor" in (tmp_path / "sweep" / "table.md").read_text()
