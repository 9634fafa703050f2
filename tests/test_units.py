import pytest

from composer.spec.units import format_count, parse_count


@pytest.mark.parametrize("text,value", [
    ("5GFLOPs", 5_000_000_000), ("4.1G", 4_100_000_000), ("30M", 30_000_000), ("30m", 30_000_000),
    ("1.5e9", 1_500_000_000), ("800K params", 800_000), ("5 GMACs", 5_000_000_000), (1200, 1200),
    (2.5e6, 2_500_000), ("0.25T", 250_000_000_000), ("12", 12),
])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("bad", ["5 GB", "G5", "", "five", "-3M", True, None, "4.1.2G"])
def test_parse_count_rejects(bad):
    with pytest.raises(ValueError):
        parse_count(bad)


def test_parse_count_message_shows_examples():
    with pytest.raises(ValueError, match="e.g. 5GFLOPs"):
        parse_count("5 GB")


def test_format_count():
    assert format_count(4_106_941_440) == "4.11G"
    assert format_count(26_341_656, digits=1) == "26.3M"
    assert format_count(512) == "512"


def test_every_table_shows_params_exact_gmacs_to_three_decimals_and_values_to_four_digits():
    from composer.spec.units import gmacs_cell, params_cell, value_cell

    assert params_cell(26_341_656) == "26,341,656" and params_cell(0) == "0"
    # one format down a column: never 4.34 beside 4.363, never 0G
    assert [gmacs_cell(m) for m in (4_340_000_000, 4_363_000_000, 0, 176_900_000)] == ["4.340", "4.363", "0.000",
                                                                                       "0.177"]
    assert gmacs_cell(183_000_000, sign=True) == "+0.183" and gmacs_cell(-5e8, sign=True) == "-0.500"
    assert [value_cell(v) for v in (218.0, 218.2, 0.9, 91.984)] == ["218.0", "218.2", "0.9000", "91.98"]
