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


def test_list_shows_presets_symbols_and_parameters(run_cli):
    code, out, _ = run_cli("list")
    assert code == 0
    assert "caformer_s18" in out and "26.34M" in out
    assert "Conv     -> sep_conv" in out
    assert "kernel_size=7" in out and "head_dim=32" in out
    assert "metaformer" in out
