"""benchmarks/search_quality.py --quick runs end to end, and no stage before the final evaluation opens a file of
the test split (an audit hook records the stage of every open)."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import ROOT, write_idx_set


def _load():
    spec = importlib.util.spec_from_file_location("search_quality", ROOT / "benchmarks" / "search_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow   # 6 min on the loaded 2-core machine: python -m pytest -m slow tests/test_search_quality.py
def test_search_quality_quick_runs_and_only_the_test_stage_reads_the_test_split(tmp_path):
    module = _load()
    data = write_idx_set(tmp_path / "fm", n_train=400, n_test=60)
    opened: list[str] = []
    watching = [True]

    def hook(event, args):
        if watching[0] and event == "open" and args and "t10k" in str(args[0]):
            opened.append(module.STAGE)

    sys.addaudithook(hook)
    try:
        results = module.main(["--quick", "--data", f"fashion-mnist:{data}", "--results", str(tmp_path / "sq")])
    finally:
        watching[0] = False
    assert opened and set(opened) == {"test"}   # read, and only by the final evaluation
    out = json.loads((results / "results.json").read_text())
    methods = {row["method"] for row in out["methods"]}
    assert {"composer", "random-search", "random-arch", "ConvFormer-like", "EfficientFormer-like"} <= methods
    assert all(0 <= row["test_mean"] <= 1 for row in out["methods"])
    assert (results / "accuracy_vs_macs.png").stat().st_size > 1000
    assert "proxy-check" in (results / "results.md").read_text()
    # resumable: a second run reuses every cached stage and trains nothing
    before = sorted(p.name for p in (results / "final").iterdir())
    module.main(["--quick", "--data", f"fashion-mnist:{data}", "--results", str(tmp_path / "sq")])
    assert sorted(p.name for p in (results / "final").iterdir()) == before
    # --partial beside (or after) a run: reports what finished into results-partial.*, trains and times nothing
    module.main(["--quick", "--partial", "--data", f"fashion-mnist:{data}", "--results", str(tmp_path / "sq")])
    partial = json.loads((results / "results-partial.json").read_text())
    assert partial["partial"] and {r["method"] for r in partial["methods"]} == methods
    assert sorted(p.name for p in (results / "final").iterdir()) == before
    with pytest.raises(SystemExit, match="search composer-s0 has not finished"):
        module.main(["--quick", "--partial", "--data", f"fashion-mnist:{data}", "--results", str(tmp_path / "new")])
    # a follow-up variant reruns both searches with one change beside the first run, and trains only their picks
    # (--jobs 2: the picks train as two composer train processes)
    out = module.main(["--quick", "--variant", "feasible-trials", "--jobs", "2", "--data", f"fashion-mnist:{data}",
                       "--results", str(tmp_path / "sq")])
    assert out == results / "variants" / "feasible-trials"
    varied = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in varied["methods"]} == methods
    assert {p.name for p in (out / "final").iterdir() if p.is_dir()} == {"composer-s0-s0", "random-search-s0-s0"}
    assert json.loads((out / "protocol.json").read_text())["change"] == {"count_trials": "feasible"}
    assert sorted(p.name for p in (results / "final").iterdir()) == before   # the first run's are reused
    assert (out / "final" / "composer-s0-s0.log").read_text().count("done: composer-s0") == 1
    # a variant with a longer final training reuses another variant's searches and trains every architecture anew
    out = module.main(["--quick", "--variant", "long-final", "--jobs", "2", "--data", f"fashion-mnist:{data}",
                       "--results", str(tmp_path / "sq")])
    assert out == results / "variants" / "long-final" and not (out / "search").exists()
    assert {p.name for p in (results / "variants" / "mac-band" / "search").iterdir()} == {"composer-s0",
                                                                                          "random-search-s0"}
    finals = {p.name for p in (out / "final").iterdir() if p.is_dir()}
    assert finals == {f"{name}-s0" for name in ("composer-s0", "random-search-s0", "ConvFormer-like",
                                                "EfficientFormer-like", "random0")}
    bundle = json.loads((out / "results.json").read_text())["architectures"]["ConvFormer-like"]["runs"][0]["bundle"]
    assert bundle == str(out / "final" / "ConvFormer-like-s0")
    import yaml

    recorded = yaml.safe_load((out / "final" / "ConvFormer-like-s0" / "train.yaml").read_text())
    assert recorded["settings"]["recipe"]["epochs"] == 5
    for name in ("composer-s0", "random-search-s0"):   # the band: the picks lie within 8-10M MACs
        assert 8e6 <= json.loads((out / "results.json").read_text())["architectures"][name]["macs"] <= 10e6
    # a variant may take the hand layouts' and random architectures' final runs from another: only its picks train
    # (--search-jobs 2: its two searches run as two one-thread processes of the script)
    more = module.main(["--quick", "--variant", "many-trials", "--jobs", "2", "--search-jobs", "2", "--data",
                        f"fashion-mnist:{data}", "--results", str(tmp_path / "sq")])
    for tag in ("composer-s0", "random-search-s0"):
        assert (more / "search" / tag / "cost.json").is_file()
        assert f"search {tag}: pick" in (more / "search" / f"{tag}.log").read_text()
    assert {p.name for p in (more / "final").iterdir() if p.is_dir()} == {"composer-s0-s0", "random-search-s0-s0"}
    runs = json.loads((more / "results.json").read_text())["architectures"]
    assert runs["random0"]["runs"][0]["bundle"] == str(out / "final" / "random0-s0")
    assert "kendall_tau_earlier_final_vs_test" in json.loads((more / "results.json").read_text())
    long = json.loads((out / "results.json").read_text())   # the hand layouts' and random archs' one-epoch tests
    assert set(long["earlier_final_test"]) == {"ConvFormer-like", "EfficientFormer-like", "random0"}
    assert -1 <= long["kendall_tau_earlier_final_vs_test"] <= 1
    assert sorted(p.name for p in (results / "final").iterdir()) == before


def test_report_judges_the_goal_by_the_seeds_std_and_lists_every_architecture(tmp_path):
    module = _load()

    def arch(method, layout, search_val, tests, **mixers):
        spec = {"layout": layout, "depths": [1, 2, 3], "widths": [32, 64, 128], "mixers": mixers}
        return {"method": method, "spec": spec, "search_val": search_val, "params": 1e6, "macs": 9e6,
                "cpu_latency_ms": 1.0, "runs": [{"seed": i, "test": t} for i, t in enumerate(tests)]}

    archs = {"composer-s0": arch("composer", ["Conv", "Hpx", "gnConv"], 0.75, [0.90, 0.91],
                                 gnConv={"order": [2, 3, 4]}, Conv={"kernel_size": [5, 5, 3]}),
             "random-search-s0": arch("random-search", ["Pool", "A", "A"], 0.74, [0.89, 0.89]),
             "ConvFormer-like": arch("hand", ["Conv", "Conv", "Conv"], 0.73, [0.905, 0.905]),
             "EfficientFormer-like": arch("hand", [["Conv"], ["Conv", "Conv"], ["Conv", "A", "A"]], 0.72, [0.80, 0.80]),
             "random0": arch("random-arch", ["Pool", "Pool", "Pool"], 0.70, [0.85, 0.87])}
    text = module.report(tmp_path, archs, [], {}, [])
    verdict = {v["against"]: v for v in json.loads((tmp_path / "results.json").read_text())["verdict"]}
    # composer 0.905 ± 0.00707; random search 0.89 ± 0: +1.5 points > 0.71 -> won
    assert verdict["random-search"]["won"] and verdict["random-search"]["difference"] == pytest.approx(0.015)
    assert verdict["random-search"]["std"] == pytest.approx(0.00707107, rel=1e-5)
    # the best hand layout is ConvFormer-like at 0.905: a tie is not a win
    assert not verdict["ConvFormer-like"]["won"] and verdict["ConvFormer-like"]["difference"] == pytest.approx(0.0)
    assert verdict["random-arch"]["won"]
    assert "the best hand layout (ConvFormer-like): +0.00 points" in text
    assert "| composer-s0 | composer | Conv-Hpx-gnConv (orders 2-3-4) (k5-5-3) | 1-2-3 | 32-64-128 |" in text
    assert "| Conv-Conv-Conv+A×2 |" in text
    assert "| 90.00, 91.00 |" in text
    # a variant with another final schedule ranks each architecture's earlier test accuracy against this one's
    text = module.report(tmp_path, archs, [], {}, [], earlier={"composer-s0": 0.80, "random-search-s0": 0.81,
                                                                "ConvFormer-like": 0.79, "random0": 0.82})
    out = json.loads((tmp_path / "results.json").read_text())
    # this schedule's means: composer 0.905, random search 0.89, ConvFormer 0.905, random0 0.86: tau -2/6 (+ a tie)
    from scipy.stats import kendalltau

    assert out["kendall_tau_earlier_final_vs_test"] == pytest.approx(
        kendalltau([0.80, 0.81, 0.79, 0.82], [0.905, 0.89, 0.905, 0.86]).statistic)
    assert out["kendall_tau_earlier_final_vs_test"] < 0
    assert "earlier final schedule vs this one over 4 architectures" in text
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n\n" + "\n".join(module.MARKERS) + "\n\nafter\n")
    module.write_between_markers(doc, text)
    module.write_between_markers(doc, text)   # rewriting replaces, never appends
    assert doc.read_text() == f"# x\n\n{module.MARKERS[0]}\n{text}{module.MARKERS[1]}\n\nafter\n"
