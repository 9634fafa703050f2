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
    assert "caformer_s18" in out and "26.34M" in out
    assert "Conv     -> sep_conv" in out
    assert "kernel_size=7" in out and "head_dim=32" in out
    assert "metaformer" in out
