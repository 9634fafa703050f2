"""Broken specs end in exit code 2 with a message naming file:line, the field, what was given and what
is allowed; never a traceback."""

import subprocess
import sys

import pytest

BASE = """name: t
widths: [64, 128, 320, 512]
depths: [3, 3, 9, 3]
layout: Conv-Conv-A-A
"""

# (spec text, expected fragments of the message). Line numbers count from 1 in the written file.
CASES = {
    "misspelt symbol": (BASE.replace("Conv-Conv-A-A", "Conv-Conv-Atn-A"),
                        ["spec.yaml:4:", "layout:", "stage 2", "'Atn'", "did you mean 'Attn'"]),
    "misspelt symbol in per-block list": (
        BASE.replace("Conv-Conv-A-A", "[Conv, Conv, [A, A, A, Mm, A, A, A, A, A], A]"),
        ["spec.yaml:4:", "layout[2][3]", "'Mm'", "did you mean 'M'"]),
    "unknown field": (BASE + "chanel_mixer: {type: mlp}\n",
                      ["spec.yaml:5:", "chanel_mixer", "did you mean 'channel_mixer'", "allowed:"]),
    "unknown mixer parameter": (BASE + "mixers:\n  Conv:\n    kernal_size: 5\n",
                                ["spec.yaml:7:", "mixers.Conv.kernal_size", "did you mean 'kernel_size'",
                                 "allowed:", "expansion_ratio"]),
    "depths and widths disagree": (BASE.replace("[3, 3, 9, 3]", "[3, 3, 9]"),
                                   ["spec.yaml:3:", "depths", "3 stages", "widths has 4"]),
    "layout has too few stages": (BASE.replace("Conv-Conv-A-A", "Conv-Conv-A"),
                                  ["spec.yaml:4:", "layout", "3 stages", "one entry per stage"]),
    "per-block list of wrong length": (BASE.replace("Conv-Conv-A-A", "[Conv, Conv, [A, M], A]"),
                                       ["spec.yaml:4:", "layout[2]", "2 mixers", "depths[2] is 9"]),
    "width not divisible by head_dim": (BASE.replace("320", "300"),
                                        ["spec.yaml:2:", "widths[2]", "300", "head_dim 32"]),
    "per-stage list of wrong length": (BASE + "mixers:\n  Conv: {kernel_size: [3, 5, 7]}\n",
                                       ["spec.yaml:6:", "mixers.Conv.kernel_size", "3 per-stage values",
                                        "4 stages"]),
    "non-positive width": (BASE.replace("128", "-128"), ["spec.yaml:2:", "widths[1]", "greater than 0", "-128"]),
    "zero depth": (BASE.replace("[3, 3, 9, 3]", "[3, 0, 9, 3]"), ["spec.yaml:3:", "depths[1]", "greater than 0",
                                                                   "macro metaformer", "only macro lowformer"]),
    "downsample_ratio outside lowformer": (BASE + "downsample_ratio: 6\n",
                                           ["spec.yaml:5:", "downsample_ratio", "plain conv", "remove"]),
    "efficientvit head without widths": (BASE + "head: {type: efficientvit}\n",
                                         ["spec.yaml:5:", "head", "needs widths", "[1536, 1600]"]),
    "lowtention with an even kernel": (
        "macro: lowformer\nwidths: [8, 16]\ndepths: [0, 1]\nlayout: FMB-Low\nmixers:\n  Low: {kernel_size: 4}\n",
        ["spec.yaml:6:", "mixers.Low.kernel_size", "stage 1", "must be odd", "got 4"]),
    "non-positive input size": (BASE + "input_size: 0\n", ["spec.yaml:5:", "input_size", "greater than 0", "got 0"]),
    "non-positive kernel in one stage": (BASE + "mixers:\n  Conv: {kernel_size: [3, 5, -7, 9]}\n",
                                         ["spec.yaml:6:", "mixers.Conv.kernel_size", "stage 2", "got -7"]),
    "even kernel": (BASE + "mixers:\n  Conv: {kernel_size: 4}\n",
                    ["spec.yaml:6:", "mixers.Conv.kernel_size", "must be odd", "got 4"]),
    "YAML syntax error": ("name: t\nwidths: [64, 128, 320, 512\ndepths: [3, 3, 9, 3]\n",
                          ["spec.yaml:3:", "YAML syntax error", "began on line 2"]),
    "not a mapping": ("- 1\n- 2\n", ["spec.yaml", "must be a mapping"]),
    "empty file": ("", ["spec.yaml", "must be a mapping", "empty"]),
    "unknown macro": (BASE + "macro: metafromer\n", ["spec.yaml:5:", "macro", "did you mean 'metaformer'"]),
    "unknown norm shorthand": (BASE + "norm: layernorm_nobais\n",
                               ["spec.yaml:5:", "norm", "layernorm_nobias", "allowed"]),
    "unknown mixer type": (BASE + "mixers:\n  MyConv: {type: sep_cnv}\n",
                           ["spec.yaml:6:", "mixers.MyConv", "did you mean 'sep_conv'", "allowed types"]),
    "unknown symbol under mixers": (BASE + "mixers:\n  Hpxx: {kernel_size: 3}\n",
                                    ["spec.yaml:6:", "mixers.Hpxx", "unknown mixer symbol", "with a type"]),
    "wrong type of value": (BASE + "drop_path_rate: lots\n", ["spec.yaml:5:", "drop_path_rate", "'lots'"]),
    "drop path out of range": (BASE + "drop_path_rate: 1.5\n", ["spec.yaml:5:", "drop_path_rate", "less than 1"]),
    "duplicate key": (BASE + "widths: [1, 2, 3, 4]\n", ["spec.yaml:5:", "duplicate key 'widths'", "line 2"]),
    "missing layout": ("name: t\nwidths: [64]\ndepths: [2]\n", ["layout", "missing"]),
    "bad head type": (BASE + "head: {type: mpl}\n", ["spec.yaml:5:", "head.type", "did you mean 'mlp'"]),
    "unknown preset in extends": ("extends: cafromer_s18\n",
                                  ["spec.yaml:1:", "extends", "did you mean 'caformer_s18'"]),
    "layout of the wrong type": (BASE.replace("Conv-Conv-A-A", "5"),
                                 ["spec.yaml:4: layout: input should be a valid string or a valid list, got 5"]),
    "symbol of the wrong type": (BASE.replace("Conv-Conv-A-A", "[Conv, Conv, 7, A]"),
                                 ["spec.yaml:4: layout[2]:", "got 7"]),
    "empty symbol": (BASE.replace("Conv-Conv-A-A", "Conv--A-A"), ["spec.yaml:4: layout: stage 1:", "got ''"]),
    "extends a missing file": ("extends: ./nowhere.yaml\n", ["spec.yaml:1:", "extends", "no such spec file"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_spec_message(case, run_cli, write_spec, monkeypatch):
    text, fragments = CASES[case]
    path = write_spec(text)
    monkeypatch.chdir(path.parent)
    code, out, err = run_cli("validate", path.name)
    assert code == 2, (case, out, err)
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{case}: {fragment!r} not in {err!r}"


def test_a_union_mismatch_is_reported_once(run_cli, write_spec, monkeypatch):
    path = write_spec(BASE.replace("Conv-Conv-A-A", "[Conv, Conv, 7, A]"))
    monkeypatch.chdir(path.parent)
    _, _, err = run_cli("validate", path.name)
    assert err.count("\n") == 1, err  # one line: the list item, not also "layout should be a string"


@pytest.mark.parametrize("command", ["validate", "build"])
def test_a_stage_count_mismatch_names_every_field_at_its_line_each_an_error(command, run_cli, write_spec,
                                                                              monkeypatch):
    # the user edited widths (line 2) down to three stages: depths (3) and layout (4) still have four
    path = write_spec(BASE.replace("[64, 128, 320, 512]", "[64, 128, 320]"))
    monkeypatch.chdir(path.parent)
    code, out, err = run_cli(command, path.name)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "error: spec.yaml:2: widths: has 3 stages but depths has 4 and layout has 4; widths, depths and layout need "
        "one entry per stage",
        "error: spec.yaml:3: depths: has 4 stages but widths has 3 and layout has 4; widths, depths and layout need "
        "one entry per stage",
        "error: spec.yaml:4: layout: has 4 stages but widths has 3 and depths has 4; widths, depths and layout need "
        "one entry per stage"]


def test_build_validates_before_it_imports_torch(write_spec):
    # a fresh interpreter: a bad spec is refused as fast as `composer validate` refuses it
    path = write_spec(BASE.replace("[64, 128, 320, 512]", "[64, 128, 320]"))
    code = ("import sys\nfrom composer.cli import main\n"
            f"rc = main(['build', {str(path)!r}])\nprint(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False"], out.stderr
    assert out.stderr.count("error: ") == 3


def test_there_are_at_least_fifteen_distinct_broken_specs():
    assert len(CASES) >= 15


def test_extends_cycle(run_cli, write_spec, monkeypatch):
    a = write_spec("extends: b.yaml\nname: a\n", "a.yaml")
    write_spec("extends: a.yaml\n", "b.yaml")
    monkeypatch.chdir(a.parent)
    code, _, err = run_cli("build", "a.yaml")
    assert code == 2
    assert "extends cycle" in err and "a -> b -> a" in err


def test_errors_in_a_parent_point_at_the_parent_file(run_cli, write_spec, monkeypatch):
    parent = write_spec(BASE.replace("320", "300"), "parent.yaml")
    write_spec("extends: parent.yaml\nname: child\ndrop_path_rate: 0.1\n", "child.yaml")
    monkeypatch.chdir(parent.parent)
    code, _, err = run_cli("validate", "child.yaml")
    assert code == 2 and "parent.yaml:2: widths[2]" in err


def test_missing_file_and_unknown_preset(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("build", "nofile.yaml")
    assert code == 2 and "no such file: nofile.yaml" in err
    code, _, err = run_cli("build", "cafromer_s18")
    assert code == 2 and "did you mean 'caformer_s18'" in err


def test_console_script_exits_2_without_traceback(write_spec):
    path = write_spec(BASE.replace("Conv-Conv-A-A", "Conv-Conv-Atn-A"))
    proc = subprocess.run([sys.executable, "-m", "composer.cli", "build", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "did you mean 'Attn'" in proc.stderr


def test_python_api_raises_spec_error_with_location(write_spec):
    import composer

    path = write_spec(BASE.replace("320", "300"))
    with pytest.raises(composer.SpecError) as info:
        composer.compose(path)
    problem = info.value.problems[0]
    assert problem.line == 2 and problem.path == ("widths", 2)


def test_per_stage_channel_mixer_values_are_checked_in_every_macro(run_cli, write_spec, monkeypatch):
    path = write_spec("extends: caformer_s18\nchannel_mixer: {type: conv_glu, ratio: [8, 8, 4]}\n")
    monkeypatch.chdir(path.parent)
    code, _, err = run_cli("validate", path.name)
    assert code == 2 and "spec.yaml:2: channel_mixer.ratio: has 3 per-stage values" in err
    path.write_text("extends: caformer_s18\nchannel_mixer: {type: conv_glu, ratio: [8, 8, 4, 4]}\n")
    code, out, err = run_cli("validate", path.name)
    assert code == 0, err  # another type does not inherit the macro default's MLP fields
