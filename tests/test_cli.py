import subprocess
import sys

import pytest

from conftest import SPECS


def test_build_prints_the_stage_table(run_cli):
    code, out, _ = run_cli("build", SPECS / "caformer_s18.yaml", "--count")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("caformer_s18") and "224x224" in lines[0]
    assert any(line.split()[:5] == ["2", "A", "9", "320", "14x14"] for line in lines)
    assert any(line.split()[:5] == ["0", "Conv", "3", "64", "56x56"] for line in lines)
    total = next(line for line in lines if line.startswith("total")).split()
    assert total[-2:] == ["26,341,656", "4.107"]
    assert "26,341,656 parameters (matches the plan)" in out
    assert "+0.0000% vs plan" in out


def test_validate_several(run_cli):
    code, out, _ = run_cli("validate", SPECS / "convformer_s18.yaml", SPECS / "poolformerv2_s12.yaml")
    assert code == 0 and out.count("ok ") == 2 and "11,891,712 params" in out


def test_validate_reports_every_invalid_file(run_cli, write_spec):
    bad1 = write_spec("widths: [1]\n", "bad1.yaml")
    bad2 = write_spec("layout: Foo\n", "bad2.yaml")
    code, out, err = run_cli("validate", bad1, SPECS / "convformer_s18.yaml", bad2)
    assert code == 2
    assert "ok " in out and "convformer_s18" in out  # the valid file between them is still checked
    assert "bad1.yaml: depths: required field 'depths' is missing" in err
    assert "bad2.yaml: widths: required field 'widths' is missing" in err
    assert "2 of 3 specs invalid" in err and "Traceback" not in err


def test_list_shows_presets_symbols_and_parameters(run_cli):
    code, out, _ = run_cli("list")
    assert code == 0
    assert "caformer_s18" in out and "26,341,656 params    4.107 GMACs" in out
    assert "Conv     -> sep_conv" in out
    assert "kernel_size=7" in out and "head_dim=32" in out
    assert "metaformer" in out


def test_list_shows_the_search_spaces_one_line_each(run_cli):
    code, out, _ = run_cli("list")
    assert code == 0
    spaces = out[out.index("search spaces"):].splitlines()[1:]
    assert [line.split()[0] for line in spaces] == ["hornet_orders", "hyenapixel_stages", "metaformer_s18",
                                                   "small_images", "transnext_micro", "transnext_table9"]
    assert "base caformer_s18, budget 5.00G MACs" in spaces[2] and "default of `composer search`" in spaces[2]


def test_list_columns_are_as_wide_as_the_longest_name(run_cli):
    _, out, _ = run_cli("list")
    presets = out[:out.index("\n\n")].splitlines()[1:]
    longest = max(len(line.split()[0]) for line in presets)
    assert longest == len("ensemble_hpx_hb_conv_ca_s18")
    # every preset's figures start in one column, however long its name
    assert len({line.index(line.split()[1]) + len(line.split()[1]) for line in presets}) == 1, presets


def test_version(run_cli, capsys):
    import composer
    from composer.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"composer {composer.__version__} (the composer-vision distribution)"


HEAVY = ("torch", "timm", "torchvision", "networkx", "matplotlib", "optuna")  # numpy is light (TransNeXt tables)


@pytest.mark.parametrize("argv", [["validate", "caformer_s18", "transnext_micro", "ensemble_hpx_conv_s18"],
                                  ["list"], ["schema"], ["--help"]])
def test_light_commands_import_no_torch_timm_networkx_matplotlib_optuna(argv):
    # a fresh interpreter: this test process has imported everything already
    code = ("import sys\nfrom composer.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            f"print(rc, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "0 []"


def test_import_composer_is_torch_free_and_registers_timm_models_when_timm_comes():
    code = ("import sys, composer\n"
            "e = composer.estimate('hpxformer_s18')\n"
            f"assert not [m for m in {HEAVY!r} if m in sys.modules], sys.modules.keys()\n"
            "import timm\n"
            "names = timm.list_models('composer_*')\n"
            "m = composer.compose('hpxformer_s18')\n"
            "print(len(names), e.params == sum(p.numel() for p in m.parameters()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    presets_and_generic = str(len(list(SPECS.glob("*.yaml"))) + 1)   # every preset, and composer_spec
    assert out.stdout.split() == [presets_and_generic, "True"]
    # and in the other order: timm first, then composer
    other = subprocess.run([sys.executable, "-c", "import timm, composer; print(len(timm.list_models('composer_*')))"],
                           capture_output=True, text=True, timeout=300)
    assert other.stdout.split() == [presets_and_generic], other.stderr


def test_spec_path_that_is_a_preset_name_suggests_the_name(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("build", "specs/chpxformer.yaml")
    assert code == 2
    assert "no such file: specs/chpxformer.yaml; 'chpxformer' ships with composer" in err
    assert "`composer build chpxformer`" in err


def test_unknown_preset_lists_the_folders_searched(run_cli, tmp_path, monkeypatch):
    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "tiny_mine.yaml").write_text("extends: caformer_s18\ndepths: [1, 1, 1, 1]\n")
    monkeypatch.setenv("COMPOSER_SPECS_PATH", str(extra))
    code, out, _ = run_cli("validate", "tiny_mine")
    assert code == 0 and "ok  tiny_mine" in out
    code, _, err = run_cli("validate", "tiny_mime")
    assert code == 2 and "did you mean 'tiny_mine'?" in err
    assert f"folders searched: {extra}, {SPECS}" in err
