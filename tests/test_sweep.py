"""``composer sweep``: every point of a space once (conditional choices stay conditional), resumable, nothing
built for a cost-only table; whole-layout choices; TransNeXt's Table 9 reproduced from search/transnext_table9.yaml."""

from __future__ import annotations

import csv

import pytest

import composer
from composer.search import load_space
from composer.search.sweep import grid

from conftest import ROOT, TINY_SPACE


def test_the_grid_varies_a_mixer_parameter_only_where_its_mixer_is_used():
    space = load_space(TINY_SPACE)
    points = grid(space)
    # layout: 3 x 3 x 3 x 3 combinations; depths 2^4; Conv's kernel (2 options) per stage that has Conv, gnConv's
    # order per stage that has gnConv: count the points by hand
    expected = 0
    from itertools import product

    for layout in product(["Conv", "gnConv", "Pool"], ["Conv", "gnConv", "Pool"], ["Conv", "A", "M"],
                          ["Conv", "A", "M"]):
        expected += 2 ** 4 * 2 ** sum(s == "Conv" for s in layout) * 2 ** sum(s == "gnConv" for s in layout)
    assert len(points) == expected
    assert len({tuple(sorted(p.items())) for p in points}) == expected
    assert all(("mixers.Conv.kernel_size[0]" in p) == (p["layout[0]"] == "Conv") for p in points)


def test_transnext_table9(tmp_path, capsys):
    from composer.cli import main

    run_dir = tmp_path / "t9"
    assert main(["sweep", "transnext_table9", "--run-dir", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sweep transnext_table9: 4 points (layout)" in out
    rows = list(csv.DictReader((run_dir / "table.csv").open()))
    assert [r["layout"] for r in rows] == ["A-A-A-M", "A-A-M-M", "A-M-M-M", "M-M-M-M"]
    assert [int(r["params"]) for r in rows] == [12_809_304, 12_219_624, 12_198_744, 12_192_912]
    for row, preset in zip(rows, ["transnext_micro", "transnext_micro_aamm", "transnext_micro_ammm",
                                  "transnext_micro_mmmm"]):
        assert int(row["macs"]) == composer.estimate(preset).macs
    table = (run_dir / "table.md").read_text()
    assert "| A-A-M-M | 12,219,624 |" in table
    # nothing was built, and a rerun finds every point done
    assert "0 models built" in out or "models built" not in out
    assert main(["sweep", "transnext_table9", "--run-dir", str(run_dir), "--no-progress"]) == 0
    import optuna

    study = optuna.load_study(study_name="transnext_table9-sweep", storage=f"sqlite:///{run_dir / 'study.db'}")
    assert len(study.trials) == 4 and not any(t.user_attrs.get("built") for t in study.trials)


def test_whole_layout_options_are_checked_where_written(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("base: transnext_micro\nchoices:\n  layout: [A-A-A-M, A-A-M]\n")
    with pytest.raises(composer.SpecError, match=r"space.yaml:3: choices.layout\[1\]: layout 'A-A-M': has 3 stages"):
        load_space(path)


def test_the_shipped_table9_space_is_listed():
    assert (ROOT / "search" / "transnext_table9.yaml").is_file()
    space = load_space("transnext_table9")
    assert [c.key for c in space.choices] == ["layout"] and space.choices[0].whole_layouts
